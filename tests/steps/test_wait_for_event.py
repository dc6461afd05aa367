import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection, transaction
from django.utils import timezone

from contacts_app.models import Contact
from tests.conftest import TrackClient, chain, drain
from tests.flow import T0, execution_of, history, keys_run, track_ok
from workflows_app import engine
from workflows_app.files import document_export
from workflows_app.graph import GraphError
from workflows_app.models import Execution, StepRun

TIMEOUT = timedelta(days=3)


def wait(timeout=True, event="user.activated"):
    config = {"event": event}
    if timeout:
        config["timeout"] = {"amount": 3, "unit": "days"}
    return {"key": "activated", "type": "wait_for_event", "config": config}


def mark(key):
    return {"key": key, "type": "update_contact", "config": {"set": {"branch": key}}}


def branching_workflow(make_workflow, *, timeout=True, before=()):
    steps = [*before, wait(timeout), mark("on_event")]
    transitions = [
        {"from": "trigger", "to": steps[0]["key"]},
        *({"from": a["key"], "to": b["key"]} for a, b in zip(steps, steps[1:-1], strict=False)),
        {"from": "activated", "branch": "event", "to": "on_event"},
    ]
    if timeout:
        steps.append(mark("on_timeout"))
        transitions.append({"from": "activated", "branch": "timeout", "to": "on_timeout"})
    return make_workflow(steps, transitions)


def test_it_waits_for_the_event(track, make_workflow):
    branching_workflow(make_workflow)
    with time_machine.travel(T0, tick=False):
        track_ok(track)
        drain(now=T0)
    ex = execution_of()
    assert ex.status == Execution.WAITING
    assert ex.waiting_for == "user.activated"
    assert ex.wake_at == T0 + TIMEOUT
    assert history(ex) == [("activated", StepRun.WAITING, "")]


def test_it_takes_the_event_branch_and_adds_the_event_data(track, make_workflow):
    branching_workflow(make_workflow)
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track, data={"plan": "free"})
        drain(now=T0)
        traveller.move_to(T0 + timedelta(hours=5))
        track_ok(track, event="user.activated", data={"via": "mobile"})
        ex = execution_of()
        assert (ex.status, ex.waiting_for) == (Execution.RUNNING, "")
        drain(now=T0 + timedelta(hours=5))
        # The old timer is gone: the timeout changes nothing later.
        traveller.move_to(T0 + TIMEOUT + timedelta(days=1))
        assert drain(now=T0 + TIMEOUT + timedelta(days=1)) == 0

    ex.refresh_from_db()
    assert ex.status == Execution.COMPLETED
    assert history(ex) == [
        ("activated", StepRun.COMPLETED, "event"),
        ("on_event", StepRun.COMPLETED, "next"),
    ]
    assert ex.step_runs.get(step_key="activated").finished_at == T0 + timedelta(hours=5)
    # Plunk's merge: the event's data at the top level, and still under the event's name.
    assert ex.context == {"plan": "free", "via": "mobile", "user.activated": {"via": "mobile"}}
    assert Contact.objects.get().data["branch"] == "on_event"


def test_it_takes_the_timeout_branch_when_no_event_comes(track, make_workflow):
    branching_workflow(make_workflow)
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        drain(now=T0)
        traveller.move_to(T0 + TIMEOUT - timedelta(seconds=1))
        assert drain(now=T0 + TIMEOUT - timedelta(seconds=1)) == 0
        traveller.move_to(T0 + TIMEOUT)
        assert drain(now=T0 + TIMEOUT) == 1
        # An event after the timeout resumes nothing.
        track_ok(track, event="user.activated")
        drain(now=T0 + TIMEOUT)

    ex = execution_of()
    assert ex.status == Execution.COMPLETED
    assert history(ex) == [
        ("activated", StepRun.COMPLETED, "timeout"),
        ("on_timeout", StepRun.COMPLETED, "next"),
    ]
    assert "user.activated" not in ex.context
    assert Contact.objects.get().data["branch"] == "on_timeout"


