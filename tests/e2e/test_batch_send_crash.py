"""Workflow emails sent in batches (Postmark's /email/batch, EMAIL_BATCH_SIZE per call) by two
worker clusters, one killed with -9 in the middle of a backlog: every run finishes, and no
email reaches the provider twice or goes missing from the ledger.

The provider is bench/provider.py's Postmark stand-in (a real HTTP/1.1 server on loopback that
answers after a delay and records every message it accepted), configured through the
environment as a deployment would. A batch the kill cut off after the provider took it leaves
its rows `sending`; the run goes to the surviving cluster once its lease is over, whose retry
marks them `unknown` and does not send again (Postmark can not de-duplicate).
"""

import time
from collections import Counter

import pytest

from bench.provider import ProviderStandIn
from templates_app.models import Message, Template
from tests.e2e.conftest import execution_summary
from workflows_app.models import Execution, StepRun
from workflows_app.services import workflow_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RUNS = 400
WORKERS = 2  # worker processes per cluster
CONCURRENCY = 4  # threads per worker process (ENGINE_CONCURRENCY)
BATCH = 10  # emails per provider call (EMAIL_BATCH_SIZE)
TASK = 40  # runs per task (ENGINE_TASK_SIZE): four calls of ten per task
LEASE = 10  # seconds (ENGINE_LEASE_SECONDS)
FINISH_WITHIN = 90  # seconds from the kill until the last run ends


@pytest.fixture
def provider():
    stand_in = ProviderStandIn(latency=0.3).start()
    yield stand_in
    stand_in.stop()


def test_batched_sends_survive_kill_9_of_a_cluster(make_stack, api_key, provider):
    Template.objects.create(
        name="Welcome", type=Template.TRANSACTIONAL, subject="Welcome", html="<p>Hi</p>"
    )
    workflow_create(
        name="Welcome",
        trigger_event="user.signup",
        enabled=True,
        graph={
            "steps": [{"key": "welcome", "type": "send_email", "config": {"template": "Welcome"}}],
            "transitions": [{"from": "trigger", "to": "welcome"}],
        },
    )
    stack = make_stack(
        **provider.env(),
        Q_WORKERS=str(WORKERS),
        ENGINE_CONCURRENCY=str(CONCURRENCY),
        EMAIL_BATCH_SIZE=str(BATCH),
        ENGINE_TASK_SIZE=str(TASK),
        ENGINE_LEASE_SECONDS=str(LEASE),
        CLOCK_RECOVER_SECONDS="1",
    )
    stack.start_web()
    emails = [f"user{i}@example.com" for i in range(RUNS)]
    for address in emails:
        stack.track(api_key, "user.signup", address)

    for name in ("a", "b"):
        stack.start_worker(f"qcluster-{name}")
    stack.start_clock()
    stack.wait_until(
        lambda: len(provider.accepted()) >= RUNS // 4,
        timeout=60,
        what=f"{RUNS // 4} emails at the provider",
    )
    stack.kill("qcluster-a")
    killed_at = time.monotonic()
    at_kill = (len(provider.accepted()), execution_summary())
    assert Execution.objects.filter(status__in=Execution.ACTIVE).exists(), (
        "the kill came too late to land in the middle of the backlog"
    )
    stack.wait_until(
        lambda: not Execution.objects.filter(status__in=Execution.ACTIVE).exists(),
        timeout=FINISH_WITHIN,
        what=f"every run to finish within {FINISH_WITHIN} s of the kill",
    )
    finished_after = time.monotonic() - killed_at

    # Every run completed, its send step visited once.
    assert Execution.objects.filter(status=Execution.COMPLETED).count() == RUNS
    for ex in Execution.objects.all():
        history = [(r.step_key, r.status) for r in ex.step_runs.order_by("id")]
        assert history == [("welcome", "completed")], (ex.pk, history)

    # One ledger row per visit, keyed by it and linked from it.
    messages = {m.idempotency_key: m for m in Message.objects.all()}
    assert len(messages) == RUNS
    for run in StepRun.objects.filter(step_type="send_email"):
        assert run.message_id == messages[f"exec-{run.execution_id}-run-{run.pk}"].pk

    # What the provider took: nothing twice, each with the key and token of its row.
    accepted = provider.accepted()
    taken = Counter(a.idempotency_key for a in accepted)
    doubled = {key: n for key, n in taken.items() if n > 1}
    assert not doubled, f"sent more than once: {doubled}"
    assert set(taken) <= set(messages)
    by_key = {a.idempotency_key: a for a in accepted}
    statuses = Counter(m.status for m in messages.values())
    assert set(statuses) <= {Message.SENT, Message.UNKNOWN}, statuses
    for key, m in messages.items():
        if m.status == Message.SENT:  # taken once, with the id the provider gave it
            assert by_key[key].message_id == m.provider_message_id, key
            assert by_key[key].message_token == m.token and by_key[key].to == m.to_email
    # Only the calls in flight in the killed cluster can be cut off.
    assert statuses[Message.UNKNOWN] <= WORKERS * CONCURRENCY * BATCH, statuses
    # Batched: far fewer calls than emails.
    assert provider.calls <= RUNS // BATCH + WORKERS * CONCURRENCY * 2, provider.calls
    print(
        f"kill at (accepted, runs): {at_kill}; all {RUNS} runs finished {finished_after:.1f} s "
        f"after it; ledger: {dict(statuses)}; provider calls: {provider.calls}"
    )
