"""Quiet hours on real processes: a marketing send held by the engine is woken by the real
`clock` when the window ends and sent by `qcluster` to a real SMTP server."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from contacts_app.models import Contact
from templates_app.models import Message, Template
from workflows_app.engine import HOLD_PREFIX, execution_start_manual
from workflows_app.models import Execution, StepRun
from workflows_app.services import workflow_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_send_held_for_quiet_hours_goes_out_when_they_end(make_stack, smtp):
    # Quiet hours are written in minutes: a window ending at the next minute, with at least
    # 20 s of it left when the run reaches the step.
    if datetime.now(UTC).second > 40:
        time.sleep(61 - datetime.now(UTC).second)
    now = datetime.now(UTC)
    end = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    window = f"{(now - timedelta(hours=1)):%H:%M}-{end:%H:%M}"
    stack = make_stack(QUIET_HOURS=window, DEFAULT_TIMEZONE="UTC")

    Template.objects.create(name="News", subject="News", html="<p>News</p>")
    Template.objects.create(
        name="Receipt", type=Template.TRANSACTIONAL, subject="Receipt", html="<p>Thanks</p>"
    )
    steps = [
        {"key": "receipt", "type": "send_email", "config": {"template": "Receipt"}},
        {"key": "news", "type": "send_email", "config": {"template": "News"}},
        {"key": "tag", "type": "update_contact", "config": {"set": {"done": True}}},
    ]
    workflow = workflow_create(
        name="Night",
        trigger_type="manual",
        enabled=True,
        graph={
            "steps": steps,
            "transitions": [
                {"from": "trigger", "to": "receipt"},
                {"from": "receipt", "to": "news"},
                {"from": "news", "to": "tag"},
            ],
        },
    )
    contact = Contact.objects.create(email="ann@example.com")
    run = execution_start_manual(
        workflow=workflow, contact=contact, context={}, now=datetime.now(UTC)
    )
    stack.start_clock()
    stack.start_worker()

    def held():
        run.refresh_from_db()
        return run.status == Execution.WAITING and run.pending_branch.startswith(HOLD_PREFIX)

    stack.wait_until(held, timeout=15, what="the news to be held for quiet hours")
    assert run.wake_at == end
    assert smtp.subjects_for("ann@example.com") == ["Receipt"]  # transactional: not held

    stack.wait_until(
        lambda: Execution.objects.filter(pk=run.pk, status=Execution.COMPLETED).exists(),
        timeout=90,
        what="the held send to go out once quiet hours ended",
    )
    assert smtp.subjects_for("ann@example.com") == ["Receipt", "News"]
    news = Message.objects.get(subject="News")
    assert news.sent_at >= end
    visit = StepRun.objects.get(execution=run, step_key="news")
    assert (visit.status, visit.attempts, visit.message_id) == (StepRun.COMPLETED, 1, news.pk)
    assert visit.output["held_until"] == end.isoformat()
