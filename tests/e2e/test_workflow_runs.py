"""A multi-step workflow with delays and a wait for an event, run by real processes: events
tracked over HTTP (gunicorn), timers fired by `manage.py clock`, steps run by `qcluster`,
emails delivered to a real SMTP server."""

from datetime import timedelta

import pytest

from contacts_app.models import Contact
from templates_app.models import Message, Template
from workflows_app.models import Execution, StepRun
from workflows_app.services import workflow_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DELAY = 2  # seconds
TIMEOUT = 4  # seconds: room for the HTTP round trip of ann's event on a busy machine


def onboarding():
    for name in ("Welcome", "Thanks", "Nudge"):
        Template.objects.create(
            name=name,
            type=Template.TRANSACTIONAL,
            subject=name,
            html=f"<p>{name} {{{{ email }}}}</p>",
        )
    steps = [
        {"key": "welcome", "type": "send_email", "config": {"template": "Welcome"}},
        {"key": "pause", "type": "delay", "config": {"amount": DELAY, "unit": "seconds"}},
        {
            "key": "activated",
            "type": "wait_for_event",
            "config": {
                "event": "user.activated",
                "timeout": {"amount": TIMEOUT, "unit": "seconds"},
            },
        },
        {"key": "tag", "type": "update_contact", "config": {"set": {"stage": "active"}}},
        {"key": "thanks", "type": "send_email", "config": {"template": "Thanks"}},
        {"key": "done", "type": "exit", "config": {"reason": "activated"}},
        {
            "key": "is_pro",
            "type": "condition",
            "config": {"field": "contact.plan", "operator": "equals", "value": "pro"},
        },
        {"key": "nudge", "type": "send_email", "config": {"template": "Nudge"}},
    ]
    transitions = [
        {"from": "trigger", "to": "welcome"},
        {"from": "welcome", "to": "pause"},
        {"from": "pause", "to": "activated"},
        {"from": "activated", "branch": "event", "to": "tag"},
        {"from": "tag", "to": "thanks"},
        {"from": "thanks", "to": "done"},
        {"from": "activated", "branch": "timeout", "to": "is_pro"},
        {"from": "is_pro", "branch": "yes", "to": "nudge"},
    ]
    return workflow_create(
        name="Onboarding",
        trigger_event="user.signup",
        enabled=True,
        graph={"steps": steps, "transitions": transitions},
    )


def execution_of(email):
    return Execution.objects.select_related("current_step").get(contact__email=email)


def history(email):
    return [
        (r.step_key, r.status, r.branch)
        for r in StepRun.objects.filter(execution__contact__email=email).order_by("id")
    ]


def runs(email):
    return {r.step_key: r for r in StepRun.objects.filter(execution__contact__email=email)}


def test_it_runs_delays_and_a_wait_and_takes_the_right_branch(make_stack, api_key, smtp):
    onboarding()
    stack = make_stack()
    stack.start_web()
    stack.start_worker()
    stack.start_clock()

    # ann does the awaited event while the wait is on; bob never does; cat does it too early
    # (during the delay, before the wait began), which must not count.
    for email, plan in (
        ("ann@example.com", "pro"),
        ("bob@example.com", "pro"),
        ("cat@example.com", "free"),
    ):
        stack.track(api_key, "user.signup", email, {"plan": plan})

    def at(email, key, status):
        ex = execution_of(email)
        return ex.status == status and ex.current_step is not None and ex.current_step.key == key

    stack.wait_until(
        lambda: at("cat@example.com", "pause", "WAITING"),
        timeout=15,
        what="cat waiting at the delay",
    )
    stack.track(api_key, "user.activated", "cat@example.com", {"early": True})

    stack.wait_until(
        lambda: at("ann@example.com", "activated", "WAITING"),
        timeout=15,
        what="ann waiting for user.activated",
    )
    stack.track(api_key, "user.activated", "ann@example.com", {"via": "app"})

    def finished():
        return not Execution.objects.filter(status__in=Execution.ACTIVE).exists()

    stack.wait_until(finished, timeout=20, what="all three runs to finish")

    ann, bob, cat = (
        execution_of(e) for e in ("ann@example.com", "bob@example.com", "cat@example.com")
    )
    assert (ann.status, ann.exit_reason, ann.error) == ("EXITED", "activated", "")
    assert history("ann@example.com") == [
        ("welcome", "completed", "next"),
        ("pause", "completed", "next"),
        ("activated", "completed", "event"),
        ("tag", "completed", "next"),
        ("thanks", "completed", "next"),
        ("done", "completed", ""),
    ]
    assert ann.context["user.activated"] == {"via": "app"}
    assert Contact.objects.get(email="ann@example.com").data["stage"] == "active"

    assert (bob.status, bob.error) == ("COMPLETED", "")
    assert history("bob@example.com") == [
        ("welcome", "completed", "next"),
        ("pause", "completed", "next"),
        ("activated", "completed", "timeout"),
        ("is_pro", "completed", "yes"),
        ("nudge", "completed", "next"),
    ]
    assert (cat.status, cat.error) == ("COMPLETED", "")
    assert history("cat@example.com") == [
        ("welcome", "completed", "next"),
        ("pause", "completed", "next"),
        ("activated", "completed", "timeout"),
        ("is_pro", "completed", "no"),
    ]
    assert "user.activated" not in cat.context
    assert "stage" not in Contact.objects.get(email="cat@example.com").data

    # Timers elapse on time to the second (not on django-q2's 30 s scheduler tick), never early.
    for email in ("ann@example.com", "bob@example.com", "cat@example.com"):
        r = runs(email)
        waited = r["activated"].started_at - r["pause"].started_at
        assert timedelta(seconds=DELAY) <= waited < timedelta(seconds=DELAY + 2.5), (email, waited)
    for email in ("bob@example.com", "cat@example.com"):
        r = runs(email)
        waited = r["is_pro"].started_at - r["activated"].started_at
        assert timedelta(seconds=TIMEOUT) <= waited < timedelta(seconds=TIMEOUT + 2.5), waited

    # Exactly the emails of the branches taken, each once, through the real SMTP server.
    assert sorted(smtp.subjects_for("ann@example.com")) == ["Thanks", "Welcome"]
    assert sorted(smtp.subjects_for("bob@example.com")) == ["Nudge", "Welcome"]
    assert smtp.subjects_for("cat@example.com") == ["Welcome"]
    assert smtp.count() == 5
    assert Message.objects.filter(status=Message.SENT).count() == 5
    assert not Message.objects.exclude(status=Message.SENT).exists()
