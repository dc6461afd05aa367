from datetime import timedelta

import pytest
import time_machine

from contacts_app.models import Contact
from tests.conftest import chain, drain
from tests.flow import T0, execution_of, history, keys_run, track_ok
from workflows_app.files import document_export
from workflows_app.graph import GraphError, graph_validate
from workflows_app.models import Execution, StepRun

UNITS = {
    "seconds": timedelta(seconds=3),
    "minutes": timedelta(minutes=3),
    "hours": timedelta(hours=3),
    "days": timedelta(days=3),
    "weeks": timedelta(weeks=3),
}


def delay(amount, unit, key="pause"):
    return {"key": key, "type": "delay", "config": {"amount": amount, "unit": unit}}


def tag(key="after"):
    return {"key": key, "type": "update_contact", "config": {"set": {key: True}}}


@pytest.mark.parametrize("unit", list(UNITS))
def test_it_wakes_exactly_when_the_delay_ends(track, make_workflow, unit):
    make_workflow(*chain(delay(3, unit), tag()))
    due = T0 + UNITS[unit]
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        drain(now=T0)
        ex = execution_of()
        assert ex.status == Execution.WAITING
        assert ex.wake_at == due
        assert ex.waiting_for == ""
        assert history(ex) == [("pause", StepRun.WAITING, "")]

        # One second early: nothing is due, nothing moves.
        traveller.move_to(due - timedelta(seconds=1))
        assert drain(now=due - timedelta(seconds=1)) == 0
        ex.refresh_from_db()
        assert ex.status == Execution.WAITING
        assert "after" not in Contact.objects.get().data

        traveller.move_to(due)
        assert drain(now=due) == 1

    ex.refresh_from_db()
    assert ex.status == Execution.COMPLETED
    assert history(ex) == [
        ("pause", StepRun.COMPLETED, "next"),
        ("after", StepRun.COMPLETED, "next"),
    ]
    pause = ex.step_runs.get(step_key="pause")
    assert (pause.started_at, pause.finished_at) == (T0, due)
    assert Contact.objects.get().data["after"] is True


def test_two_delays_add_up(track, make_workflow):
    make_workflow(*chain(delay(2, "hours", "first"), delay(30, "minutes", "second"), tag()))
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        drain(now=T0)
        traveller.move_to(T0 + timedelta(hours=2))
        drain(now=T0 + timedelta(hours=2))
        ex = execution_of()
        assert (ex.status, ex.current_step.key) == (Execution.WAITING, "second")
        assert ex.wake_at == T0 + timedelta(hours=2, minutes=30)

        traveller.move_to(ex.wake_at)
        drain(now=ex.wake_at)

    ex.refresh_from_db()
    assert ex.status == Execution.COMPLETED
    assert keys_run(ex) == ["first", "second", "after"]


def test_a_delay_at_the_end_completes_the_run_when_it_ends(track, make_workflow):
    make_workflow(*chain(delay(1, "days")))
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        drain(now=T0)
        traveller.move_to(T0 + timedelta(days=1))
        drain(now=T0 + timedelta(days=1))
    ex = execution_of()
    assert ex.status == Execution.COMPLETED
    assert ex.finished_at == T0 + timedelta(days=1)


@pytest.mark.parametrize(
    "config, field",
    [
        ({"amount": 0, "unit": "days"}, "config.amount"),
        ({"amount": -1, "unit": "days"}, "config.amount"),
        ({"amount": 2, "unit": "fortnights"}, "config.unit"),
        ({"amount": 2}, "config.unit"),
        ({"unit": "days"}, "config.amount"),
        ({"amount": 2, "unit": "days", "jitter": 1}, "config.jitter"),
        ({"amount": 366, "unit": "days"}, "config"),
        ({"amount": 53, "unit": "weeks"}, "config"),
        ({"amount": 8761, "unit": "hours"}, "config"),
        ({"amount": "2", "unit": "days"}, "config.amount"),
        ({"amount": True, "unit": "days"}, "config.amount"),
        ({"amount": 0.0, "unit": "days"}, "config.amount"),
    ],
)
def test_it_rejects_a_bad_delay_config(db, config, field):
    with pytest.raises(GraphError) as caught:
        graph_validate(
            {
                "steps": [{"key": "pause", "type": "delay", "config": config}],
                "transitions": [{"from": "trigger", "to": "pause"}],
            }
        )
    assert [(e["step"], e["field"]) for e in caught.value.errors] == [("pause", field)]


@pytest.mark.parametrize(
    "amount, unit, length",
    [
        (1.5, "hours", timedelta(minutes=90)),
        (0.5, "seconds", timedelta(milliseconds=500)),
        (2.25, "days", timedelta(days=2, hours=6)),
        (365, "days", timedelta(days=365)),
        (52, "weeks", timedelta(weeks=52)),
    ],
)
def test_it_waits_a_decimal_amount(track, make_workflow, amount, unit, length):
    workflow = make_workflow(*chain(delay(amount, unit), tag()))
    # Stored and exported as written: 1.5 stays 1.5, 365 stays an integer.
    [exported] = document_export([workflow.name])["workflows"][0]["steps"][:1]
    assert exported["config"] == {"amount": amount, "unit": unit}
    assert type(exported["config"]["amount"]) is type(amount)
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        drain(now=T0)
        ex = execution_of()
        assert ex.wake_at == T0 + length
        early = T0 + length - timedelta(milliseconds=1)
        traveller.move_to(early)
        assert drain(now=early) == 0
        traveller.move_to(T0 + length)
        assert drain(now=T0 + length) == 1
    ex.refresh_from_db()
    assert ex.status == Execution.COMPLETED
    assert keys_run(ex) == ["pause", "after"]