def test_only_events_tracked_after_the_wait_began_count(track, make_workflow):
    pause = {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "hours"}}
    branching_workflow(make_workflow, before=[pause])
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track, event="user.activated")  # before the run even exists
        track_ok(track)
        drain(now=T0)
        traveller.move_to(T0 + timedelta(minutes=30))
        track_ok(track, event="user.activated")  # during the delay, before the wait
        drain(now=T0 + timedelta(minutes=30))
        traveller.move_to(T0 + timedelta(hours=1))
        drain(now=T0 + timedelta(hours=1))

        ex = execution_of()
        assert (ex.status, ex.current_step.key) == (Execution.WAITING, "activated")
        assert ex.waiting_for == "user.activated"

        traveller.move_to(T0 + timedelta(hours=2))
        track_ok(track, event="user.activated")
        drain(now=T0 + timedelta(hours=2))

    ex.refresh_from_db()
    assert ex.status == Execution.COMPLETED
    assert keys_run(ex) == ["pause", "activated", "on_event"]


def test_events_of_another_name_or_contact_do_not_resume(track, make_workflow):
    branching_workflow(make_workflow)
    with time_machine.travel(T0, tick=False):
        track_ok(track)
        drain(now=T0)
        track_ok(track, event="user.deactivated")
        track_ok(track, event="user.activated", email="bob@example.com")
        drain(now=T0)
    ex = execution_of()
    assert (ex.status, ex.waiting_for) == (Execution.WAITING, "user.activated")


def test_without_a_timeout_it_waits_for_ever(track, make_workflow):
    branching_workflow(make_workflow, timeout=False)
    far = T0 + timedelta(days=3650)
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        drain(now=T0)
        ex = execution_of()
        assert (ex.status, ex.wake_at) == (Execution.WAITING, None)
        traveller.move_to(far)
        assert drain(now=far) == 0
        ex.refresh_from_db()
        assert ex.status == Execution.WAITING
        track_ok(track, event="user.activated")
        drain(now=far)
    ex.refresh_from_db()
    assert ex.status == Execution.COMPLETED
    assert keys_run(ex) == ["activated", "on_event"]


def test_a_timeout_without_a_timeout_branch_completes_the_run(track, make_workflow):
    make_workflow(*chain(wait(timeout=True)))
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        drain(now=T0)
        traveller.move_to(T0 + TIMEOUT)
        drain(now=T0 + TIMEOUT)
    ex = execution_of()
    assert ex.status == Execution.COMPLETED
    assert history(ex) == [("activated", StepRun.COMPLETED, "timeout")]


RACE_ROUNDS = 30


def race(secret_key, email, timeout_at):
    """Thread A tracks the awaited event over /v1/track while thread B, the clock, claims the
    run at its timeout; both start together. Returns what the clock claimed."""
    barrier = threading.Barrier(2)
    claimed: list[int] = []
    errors: list[BaseException] = []

    def send_event():
        try:
            client = TrackClient(secret_key)
            barrier.wait()
            track_ok(client, event="user.activated", email=email)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    def claim_timeout():
        try:
            barrier.wait()
            with transaction.atomic():
                claimed.extend(engine.executions_claim_due(now=timeout_at, limit=10))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send_event), threading.Thread(target=claim_timeout)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    return claimed


@pytest.mark.django_db(transaction=True)
def test_the_event_and_the_timeout_race_and_exactly_one_wins(secret_key, make_workflow):
    """The event and the timeout hit the same waiting run at the same moment, many times:
    one branch is taken, never both, never none."""
    branching_workflow(make_workflow)
    winners = {"on_event": 0, "on_timeout": 0}
    for round_ in range(RACE_ROUNDS):
        email = f"race{round_}@example.com"
        track_ok(TrackClient(secret_key), email=email)
        drain()
        ex = execution_of(email)
        assert ex.status == Execution.WAITING

        claimed = race(secret_key, email, ex.wake_at)
        # Whatever the clock claimed goes to a worker; whatever the event resumed is due now.
        engine.executions_advance(claimed)
        drain(now=timezone.now() + timedelta(seconds=5))

        ex.refresh_from_db()
        assert ex.status == Execution.COMPLETED, (round_, ex.status, ex.error)
        runs = history(ex)
        assert len(runs) == 2, runs
        wait_run, next_run = runs
        assert wait_run[:2] == ("activated", StepRun.COMPLETED)
        expected_next = {"event": "on_event", "timeout": "on_timeout"}[wait_run[2]]
        assert next_run == (expected_next, StepRun.COMPLETED, "next")
        assert Contact.objects.get(email=email).data["branch"] == expected_next
        # (The clock may also have claimed the run after the event resumed it: that claim
        # carries the decided `event` branch, so it is no second winner.)
        assert ("user.activated" in ex.context) == (expected_next == "on_event")
        winners[expected_next] += 1
    assert sum(winners.values()) == RACE_ROUNDS


