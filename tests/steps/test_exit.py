import pytest

from contacts_app.models import Contact
from tests.conftest import drain
from tests.flow import execution_of, history, track_ok
from workflows_app.graph import GraphError, graph_validate
from workflows_app.models import Execution, StepRun
from workflows_app.steps import STEP_TYPES
from workflows_app.steps.base import ConfigError


def exit_step(key="done", **config):
    return {"key": key, "type": "exit", "name": "Stop here", "config": config}


def is_pro_then_exit(make_workflow, reason="not a customer"):
    steps = [
        {
            "key": "is_pro",
            "type": "condition",
            "config": {"field": "contact.plan", "operator": "equals", "value": "pro"},
        },
        exit_step(reason=reason),
        {"key": "tag", "type": "update_contact", "config": {"set": {"pro": True}}},
    ]
    transitions = [
        {"from": "trigger", "to": "is_pro"},
        {"from": "is_pro", "branch": "no", "to": "done"},
        {"from": "is_pro", "branch": "yes", "to": "tag"},
    ]
    return make_workflow(steps, transitions)


def test_it_ends_the_run_as_exited_with_its_reason(track, make_workflow):
    is_pro_then_exit(make_workflow)
    track_ok(track, data={"plan": "free"})
    drain()

    ex = execution_of()
    assert ex.status == Execution.EXITED
    assert ex.exit_reason == "not a customer"
    assert ex.error == ""
    assert ex.finished_at is not None
    assert ex.wake_at is None
    assert history(ex) == [
        ("is_pro", StepRun.COMPLETED, "no"),
        ("done", StepRun.COMPLETED, ""),
    ]
    assert "pro" not in Contact.objects.get().data


def test_the_other_branch_does_not_exit(track, make_workflow):
    is_pro_then_exit(make_workflow)
    track_ok(track, data={"plan": "pro"})
    drain()
    ex = execution_of()
    assert (ex.status, ex.exit_reason) == (Execution.COMPLETED, "")


def test_the_reason_is_optional_and_defaults_to_plunks(track, make_workflow):
    make_workflow([exit_step()], [{"from": "trigger", "to": "done"}])
    track_ok(track)
    drain()
    ex = execution_of()
    assert (ex.status, ex.exit_reason) == (Execution.EXITED, "exit_step")


def test_an_empty_reason_records_none(track, make_workflow):
    make_workflow([exit_step(reason="")], [{"from": "trigger", "to": "done"}])
    track_ok(track)
    drain()
    ex = execution_of()
    assert (ex.status, ex.exit_reason) == (Execution.EXITED, "")


def test_an_exit_can_have_no_outgoing_transition(db):
    with pytest.raises(GraphError) as caught:
        graph_validate(
            {
                "steps": [exit_step(), {"key": "more", "type": "exit"}],
                "transitions": [
                    {"from": "trigger", "to": "done"},
                    {"from": "done", "to": "more"},
                ],
            }
        )
    assert "step 'done'" in str(caught.value)
    assert "no outgoing transition" in str(caught.value)


def test_the_reason_is_limited(db):
    with pytest.raises(ConfigError):
        STEP_TYPES["exit"].parse_config({"reason": "x" * 501})
    with pytest.raises(ConfigError):
        STEP_TYPES["exit"].parse_config({"reason": "ok", "code": 3})
