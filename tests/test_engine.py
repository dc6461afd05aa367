"""The engine: status transitions, failures, runaway guard, cancellation, duplicate and stale
deliveries, crash recovery and the clock's hand-off to django-q2."""

import threading
from datetime import timedelta
from unittest import mock

import pytest
import time_machine
from django.core import mail
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone
from django_q.models import OrmQ
from werkzeug import Response

from contacts_app.models import Contact
from templates_app.models import Message, Template
from tests.conftest import chain, drain
from tests.flow import (
    T0,
    WorkerKilled,
    crash_after,
    execution_of,
    history,
    keys_run,
    track_ok,
)
from workflows_app import clock, engine, tasks
from workflows_app.models import Execution, Step, StepRun
from workflows_app.steps import STEP_TYPES

LEASE = timedelta(seconds=300)


@pytest.fixture(autouse=True)
def _test_settings(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.WEBHOOK_ALLOW_LOOPBACK = True
    settings.ENGINE_LEASE_SECONDS = int(LEASE.total_seconds())


def delay(key="pause", amount=1, unit="hours"):
    return {"key": key, "type": "delay", "config": {"amount": amount, "unit": unit}}


def update(key, **values):
    return {"key": key, "type": "update_contact", "config": {"set": values or {key: True}}}


def send(key="welcome"):
    return {"key": key, "type": "send_email", "config": {"template": "Welcome"}}


def webhook(url, key="notify"):
    return {"key": key, "type": "webhook", "name": "Notify CRM", "config": {"url": url}}


# --- Status transitions -----------------------------------------------------------------------


def test_it_goes_running_waiting_running_completed(track, make_workflow):
    make_workflow(*chain(update("first"), delay(), update("second")))
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        ex = execution_of()
        assert (ex.status, ex.current_step, ex.wake_at) == (Execution.RUNNING, None, T0)

        drain(now=T0)
        ex.refresh_from_db()
        assert (ex.status, ex.current_step.key) == (Execution.WAITING, "pause")
        assert ex.wake_at == T0 + timedelta(hours=1)
        assert ex.lease_until is None

        wake = T0 + timedelta(hours=1)
        traveller.move_to(wake)
        assert engine.executions_claim_due(now=wake, limit=10) == [ex.pk]
        ex.refresh_from_db()
        assert (ex.status, ex.pending_branch, ex.wake_at) == (Execution.RUNNING, "next", None)
        assert ex.lease_until == wake + LEASE

        assert engine.execution_advance(ex.pk) == Execution.COMPLETED

    ex.refresh_from_db()
    assert ex.status == Execution.COMPLETED
    assert (ex.finished_at, ex.wake_at, ex.lease_until) == (wake, None, None)
    assert (ex.error, ex.exit_reason) == ("", "")
    assert keys_run(ex) == ["first", "pause", "second"]
    assert all(r.finished_at for r in ex.step_runs.all())


def test_it_carries_the_trigger_data_in_the_context(track, make_workflow):
    make_workflow(*chain(update("first")))
    track_ok(track, data={"plan": "pro", "order": {"id": 7}})
    assert execution_of().context == {"plan": "pro", "order": {"id": 7}}


def test_it_exits_with_the_reason(track, make_workflow):
    exit_step = {"key": "done", "type": "exit", "config": {"reason": "already a customer"}}
    make_workflow(*chain(update("first"), exit_step))
    track_ok(track)
    drain()
    ex = execution_of()
    assert (ex.status, ex.exit_reason) == (Execution.EXITED, "already a customer")
    assert ex.finished_at is not None


def test_a_step_without_a_transition_for_its_outcome_completes_the_run(track, make_workflow):
    steps = [
        {
            "key": "is_pro",
            "type": "condition",
            "config": {"field": "contact.plan", "operator": "equals", "value": "pro"},
        },
        update("pro"),
    ]
    make_workflow(
        steps,
        [{"from": "trigger", "to": "is_pro"}, {"from": "is_pro", "branch": "yes", "to": "pro"}],
    )
    track_ok(track, data={"plan": "free"})
    drain()
    ex = execution_of()
    assert ex.status == Execution.COMPLETED
    assert history(ex) == [("is_pro", StepRun.COMPLETED, "no")]


def test_a_workflow_without_steps_completes_at_once(track, make_workflow):
    make_workflow([], [])
    track_ok(track)
    drain()
    ex = execution_of()
    assert ex.status == Execution.COMPLETED
    assert history(ex) == []


def test_without_reentry_a_contact_enters_once(track, make_workflow):
    make_workflow(*chain(update("first")))
    track_ok(track)
    drain()
    track_ok(track)
    drain()
    assert Execution.objects.count() == 1


def test_with_reentry_a_contact_enters_again_only_after_the_run_ended(track, make_workflow):
    make_workflow(*chain(delay()), reentry=True)
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        drain(now=T0)
        track_ok(track)  # still waiting: no second active run
        assert Execution.objects.count() == 1
        traveller.move_to(T0 + timedelta(hours=1))
        drain(now=T0 + timedelta(hours=1))
        track_ok(track)
    assert list(Execution.objects.order_by("id").values_list("status", flat=True)) == [
        Execution.COMPLETED,
        Execution.RUNNING,
    ]


# --- Failures ---------------------------------------------------------------------------------


def test_a_failing_step_fails_only_its_own_run(httpserver, track, make_workflow):
    def handler(request):
        if request.json["contact"]["email"] == "bob@example.com":
            return Response("unknown customer", status=400)
        return Response("ok")

    httpserver.expect_request("/hook").respond_with_handler(handler)
    make_workflow(*chain(webhook(httpserver.url_for("/hook")), update("after")))
    for email in ("ann@example.com", "bob@example.com", "cat@example.com"):
        track_ok(track, email=email)
    drain()  # one batch: the failure in the middle must not stop the others

    bob = execution_of("bob@example.com")
    assert bob.status == Execution.FAILED
    assert bob.error.startswith("Step 'Notify CRM' failed: HTTP 400")
    assert "unknown customer" in bob.error
    assert bob.finished_at is not None and bob.wake_at is None
    assert history(bob) == [("notify", StepRun.FAILED, "")]
    failed_run = bob.step_runs.get()
    assert "HTTP 400" in failed_run.error and failed_run.finished_at is not None
    for email in ("ann@example.com", "cat@example.com"):
        ex = execution_of(email)
        assert ex.status == Execution.COMPLETED
        assert keys_run(ex) == ["notify", "after"]


def test_an_unexpected_error_in_a_step_fails_the_run_with_it(track, make_workflow):
    steps = [
        update("first"),
        {
            "key": "check",
            "type": "condition",
            "config": {"field": "contact.plan", "operator": "exists"},
        },
    ]
    make_workflow(*chain(*steps))
    with mock.patch.object(STEP_TYPES["condition"], "run", side_effect=RuntimeError("boom")):
        track_ok(track)
        drain()
    ex = execution_of()
    assert ex.status == Execution.FAILED
    assert ex.error == "Step 'check' failed: RuntimeError: boom"
    assert history(ex) == [
        ("first", StepRun.COMPLETED, "next"),
        ("check", StepRun.FAILED, ""),
    ]


def test_a_template_renamed_after_saving_is_still_sent(track, template, make_workflow):
    make_workflow(*chain(send()))
    Template.objects.filter(pk=template.pk).update(name="Welcome (v2)")  # steps point by key
    track_ok(track)
    drain()
    ex = execution_of()
    assert ex.status == Execution.COMPLETED, ex.error
    assert Message.objects.get().template_id == template.pk
    assert len(mail.outbox) == 1


def test_a_graph_that_no_longer_loads_fails_the_run(track, make_workflow):
    make_workflow(*chain(delay()))
    Step.objects.update(config={"amount": 0, "unit": "hours"})  # behind the services' back
    track_ok(track)
    drain()
    ex = execution_of()
    assert ex.status == Execution.FAILED
    assert ex.error.startswith("Cannot load the workflow graph")


def test_the_runaway_guard_fails_a_run_that_takes_too_many_steps(track, make_workflow):
    make_workflow(*chain(*(update(f"s{i}") for i in range(6))))
    with override_settings(ENGINE_MAX_STEPS_PER_ADVANCE=3):
        track_ok(track)
        drain()
    ex = execution_of()
    assert ex.status == Execution.FAILED
    assert "Stopped after 3 steps" in ex.error
    assert "ENGINE_MAX_STEPS_PER_ADVANCE" in ex.error
    assert keys_run(ex) == ["s0", "s1", "s2"]
    assert set(Contact.objects.get().data) == {"s0", "s1", "s2"}


def test_the_runaway_guard_counts_steps_per_pass(track, make_workflow):
    make_workflow(*chain(update("a"), update("b"), delay(), update("c"), update("d")))
    with override_settings(ENGINE_MAX_STEPS_PER_ADVANCE=3), time_machine.travel(T0, tick=False):
        track_ok(track)
        drain(now=T0)
        drain(now=T0 + timedelta(hours=1))
    assert execution_of().status == Execution.COMPLETED


# --- Cancellation -----------------------------------------------------------------------------


def test_cancel_one_stops_a_waiting_run_for_good(track, make_workflow):
    make_workflow(*chain(delay(), update("after")))
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        track_ok(track, email="bob@example.com")
        drain(now=T0)
        ann = execution_of()
        assert engine.execution_cancel(execution=ann, by="ops@example.com") is True
        assert engine.execution_cancel(execution=ann, by="ops@example.com") is False

        traveller.move_to(T0 + timedelta(days=1))
        drain(now=T0 + timedelta(days=1))

    ann.refresh_from_db()
    assert ann.status == Execution.CANCELLED
    assert ann.exit_reason == "Cancelled by ops@example.com"
    assert (ann.wake_at, ann.finished_at) == (None, T0)
    assert history(ann) == [("pause", StepRun.CANCELLED, "")]
    assert "after" not in ann.contact.data
    assert engine.execution_advance(ann.pk) == ""
    assert execution_of("bob@example.com").status == Execution.COMPLETED


def test_a_cancelled_run_ignores_the_event_it_waited_for(track, make_workflow):
    wait = {"key": "w", "type": "wait_for_event", "config": {"event": "user.activated"}}
    steps = [wait, update("after")]
    make_workflow(
        steps, [{"from": "trigger", "to": "w"}, {"from": "w", "branch": "event", "to": "after"}]
    )
    track_ok(track)
    drain()
    engine.execution_cancel(execution=execution_of())
    track_ok(track, event="user.activated")
    drain()
    ex = execution_of()
    assert (ex.status, ex.exit_reason) == (Execution.CANCELLED, "Cancelled")
    assert keys_run(ex) == ["w"]


def test_cancel_all_cancels_only_the_active_runs_of_that_workflow(track, make_workflow):
    workflow = make_workflow(*chain(delay()), name="Nurture")
    other = make_workflow(*chain(delay()), name="Other", trigger="user.other")
    track_ok(track, email="done@example.com")
    track_ok(track, email="done@example.com", event="user.other")
    drain()
    engine.execution_cancel(execution=execution_of("done@example.com", workflow=workflow))
    for email in ("a@example.com", "b@example.com"):
        track_ok(track, email=email)
    drain()
    track_ok(track, email="c@example.com")  # RUNNING, not yet picked up by a worker

    assert engine.executions_cancel_all(workflow=workflow, by="ops") == 3
    assert engine.executions_cancel_all(workflow=workflow, by="ops") == 0

    statuses = dict(
        Execution.objects.filter(workflow=workflow).values_list("contact__email", "status")
    )
    assert set(statuses.values()) == {Execution.CANCELLED}
    assert Execution.objects.get(workflow=other).status == Execution.WAITING
    assert drain(now=timezone.now() + timedelta(days=1)) == 1  # only the other workflow's run
    assert not Execution.objects.filter(workflow=workflow, status__in=Execution.ACTIVE).exists()


@pytest.mark.django_db(transaction=True)
def test_a_run_cancelled_while_its_worker_is_mid_step_does_nothing_more(
    httpserver, track, template, make_workflow
):
    """Ops cancel (another connection) while the worker waits on a webhook: the worker finishes
    that request but runs no further step and writes nothing over the cancellation."""
    cancelled = []

    def handler(request):
        try:
            ex = Execution.objects.get(contact__email="ann@example.com")
            cancelled.append(engine.execution_cancel(execution=ex, by="ops"))
        finally:
            connection.close()
        return Response("ok")

    httpserver.expect_request("/hook").respond_with_handler(handler)
    make_workflow(*chain(webhook(httpserver.url_for("/hook")), update("after"), send()))
    track_ok(track)
    drain()

    assert cancelled == [True]
    ex = execution_of()
    assert ex.status == Execution.CANCELLED
    assert ex.exit_reason == "Cancelled by ops"
    assert keys_run(ex) == ["notify"]
    # The visit the worker was in is closed as cancelled in the history, not left "started".
    assert list(ex.step_runs.values_list("status", flat=True)) == [StepRun.CANCELLED]
    assert "after" not in Contact.objects.get().data
    assert len(httpserver.log) == 1
    assert engine.execution_advance(ex.pk) == ""
    assert drain(now=timezone.now() + timedelta(days=1)) == 0
    assert mail.outbox == []


# --- Duplicate and stale deliveries -----------------------------------------------------------


def test_a_duplicate_task_is_a_no_op(track, template, make_workflow):
    make_workflow(*chain(send(), delay()))
    track_ok(track)
    [pk] = engine.executions_claim_due(now=timezone.now(), limit=10)
    assert engine.executions_claim_due(now=timezone.now(), limit=10) == []
    assert engine.execution_advance(pk) == Execution.WAITING
    before = Execution.objects.get(pk=pk)

    assert engine.execution_advance(pk) == ""  # the same task delivered again
    assert tasks.advance_executions([pk, pk]) == {"untouched": 2}

    after = Execution.objects.get(pk=pk)
    assert (after.version, after.status, after.wake_at) == (
        before.version,
        Execution.WAITING,
        before.wake_at,
    )
    assert len(mail.outbox) == 1
    assert keys_run(after) == ["welcome", "pause"]


def test_a_task_for_a_run_not_yet_due_does_nothing(track, make_workflow):
    make_workflow(*chain(delay(), update("after")))
    track_ok(track)
    drain()
    ex = execution_of()
    # Even if it were RUNNING with a future wake_at (a retry later), an early task waits.
    Execution.objects.filter(pk=ex.pk).update(status=Execution.RUNNING, pending_branch="next")
    assert engine.execution_advance(ex.pk) == ""
    assert keys_run(ex) == ["pause"]


def test_a_worker_with_a_stale_copy_of_the_run_writes_nothing(track, template, make_workflow):
    """Worker A loads the run; worker B advances it to the end meanwhile; A then finds its copy
    stale at its first version-checked write, before any side effect."""
    make_workflow(*chain(send(), update("after")))
    track_ok(track)
    [pk] = engine.executions_claim_due(now=timezone.now(), limit=10)
    real_graph_for = engine.graph_for
    inner: list[str] = []

    def graph_for(workflow):
        if not inner:
            inner.append("started")
            inner.append(engine.execution_advance(pk))  # worker B, while A holds its copy
        return real_graph_for(workflow)

    with mock.patch.object(engine, "graph_for", graph_for):
        assert engine.execution_advance(pk) == ""  # worker A
    assert inner == ["started", Execution.COMPLETED]
    ex = Execution.objects.get(pk=pk)
    assert ex.status == Execution.COMPLETED
    assert keys_run(ex) == ["welcome", "after"]
    assert len(mail.outbox) == 1
    assert Message.objects.count() == 1


# --- Crash recovery ---------------------------------------------------------------------------


def test_a_run_whose_worker_died_is_recovered_after_its_lease_and_sends_once(
    track, template, make_workflow
):
    make_workflow(*chain(send(), update("after")))
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        [pk] = engine.executions_claim_due(now=T0, limit=10)
        with crash_after("send_email"), pytest.raises(WorkerKilled):
            engine.execution_advance(pk)
        ex = Execution.objects.get(pk=pk)
        assert (ex.status, ex.wake_at, ex.lease_until) == (Execution.RUNNING, None, T0 + LEASE)
        assert len(mail.outbox) == 1

        # The lease still holds: the worker might only be slow.
        traveller.move_to(T0 + LEASE - timedelta(seconds=1))
        assert clock.clock_sweep(now=T0 + LEASE - timedelta(seconds=1)) == 0
        assert drain(now=T0 + LEASE) == 0

        later = T0 + LEASE + timedelta(seconds=1)
        traveller.move_to(later)
        assert clock.clock_sweep(now=later) == 1
        ex.refresh_from_db()
        assert (ex.status, ex.wake_at, ex.lease_until) == (Execution.RUNNING, later, None)
        assert drain(now=later) == 1
        assert clock.clock_sweep(now=later + LEASE * 2) == 0

    ex.refresh_from_db()
    assert ex.status == Execution.COMPLETED
    assert history(ex) == [
        ("welcome", StepRun.COMPLETED, "next"),
        ("after", StepRun.COMPLETED, "next"),
    ]
    assert len(mail.outbox) == 1
    assert Message.objects.get().status == Message.SENT


def test_a_run_claimed_by_a_worker_that_never_started_is_recovered(track, make_workflow):
    make_workflow(*chain(update("first")))
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        assert clock.clock_tick(now=T0) == 1  # enqueued, but the task is lost
        OrmQ.objects.all().delete()
        later = T0 + LEASE + timedelta(seconds=1)
        traveller.move_to(later)
        assert engine.executions_recover(now=later) == 1
        drain(now=later)
    assert execution_of().status == Execution.COMPLETED


# --- The clock --------------------------------------------------------------------------------


def test_clock_tick_enqueues_claimed_runs_as_django_q_tasks(settings, track, make_workflow):
    settings.ENGINE_TASK_SIZE = 25
    make_workflow(*chain(update("first")))
    for i in range(30):
        track_ok(track, email=f"c{i}@example.com")
    all_ids = set(Execution.objects.values_list("id", flat=True))

    assert clock.clock_tick(now=timezone.now()) == 30
    assert clock.clock_tick(now=timezone.now()) == 0

    queued = [q.task for q in OrmQ.objects.order_by("id")]
    assert len(queued) == 2  # a batch per task, not a step per task
    assert {t["func"] for t in queued} == {"workflows_app.tasks.advance_executions"}
    batches = [t["args"][0] for t in queued]
    assert sorted(map(len, batches)) == [5, 25]
    assert set().union(*batches) == all_ids
    assert not Execution.objects.filter(wake_at__isnull=False).exists()

    for task in queued:  # what a qcluster worker does with them
        tasks.advance_executions(*task["args"])
    assert set(Execution.objects.values_list("status", flat=True)) == {Execution.COMPLETED}


def test_the_clock_claims_nothing_while_the_workers_are_behind(track, make_workflow):
    # One task per tick (25 runs); the workers are behind once two tasks wait.
    def tick():
        return clock.clock_tick(now=timezone.now(), batch_size=25, max_queued=2)

    make_workflow(*chain(update("first")))
    for i in range(60):
        track_ok(track, email=f"c{i}@example.com")
    assert tick() == 25
    assert tick() == 25
    assert tick() == 0  # two tasks wait: the workers are behind
    assert Execution.objects.filter(wake_at__isnull=False).count() == 10  # still due, unclaimed
    OrmQ.objects.order_by("id").first().delete()  # a worker took one
    assert tick() == 10


def test_a_claim_keeps_its_limit_when_the_statistics_are_stale(track, make_workflow, pg_only):
    # Analysed at one run, the table looks tiny to the planner, which then rescans the due-run
    # query for every row it updates; without a materialized CTE the claim took all 60.
    make_workflow(*chain(update("first")))
    track_ok(track, email="first@example.com")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE workflows_app_execution")
    for i in range(59):
        track_ok(track, email=f"c{i}@example.com")
    with transaction.atomic():
        assert len(engine.executions_claim_due(now=timezone.now(), limit=25)) == 25
    assert Execution.objects.filter(wake_at__isnull=False).count() == 35


def test_the_clock_takes_its_limits_from_the_settings(track, make_workflow, settings):
    settings.CLOCK_BATCH_SIZE = 7
    make_workflow(*chain(update("first")))
    for i in range(10):
        track_ok(track, email=f"c{i}@example.com")
    assert clock.clock_tick(now=timezone.now()) == 7
    settings.CLOCK_MAX_QUEUED_TASKS = 1  # the task just enqueued now waits
    assert clock.clock_tick(now=timezone.now()) == 0


def test_clock_tick_claims_and_enqueues_in_one_transaction(settings, track, make_workflow):
    settings.ENGINE_TASK_SIZE = 25  # two tasks for the 30 runs: the second enqueue fails
    make_workflow(*chain(update("first")))
    for i in range(30):
        track_ok(track, email=f"c{i}@example.com")
    from django_q.tasks import async_task as real_async_task

    calls = []

    def flaky_async_task(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise ConnectionError("the broker went away")
        return real_async_task(*args, **kwargs)

    with (
        mock.patch("config.broker.async_task", flaky_async_task),  # the clock enqueues there
        pytest.raises(ConnectionError),
    ):
        clock.clock_tick(now=timezone.now())

    # Nothing half-done: no task queued, no run left claimed without a task.
    assert OrmQ.objects.count() == 0
    assert Execution.objects.filter(wake_at__isnull=False).count() == 30
    assert clock.clock_tick(now=timezone.now()) == 30
    assert OrmQ.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_clocks_never_claim_the_same_run(track, make_workflow):
    make_workflow(*chain(update("first")))
    for i in range(40):
        track_ok(track, email=f"c{i}@example.com")
    now = timezone.now()
    barrier = threading.Barrier(2)
    claims: list[list[int]] = [[], []]
    errors = []

    def one_clock(slot):
        try:
            barrier.wait()
            for _ in range(20):
                with transaction.atomic():
                    claims[slot] += engine.executions_claim_due(now=now, limit=3)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=one_clock, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert not set(claims[0]) & set(claims[1])
    assert len(claims[0]) + len(claims[1]) == 40
    assert set(claims[0]) | set(claims[1]) == set(Execution.objects.values_list("id", flat=True))
