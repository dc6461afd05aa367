"""Two worker clusters and two clocks on Redis (Q_BROKER_URL), one of each killed with -9 in
the middle of a backlog of email sends: every run finishes, promptly, and no email is sent
twice or lost.

Redis holds no acknowledgement: the tasks the killed cluster had taken (running, or waiting in
its own queue) are gone with it, and so is a clock's push cut off between its commit and the
push. Their runs are claimed, with a lease; when the lease runs out the surviving clock makes
them due again, and the surviving cluster finishes them. A send the kill cut off mid-way is
the ledger's `unknown` (SMTP can not de-duplicate, so it is never sent again): its email
reached the server once or not at all, depending on where the kill landed.
"""

import re
import time
from collections import Counter

import pytest
import redis
from django_q.models import OrmQ

from templates_app.models import Message, Template
from tests.e2e.conftest import Received, execution_summary
from tests.e2e.redis_server import redis_url  # noqa: F401 - a fixture
from workflows_app.models import Execution, StepRun
from workflows_app.services import workflow_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RUNS = 300
WORKERS = 2  # worker processes per cluster
CONCURRENCY = 4  # sends at a time per worker process (ENGINE_CONCURRENCY)
TASK = 25  # runs per task (ENGINE_TASK_SIZE): a dozen tasks, so both clusters hold some
LEASE = 10  # seconds (ENGINE_LEASE_SECONDS), renewed while a task runs
RECOVER = 1  # seconds between the clock's looks for expired leases (CLOCK_RECOVER_SECONDS)
FINISH_WITHIN = 90  # seconds from the kill until the last run ends


def welcome_workflow():
    Template.objects.create(
        name="Welcome", type=Template.TRANSACTIONAL, subject="Welcome", html="<p>Hi</p>"
    )
    return workflow_create(
        name="Welcome",
        trigger_event="user.signup",
        enabled=True,
        graph={
            "steps": [{"key": "welcome", "type": "send_email", "config": {"template": "Welcome"}}],
            "transitions": [{"from": "trigger", "to": "welcome"}],
        },
    )


def recovered_runs(stack, clock: str) -> int:
    """Runs the clock made due again after their lease ran out (its log says how many)."""
    text = "".join(p.read_text(errors="replace") for p in stack.logs.glob(f"{clock}.*.log"))
    return sum(int(n) for n in re.findall(r"re-queued (\d+) execution\(s\) whose worker", text))


def test_two_clusters_and_two_clocks_on_redis_survive_kill_9_of_one_of_each(
    redis_url,  # noqa: F811 - the fixture imported above; first, so it stops after the stack
    make_stack,
    api_key,
    smtp,
):
    welcome_workflow()
    # The server answers each email slowly (after counting it), so sends are in flight when
    # the kill lands.
    smtp.delay = 0.3
    stack = make_stack(
        Q_BROKER_URL=redis_url,
        Q_WORKERS=str(WORKERS),
        ENGINE_CONCURRENCY=str(CONCURRENCY),
        ENGINE_TASK_SIZE=str(TASK),
        ENGINE_LEASE_SECONDS=str(LEASE),
        CLOCK_RECOVER_SECONDS=str(RECOVER),
    )
    stack.start_web()
    emails = [f"user{i}@example.com" for i in range(RUNS)]
    for address in emails:  # the backlog, before any worker or clock runs
        stack.track(api_key, "user.signup", address)
    assert Execution.objects.filter(status=Execution.RUNNING).count() == RUNS

    for name in ("a", "b"):
        stack.start_worker(f"qcluster-{name}")
        stack.start_clock(f"clock-{name}")
    stack.wait_until(
        lambda: smtp.count() >= RUNS // 4, timeout=60, what=f"{RUNS // 4} emails at the server"
    )
    stack.kill("qcluster-a")
    stack.kill("clock-a")
    killed_at = time.monotonic()
    at_kill = (smtp.count(), execution_summary())
    assert Execution.objects.filter(status__in=Execution.ACTIVE).exists(), (
        "the kill came too late to land in the middle of the backlog"
    )

    stack.wait_until(
        lambda: not Execution.objects.filter(status__in=Execution.ACTIVE).exists(),
        timeout=FINISH_WITHIN,
        what=f"every run to finish within {FINISH_WITHIN} s of the kill",
    )
    finished_after = time.monotonic() - killed_at

    # Every run completed, having visited its send step once (an interrupted visit is carried
    # on, not begun again).
    assert Execution.objects.count() == RUNS
    not_completed = list(
        Execution.objects.exclude(status=Execution.COMPLETED).values_list("id", "status", "error")
    )
    assert not not_completed, not_completed
    for ex in Execution.objects.all():
        history = [(r.step_key, r.status) for r in ex.step_runs.order_by("id")]
        assert history == [("welcome", "completed")], (ex.pk, history)

    # One ledger row per visit, keyed by it and linked from it.
    sends = StepRun.objects.filter(step_type="send_email")
    messages = {m.idempotency_key: m for m in Message.objects.all()}
    assert sends.count() == len(messages) == Message.objects.count() == RUNS
    for run in sends:
        message = messages[f"exec-{run.execution_id}-run-{run.pk}"]
        assert run.message_id == message.pk
    assert {m.to_email for m in messages.values()} == set(emails)

    # What the server got: nothing twice, nothing the ledger does not know.
    received = smtp.counts()
    doubled = {r: n for r, n in received.items() if n > 1}
    assert not doubled, f"sent more than once: {doubled}"
    by_mail = {Received(m.to_email, m.subject): m for m in messages.values()}
    assert set(received) <= set(by_mail)
    # Each row is `sent` (the server accepted it: received exactly once) or `unknown` (the kill
    # cut its send off: received once or not at all, never sent again). Only sends in flight
    # in the killed cluster can be cut off: at most its workers times their concurrency.
    statuses = Counter(m.status for m in messages.values())
    assert set(statuses) <= {Message.SENT, Message.UNKNOWN}, statuses
    for m in messages.values():
        if m.status == Message.SENT:
            assert received[Received(m.to_email, m.subject)] == 1, m.idempotency_key
    unknown = statuses[Message.UNKNOWN]
    assert unknown <= WORKERS * CONCURRENCY, statuses
    unknown_received = sum(
        received[key] for key, m in by_mail.items() if m.status == Message.UNKNOWN
    )
    assert sum(received.values()) == statuses[Message.SENT] + unknown_received
    assert statuses[Message.SENT] + unknown == RUNS

    # The kill stranded runs (held by the dead cluster or its lost tasks), and the surviving
    # clock handed them on once their lease ran out.
    recovered = recovered_runs(stack, "clock-b")
    assert recovered >= 1, "no run was recovered: the kill did not hit the cluster's work"

    # The work really went through Redis: the database queue was never used.
    assert OrmQ.objects.count() == 0
    client = redis.Redis.from_url(redis_url)
    pushes = int(client.info("commandstats").get("cmdstat_rpush", {}).get("calls", 0))
    client.close()
    assert pushes >= RUNS // TASK, pushes  # a task per TASK runs, at least
    print(
        f"kill at (emails received, runs): {at_kill}; all {RUNS} runs finished "
        f"{finished_after:.1f} s after it; recovered after their lease: {recovered}; "
        f"ledger: {dict(statuses)}, of the unknown received: {unknown_received}; "
        f"tasks pushed to Redis: {pushes}"
    )
