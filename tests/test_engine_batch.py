"""A worker task moves its runs together (workflows_app.engine._drive): its writes are batched,
its side effects run ENGINE_CONCURRENCY at a time in threads, and its leases are renewed by a
heartbeat while steps run. These tests commit (transactional_db): the threads have their own
database connections, which see only what is committed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import DatabaseError, connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from contacts_app.models import Contact
from tests.conftest import chain, drain
from workflows_app import engine
from workflows_app.models import Execution, StepRun


class SlowReceiver:
    """A real HTTP server on loopback that answers each POST after `delay` seconds, counting the
    calls in flight at once, and running `during` (if set) in the middle of each call."""

    def __init__(self, delay: float):
        self.delay = delay
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0
        self.ids: list[str] = []
        self.during = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.in_flight += 1
                    receiver.most_in_flight = max(receiver.most_in_flight, receiver.in_flight)
                    receiver.ids.append(self.headers.get("webhook-id", ""))
                try:
                    if receiver.during is not None:
                        receiver.during()
                    else:
                        time.sleep(receiver.delay)
                finally:
                    with receiver.lock:
                        receiver.in_flight -= 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[SlowReceiver]:
    server = SlowReceiver(delay=0.3)
    yield server
    server.close()


def hook(url: str, key: str = "notify") -> dict:
    return {"key": key, "type": "webhook", "config": {"url": url}}


def claim_all() -> list[int]:
    return engine.executions_claim_due(now=timezone.now(), limit=1000)


def start_runs(track, count: int, event: str = "order.paid") -> list[int]:
    for i in range(count):
        assert track.post({"event": event, "email": f"c{i}@example.com"}).status_code == 200
    ids = claim_all()
    assert len(ids) == count
    return ids


@pytest.mark.parametrize("concurrency", [4, 1])
def test_side_effects_of_a_task_run_at_most_engine_concurrency_at_a_time(
    transactional_db, settings, track, make_workflow, receiver, concurrency
):
    settings.ENGINE_CONCURRENCY = concurrency
    make_workflow(*chain(hook(receiver.url)), trigger="order.paid")
    ids = start_runs(track, 12)

    assert engine.executions_advance(ids) == {Execution.COMPLETED: 12}

    assert receiver.most_in_flight == concurrency
    # Each visit called the receiver once, with its own stable id.
    assert len(receiver.ids) == 12 and len(set(receiver.ids)) == 12
    assert StepRun.objects.filter(status=StepRun.COMPLETED).count() == 12


def engine_writes(queries: CaptureQueriesContext) -> list[str]:
    tables = ("workflows_app_execution", "workflows_app_steprun")
    return [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith(("UPDATE", "INSERT")) and any(t in q["sql"] for t in tables)
    ]


def test_a_tasks_writes_do_not_grow_with_its_runs(transactional_db, settings, track, make_workflow):
    # Two steps with side effects, then a wait: per run that is a visit, an outcome and the
    # next visit, another outcome, and the wait. Written for all runs together, the number
    # of statements is the same for 2 runs as for 20.
    settings.ENGINE_CONCURRENCY = 1  # deterministic: every run is back before the next write
    steps = [
        {"key": "a", "type": "update_contact", "config": {"set": {"a": 1}}},
        {"key": "b", "type": "update_contact", "config": {"set": {"b": 2}}},
        {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "hours"}},
    ]
    counts = []
    for count, event in ((2, "order.paid"), (20, "order.shipped")):
        make_workflow(*chain(*steps), trigger=event)
        ids = start_runs(track, count, event)
        with CaptureQueriesContext(connection) as queries:
            assert engine.executions_advance(ids) == {Execution.WAITING: count}
        counts.append(len(engine_writes(queries)))
        assert StepRun.objects.filter(execution_id__in=ids).count() == 3 * count
    # Three writes: 3 statements each (runs, new visits, finished visits), less the first.
    assert counts[0] == counts[1] <= 8
    assert Contact.objects.filter(data__a=1, data__b=2).count() == 20


def test_the_heartbeat_renews_the_lease_while_a_step_runs(
    transactional_db, settings, track, make_workflow, receiver
):
    # A 3-second lease and a step that takes 4 seconds: the heartbeat keeps the lease ahead of
    # the clock all along, so the sweep never hands the run to another worker mid-step.
    settings.ENGINE_LEASE_SECONDS = 3
    settings.ENGINE_HEARTBEAT_SECONDS = 0.3
    settings.ENGINE_STEP_BOUND_SECONDS = 1
    seen: list[tuple[float, object, int]] = []

    def during():
        try:
            for _ in range(8):
                time.sleep(0.5)
                lease = Execution.objects.values_list("lease_until", flat=True).get()
                recovered = engine.executions_recover(now=timezone.now())
                seen.append((time.time(), lease, recovered))
        finally:
            connections.close_all()

    receiver.during = during
    make_workflow(*chain(hook(receiver.url)), trigger="order.paid")
    [pk] = start_runs(track, 1)

    assert engine.executions_advance([pk]) == {Execution.COMPLETED: 1}

    assert len(seen) == 8
    assert all(recovered == 0 for _, _, recovered in seen)
    # Never expired while the step ran, and renewed: the last lease ends well after the first.
    assert all(lease.timestamp() > at for at, lease, _ in seen)
    assert seen[-1][1] - seen[0][1] >= timedelta(seconds=3)
    assert len(receiver.ids) == 1


def test_no_step_begins_without_enough_lease_left(
    transactional_db, settings, track, make_workflow, receiver, monkeypatch
):
    # The heartbeat fails (the database is away, say): the second run's step would begin with
    # less lease left than a step may take, so it is not begun. The sweep hands it on once the
    # lease is over, and its webhook is called then, once.
    settings.ENGINE_CONCURRENCY = 1
    settings.ENGINE_LEASE_SECONDS = 3
    settings.ENGINE_HEARTBEAT_SECONDS = 0.3
    settings.ENGINE_STEP_BOUND_SECONDS = 1
    receiver.delay = 2.5

    def refuse(ids):
        raise ConnectionError("database away")

    monkeypatch.setattr(engine, "executions_renew_leases", refuse)
    make_workflow(*chain(hook(receiver.url)), trigger="order.paid")
    ids = start_runs(track, 2)

    assert engine.executions_advance(ids) == {Execution.COMPLETED: 1, "lease_short": 1}

    assert len(receiver.ids) == 1
    left = Execution.objects.get(status=Execution.RUNNING)
    assert left.lease_until is not None and left.wake_at is None
    assert left.step_runs.get().status == StepRun.STARTED  # its visit, not begun

    time.sleep(max(0.0, (left.lease_until - timezone.now()).total_seconds()) + 0.1)
    assert engine.executions_recover(now=timezone.now()) == 1
    receiver.delay = 0
    drain()
    assert set(Execution.objects.values_list("status", flat=True)) == {Execution.COMPLETED}
    assert len(receiver.ids) == 2 and len(set(receiver.ids)) == 2
    assert StepRun.objects.filter(execution=left).count() == 1  # the same visit, carried on


def test_the_clock_tells_the_worker_when_each_timer_was_due(db, settings, track, make_workflow):
    make_workflow(
        *chain({"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "seconds"}}),
        trigger="order.paid",
    )
    start_runs(track, 1)
    [pk] = Execution.objects.values_list("pk", flat=True)
    engine.executions_advance([pk])
    due = Execution.objects.get().wake_at
    assert due is not None
    [claim] = engine.executions_claim(now=due + timedelta(seconds=2), limit=10)
    assert (claim.id, claim.due, claim.version) == (pk, due, Execution.objects.get().version)


def test_only_steps_that_wait_on_the_network_run_in_threads(
    transactional_db, settings, track, make_workflow, receiver, monkeypatch
):
    # An Update Contact only writes to the database: threads would cost it more CPU than they
    # save, so it runs in the task's own thread; the webhook after it runs in the pool (its
    # calls overlap: test_side_effects_of_a_task_run_at_most_engine_concurrency_at_a_time).
    from workflows_app.steps import update_contact

    settings.ENGINE_CONCURRENCY = 4
    seen: set[str] = set()
    original = update_contact.contact_update_data

    def recording(**kwargs):
        seen.add(threading.current_thread().name)
        return original(**kwargs)

    monkeypatch.setattr(update_contact, "contact_update_data", recording)
    steps = [{"key": "tag", "type": "update_contact", "config": {"set": {"a": 1}}}]
    make_workflow(*chain(*steps, hook(receiver.url)), trigger="order.paid")
    ids = start_runs(track, 6)

    assert engine.executions_advance(ids) == {Execution.COMPLETED: 6}
    assert seen == {threading.current_thread().name}
    assert receiver.most_in_flight == 4
    assert len(receiver.ids) == 6


def test_a_task_leaves_alone_a_run_that_moved_since_its_claim(db, track, make_workflow, receiver):
    # The task waited in the queue past the run's lease: the run was made due again and handed
    # to another worker. The stale task must not move it (or call its webhook) as well.
    make_workflow(*chain(hook(receiver.url)), trigger="order.paid")
    assert track.post({"event": "order.paid", "email": "ann@example.com"}).status_code == 200
    [claim] = engine.executions_claim(now=timezone.now(), limit=10)
    later = timezone.now() + timedelta(seconds=600)
    assert engine.executions_recover(now=later) == 1
    [again] = engine.executions_claim(now=later, limit=10)
    assert again.version > claim.version

    stale = engine.executions_advance([claim.id], versions={claim.id: claim.version})

    assert stale == {"stale": 1}
    assert not StepRun.objects.exists() and receiver.ids == []
    fresh = engine.executions_advance([again.id], versions={again.id: again.version})
    assert fresh == {Execution.COMPLETED: 1} and len(receiver.ids) == 1


def test_a_renewal_needs_the_version_the_worker_holds_and_never_shortens(db, track, make_workflow):
    make_workflow(*chain(hook("http://127.0.0.1:9/hook")), trigger="order.paid")
    assert track.post({"event": "order.paid", "email": "ann@example.com"}).status_code == 200
    [claim] = engine.executions_claim(now=timezone.now(), limit=10)
    before = Execution.objects.get().lease_until

    assert engine.executions_renew_leases({claim.id: claim.version - 1}) == {}
    assert Execution.objects.get().lease_until == before
    renewed = engine.executions_renew_leases({claim.id: claim.version})
    assert list(renewed) == [claim.id] and renewed[claim.id] >= before
    far = timezone.now() + timedelta(hours=1)
    Execution.objects.update(lease_until=far)
    engine.executions_renew_leases({claim.id: claim.version})
    assert Execution.objects.get().lease_until == far  # not shortened


def test_a_run_cancelled_while_its_visit_waits_for_a_thread_does_nothing_more(
    transactional_db, settings, track, make_workflow, receiver
):
    # Two threads, three runs: the third run's visit is written, then waits for a thread. It
    # is cancelled meanwhile: its webhook is never called.
    settings.ENGINE_CONCURRENCY = 2
    make_workflow(*chain(hook(receiver.url)), trigger="order.paid")
    ids = start_runs(track, 3)
    last = max(ids)

    def during():
        try:
            engine.execution_cancel(execution=Execution.objects.get(pk=last), by="ops")
            time.sleep(0.3)
        finally:
            connections.close_all()

    receiver.during = during
    assert engine.executions_advance(ids) == {Execution.COMPLETED: 2, "untouched": 1}
    assert Execution.objects.get(pk=last).status == Execution.CANCELLED
    assert len(receiver.ids) == 2
    assert StepRun.objects.get(execution_id=last).status == StepRun.CANCELLED


def test_a_worker_asked_to_stop_hands_back_visits_still_waiting_for_a_thread(
    transactional_db, settings, track, make_workflow, receiver
):
    from workflows_app import shutdown

    settings.ENGINE_CONCURRENCY = 2
    make_workflow(*chain(hook(receiver.url)), trigger="order.paid")
    ids = start_runs(track, 3)

    def during():
        shutdown.request()
        time.sleep(0.3)

    receiver.during = during
    try:
        assert engine.executions_advance(ids) == {Execution.COMPLETED: 2, "released": 1}
        held = Execution.objects.get(status=Execution.RUNNING)
        assert held.lease_until is None and held.wake_at <= timezone.now()  # due again now
        assert held.step_runs.get().status == StepRun.STARTED  # its visit, not begun
        assert len(receiver.ids) == 2
    finally:
        shutdown.reset()
    receiver.during = None
    drain()
    assert set(Execution.objects.values_list("status", flat=True)) == {Execution.COMPLETED}
    assert len(receiver.ids) == 3 and len(set(receiver.ids)) == 3
    assert StepRun.objects.count() == 3  # the handed-back visit was carried on, not redone


def test_when_a_tasks_write_fails_each_run_is_written_alone(
    transactional_db, settings, track, make_workflow, monkeypatch
):
    settings.ENGINE_CONCURRENCY = 1
    real_write = engine._write

    def refuse_batches(advances):
        if len(advances) > 1:
            raise DatabaseError("deadlock detected")
        return real_write(advances)

    monkeypatch.setattr(engine, "_write", refuse_batches)
    steps = [{"key": "tag", "type": "update_contact", "config": {"set": {"a": 1}}}]
    make_workflow(*chain(*steps), trigger="order.paid")
    ids = start_runs(track, 4)
    assert engine.executions_advance(ids) == {Execution.COMPLETED: 4}
    assert StepRun.objects.filter(status=StepRun.COMPLETED).count() == 4


@pytest.mark.parametrize(
    ("claimed", "next_due", "pause"),
    [
        (0, None, 0.2),  # no timer set: the interval (for runs /v1/track starts meanwhile)
        (0, 0.05, 0.05),  # a timer ends sooner than the interval: wake for it
        (0, 5.0, 0.2),  # later than the interval: the interval
        (3, 0.0, 0.02),  # one fell due since this claim: again soon
        (0, 0.0, 0.2),  # due, yet nothing claimed: held back or another clock's, no busy loop
        (0, 0.001, 0.02),  # never under 20 ms
    ],
)
def test_the_clock_sleeps_until_the_next_timer_but_never_spins(claimed, next_due, pause):
    from workflows_app.clock import clock_pause

    assert clock_pause(0.2, claimed=claimed, next_due=next_due) == pause