# --- Plunk's shape ------------------------------------------------------------------------------


def plunk_wait(**config):
    return {"key": "activated", "type": "wait_for_event", "config": config}


@pytest.mark.parametrize(
    "config, stored",
    [
        (
            {"eventName": "user.activated", "timeout": 259200},
            {"event": "user.activated", "timeout": {"amount": 3, "unit": "days"}},
        ),
        (
            {"eventName": "user.activated", "timeout": 5400},
            {"event": "user.activated", "timeout": {"amount": 90, "unit": "minutes"}},
        ),
        (
            {"eventName": "user.activated", "timeout": 1.5},
            {"event": "user.activated", "timeout": {"amount": 1.5, "unit": "seconds"}},
        ),
        ({"eventName": "user.activated"}, {"event": "user.activated"}),
        (
            {"eventName": "user.activated", "timeout": 0},
            {"event": "user.activated"},
        ),
        # Ours, without a timeout that is none (tests/steps/test_canonical_configs.py).
        ({"event": "user.activated"}, {"event": "user.activated"}),
        ({"event": "user.activated", "timeout": None}, {"event": "user.activated"}),
        (
            {"event": "user.activated", "timeout": {"amount": 1.5, "unit": "hours"}},
            {"event": "user.activated", "timeout": {"amount": 1.5, "unit": "hours"}},
        ),
    ],
)
def test_it_accepts_plunks_shape_and_stores_ours(make_workflow, config, stored):
    workflow = make_workflow(*chain(plunk_wait(**config)))
    assert workflow.steps.get().config == stored
    [exported] = document_export([workflow.name])["workflows"][0]["steps"]
    assert exported["config"] == stored


@pytest.mark.parametrize(
    "config",
    [
        {"eventName": ""},
        {"eventName": "x", "timeout": -5},
        {"eventName": "x", "timeout": "soon"},
        {"eventName": "x", "timeout": 366 * 86400},
        {"eventName": "x", "event": "y"},
        {"event": "x", "timeout": {"amount": 53, "unit": "weeks"}},
    ],
)
def test_it_refuses_a_bad_plunk_config(make_workflow, config):
    with pytest.raises(GraphError):
        make_workflow(*chain(plunk_wait(**config)))


def test_a_plunk_timeout_in_seconds_takes_the_timeout_branch(track, make_workflow):
    steps = [plunk_wait(eventName="user.activated", timeout=90), mark("on_timeout")]
    make_workflow(
        steps,
        [
            {"from": "trigger", "to": "activated"},
            {"from": "activated", "branch": "timeout", "to": "on_timeout"},
        ],
    )
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        drain(now=T0)
        ex = execution_of()
        assert (ex.status, ex.wake_at) == (Execution.WAITING, T0 + timedelta(seconds=90))
        traveller.move_to(T0 + timedelta(seconds=89))
        assert drain(now=T0 + timedelta(seconds=89)) == 0
        traveller.move_to(T0 + timedelta(seconds=90))
        drain(now=T0 + timedelta(seconds=90))
    ex.refresh_from_db()
    assert ex.status == Execution.COMPLETED
    assert keys_run(ex) == ["activated", "on_timeout"]


def test_the_resuming_events_data_wins_over_the_context_and_reaches_later_steps(
    track, make_workflow
):
    steps = [
        plunk_wait(eventName="order.paid"),
        {
            "key": "big",
            "type": "condition",
            "config": {"field": "event.total", "operator": "greaterThan", "value": 100},
        },
        mark("on_event"),
    ]
    make_workflow(
        steps,
        [
            {"from": "trigger", "to": "activated"},
            {"from": "activated", "branch": "event", "to": "big"},
            {"from": "big", "branch": "yes", "to": "on_event"},
        ],
    )
    track_ok(track, data={"total": 5, "plan": "free"})
    drain()
    track_ok(track, event="order.paid", data={"total": 250, "items": [1, 2]})
    drain()
    ex = execution_of()
    assert ex.status == Execution.COMPLETED
    assert ex.context == {
        "total": 250,
        "plan": "free",
        "items": [1, 2],
        "order.paid": {"total": 250, "items": [1, 2]},
    }
    assert Contact.objects.get().data["branch"] == "on_event"
