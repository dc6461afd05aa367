"""kill -9 of the worker cluster in the middle of runs loses no execution and sends no email
twice. Each run sends an email, waits a second, and sends another; the SMTP server answers
slowly so that a kill lands while emails are being handed over."""

from collections import Counter

import pytest

from templates_app.models import Message, Template
from tests.e2e.conftest import Received, execution_summary
from workflows_app.models import Execution, StepRun
from workflows_app.services import workflow_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RUNS = 50
WORKERS = 2
CONCURRENCY = 4  # sends in flight at once per worker process (ENGINE_CONCURRENCY)


def two_emails_workflow():
    for name in ("First", "Second"):
        Template.objects.create(
            name=name, type=Template.TRANSACTIONAL, subject=name, html=f"<p>{name}</p>"
        )
    steps = [
        {"key": "first", "type": "send_email", "config": {"template": "First"}},
        {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "seconds"}},
        {"key": "second", "type": "send_email", "config": {"template": "Second"}},
    ]
    transitions = [
        {"from": "trigger", "to": "first"},
        {"from": "first", "to": "pause"},
        {"from": "pause", "to": "second"},
    ]
    return workflow_create(
        name="Two emails",
        trigger_event="order.placed",
        enabled=True,
        graph={"steps": steps, "transitions": transitions},
    )


def test_it_survives_kill_9_of_the_workers_mid_run(make_stack, api_key, smtp):
    two_emails_workflow()
    smtp.delay = 0.15
    # A short lease, so the sweep hands runs the dead cluster held to the new one quickly.
    stack = make_stack(
        ENGINE_LEASE_SECONDS="4", Q_WORKERS=str(WORKERS), ENGINE_CONCURRENCY=str(CONCURRENCY)
    )
    stack.start_web()
    stack.start_clock()
    stack.start_worker()
    emails = [f"buyer{i}@example.com" for i in range(RUNS)]
    for address in emails:
        stack.track(api_key, "order.placed", address, {"order": address})

    kills = []
    for threshold in (15, 65):  # once among the first emails, once among the second ones
        stack.wait_until(
            lambda t=threshold: smtp.count() >= t,
            timeout=40,
            what=f"{threshold} emails at the SMTP server",
        )
        stack.kill("qcluster")
        kills.append((smtp.count(), execution_summary()))
        assert Execution.objects.filter(status__in=Execution.ACTIVE).exists(), (
            "the kill came too late to hit runs in the middle"
        )
        stack.start_worker()

    stack.wait_until(
        lambda: not Execution.objects.filter(status__in=Execution.ACTIVE).exists(),
        timeout=60,
        what="every run to finish after the restarts",
    )

    # No execution lost: each ran its three steps exactly once and completed.
    failed = list(
        Execution.objects.exclude(status="COMPLETED").values_list("id", "status", "error")
    )
    assert not failed, failed
    assert Execution.objects.count() == RUNS
    for ex in Execution.objects.all():
        history = [(r.step_key, r.status) for r in ex.step_runs.order_by("id")]
        assert history == [
            ("first", "completed"),
            ("pause", "completed"),
            ("second", "completed"),
        ], (ex.pk, history)

    # One ledger row per send visit, keyed by the visit, and linked from that visit.
    sends = StepRun.objects.filter(step_type="send_email")
    assert sends.count() == RUNS * 2
    messages = {m.idempotency_key: m for m in Message.objects.all()}
    assert len(messages) == Message.objects.count() == RUNS * 2
    for run in sends:
        message = messages[f"exec-{run.execution_id}-run-{run.pk}"]
        assert run.message_id == message.pk
        assert message.subject == run.step_key.capitalize()

    # No email twice; every email the server got has its ledger row.
    received = smtp.counts()
    doubled = {r: n for r, n in received.items() if n > 1}
    assert not doubled, f"sent more than once: {doubled}"
    by_mail = {Received(m.to_email, m.subject): m for m in messages.values()}
    assert set(received) <= set(by_mail)
    # A row is "sent" when the provider accepted it; the server then has it exactly once.
    # A row is "unknown" when a killed worker was in the middle of that send: the retry found
    # the row still "sending" and, as the provider (SMTP) can not de-duplicate, did not send
    # again. Its email reached the server or not, depending on where the kill landed; never
    # twice. Each kill can cut off at most the sends in flight: ENGINE_CONCURRENCY per worker
    # process.
    statuses = Counter(m.status for m in messages.values())
    assert set(statuses) <= {Message.SENT, Message.UNKNOWN}, statuses
    for m in messages.values():
        if m.status == Message.SENT:
            assert received[Received(m.to_email, m.subject)] == 1, m.idempotency_key
    assert statuses[Message.UNKNOWN] <= WORKERS * CONCURRENCY * len(kills), statuses
    assert sum(received.values()) >= RUNS * 2 - statuses[Message.UNKNOWN]
    print(
        f"kills at (emails received, runs): {kills}; ledger: {dict(statuses)}; "
        f"emails received: {sum(received.values())}"
    )
