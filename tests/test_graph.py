"""Graph validation, the whole-graph save, locking on every service path, the fixed trigger."""

import pytest

from templates_app.models import Template
from tests.conftest import chain, drain
from tests.flow import execution_of, track_ok
from workflows_app import engine
from workflows_app.files import DocumentError, document_export, document_import
from workflows_app.graph import (
    GraphError,
    WorkflowLocked,
    graph_validate,
    workflow_graph_document,
    workflow_save_graph,
)
from workflows_app.models import Execution, Step, Transition, Workflow
from workflows_app.services import TriggerImmutable, workflow_create, workflow_update


def update(key):
    return {"key": key, "type": "update_contact", "config": {"set": {key: True}}}


def cond(key):
    return {
        "key": key,
        "type": "condition",
        "config": {"field": "contact.plan", "operator": "exists"},
    }


def wait(key="w", timeout=None):
    config = {"event": "user.activated"}
    if timeout:
        config["timeout"] = {"amount": 1, "unit": "days"}
    return {"key": key, "type": "wait_for_event", "config": config}


def errors_of(steps, transitions):
    with pytest.raises(GraphError) as caught:
        graph_validate({"steps": steps, "transitions": transitions})
    return caught.value


def first_error(steps, transitions):
    """The first error (a broken edge may also leave a step unreachable) and the message."""
    exc = errors_of(steps, transitions)
    return exc.errors[0], str(exc)


# --- Validation errors name the step and the problem -----------------------------------------


def test_a_valid_graph_passes(db, template):
    steps = [
        {"key": "welcome", "type": "send_email", "config": {"template": "Welcome"}},
        {"key": "pause", "type": "delay", "config": {"amount": 2, "unit": "days"}},
        wait("w", timeout=True),
        cond("c"),
        {"key": "hook", "type": "webhook", "config": {"url": "https://example.com/h"}},
        update("tag"),
        {"key": "done", "type": "exit", "config": {"reason": "r"}},
    ]
    transitions = [
        {"from": "trigger", "to": "welcome"},
        {"from": "welcome", "to": "pause"},
        {"from": "pause", "to": "w", "branch": "next"},
        {"from": "w", "branch": "event", "to": "c"},
        {"from": "w", "branch": "timeout", "to": "done"},
        {"from": "c", "branch": "yes", "to": "hook"},
        {"from": "c", "branch": "no", "to": "tag"},
        {"from": "hook", "to": "done"},
        {"from": "tag", "to": "done"},
    ]
    specs, edges = graph_validate({"steps": steps, "transitions": transitions})
    assert [s.key for s in specs] == [s["key"] for s in steps]
    assert ("w", "timeout", "done") in edges
    assert ("trigger", "next", "welcome") in edges


def test_an_empty_graph_is_valid(db):
    assert graph_validate({"steps": [], "transitions": []}) == ([], [])


def test_no_entry(db):
    error, text = first_error([update("a")], [])
    assert error["step"] is None
    assert "connect the trigger to the first step" in text


def test_two_entries(db):
    error, text = first_error(
        [update("a"), update("b")],
        [{"from": "trigger", "to": "a"}, {"from": "trigger", "to": "b"}],
    )
    assert "the trigger can lead to only one step" in text


def test_unknown_type(db):
    error, text = first_error(
        [{"key": "a", "type": "send_sms", "config": {}}], [{"from": "trigger", "to": "a"}]
    )
    assert (error["step"], error["field"]) == ("a", "type")
    assert "unknown type 'send_sms'" in text and "send_email" in text


@pytest.mark.parametrize(
    "step, field",
    [
        ({"key": "a", "type": "delay", "config": {"amount": "soon", "unit": "days"}}, "amount"),
        ({"key": "a", "type": "webhook", "config": {"url": "not a url"}}, "url"),
        ({"key": "a", "type": "webhook", "config": {}}, "url"),
        ({"key": "a", "type": "wait_for_event", "config": {"event": ""}}, "event"),
        ({"key": "a", "type": "update_contact", "config": {}}, ""),
        ({"key": "a", "type": "exit", "config": {"why": "x"}}, "why"),
        ({"key": "a", "type": "delay", "config": "2 days"}, ""),
    ],
)
def test_bad_config(db, step, field):
    error, text = first_error([step], [{"from": "trigger", "to": "a"}])
    assert error["step"] == "a"
    assert error["field"] == (f"config.{field}" if field else "config")
    assert text.startswith("step 'a' (config")


def test_template_missing(db, template):
    step = {"key": "mail", "type": "send_email", "config": {"template": "Goodbye"}}
    error, text = first_error([step], [{"from": "trigger", "to": "mail"}])
    assert (error["step"], error["field"]) == ("mail", "config.template")
    assert "template 'Goodbye' does not exist" in text


def test_a_template_about_to_be_imported_counts(db):
    step = {"key": "mail", "type": "send_email", "config": {"template": "Goodbye"}}
    graph_validate(
        {"steps": [step], "transitions": [{"from": "trigger", "to": "mail"}]},
        template_names={"Goodbye"},
    )


@pytest.mark.parametrize(
    "source, branch, allowed",
    [
        (update("a"), "yes", "next"),
        (cond("a"), "next", "yes, no"),
        (cond("a"), "event", "yes, no"),
        (wait("a", timeout=True), "next", "event, timeout"),
        ({"key": "a", "type": "delay", "config": {"amount": 1, "unit": "days"}}, "no", "next"),
    ],
)
def test_wrong_branch_for_the_type(db, source, branch, allowed):
    error, text = first_error(
        [source, update("b")],
        [{"from": "trigger", "to": "a"}, {"from": "a", "branch": branch, "to": "b"}],
    )
    assert error["step"] == "a"
    assert f"has branches {allowed}, not '{branch}'" in text


def test_unknown_branch(db):
    error, text = first_error(
        [update("a"), update("b")],
        [{"from": "trigger", "to": "a"}, {"from": "a", "branch": "maybe", "to": "b"}],
    )
    assert error["step"] == "a" and "has branches next, not 'maybe'" in text


def test_timeout_branch_without_a_timeout(db):
    error, text = first_error(
        [wait("w"), update("b")],
        [{"from": "trigger", "to": "w"}, {"from": "w", "branch": "timeout", "to": "b"}],
    )
    assert error["step"] == "w"
    assert "set timeout to use 'timeout'" in text


def test_a_second_edge_from_one_port(db):
    error, text = first_error(
        [update("a"), update("b"), update("c")],
        [
            {"from": "trigger", "to": "a"},
            {"from": "a", "to": "b"},
            {"from": "a", "branch": "next", "to": "c"},
        ],
    )
    assert error["step"] == "a"
    assert "two transitions leave the same port ('next')" in text


def test_an_edge_out_of_exit(db):
    error, text = first_error(
        [{"key": "done", "type": "exit"}, update("b")],
        [{"from": "trigger", "to": "done"}, {"from": "done", "to": "b"}],
    )
    assert error["step"] == "done"
    assert "Exit step ends the run; it can have no outgoing transition" in text


def test_a_cycle(db):
    exc = errors_of(
        [update("a"), cond("b"), update("c")],
        [
            {"from": "trigger", "to": "a"},
            {"from": "a", "to": "b"},
            {"from": "b", "branch": "yes", "to": "c"},
            {"from": "c", "to": "a"},
        ],
    )
    [error] = [e for e in exc.errors if "cycle" in e["message"]]
    assert error["step"] == "a"
    assert "the graph has a cycle: a -> b -> c -> a" in str(exc)


def test_an_unreachable_step(db):
    error, text = first_error(
        [update("a"), update("island")],
        [{"from": "trigger", "to": "a"}],
    )
    assert error["step"] == "island"
    assert "step 'island': not reachable from the trigger" in text


def test_a_self_loop(db):
    exc = errors_of(
        [update("a")],
        [{"from": "trigger", "to": "a"}, {"from": "a", "to": "a"}],
    )
    assert exc.errors[0]["step"] == "a"
    assert "a step cannot lead to itself" in str(exc)


@pytest.mark.parametrize(
    "steps, message",
    [
        ([update("a"), update("a")], "two steps have this key"),
        ([{"key": "Not A Slug", "type": "exit"}], "key must be a slug"),
        ([{"key": "trigger", "type": "exit"}], "'trigger' is reserved"),
        ([{"type": "exit"}], "key must be a slug"),
    ],
)
def test_bad_keys(db, steps, message):
    exc = errors_of(steps, [{"from": "trigger", "to": steps[0].get("key", "x")}])
    assert message in str(exc)


def test_transitions_to_or_from_unknown_steps(db):
    exc = errors_of(
        [update("a")],
        [{"from": "trigger", "to": "a"}, {"from": "a", "to": "ghost"}, {"from": "nope", "to": "a"}],
    )
    assert "transition to unknown step 'ghost'" in str(exc)
    assert "transition from unknown step 'nope'" in str(exc)


def test_it_reports_every_error_at_once(db):
    exc = errors_of(
        [{"key": "a", "type": "delay", "config": {}}, update("island")],
        [{"from": "trigger", "to": "a"}],
    )
    assert {e["step"] for e in exc.errors} == {"a", "island"}


# --- Saving ----------------------------------------------------------------------------------


def test_an_invalid_graph_changes_nothing(make_workflow):
    workflow = make_workflow(*chain(update("a"), update("b")))
    before = workflow_graph_document(workflow)
    version = Workflow.objects.get(pk=workflow.pk).graph_version
    with pytest.raises(GraphError):
        workflow_save_graph(
            workflow=workflow,
            document={"steps": [update("a"), update("c")], "transitions": []},
        )
    assert workflow_graph_document(workflow) == before
    assert Workflow.objects.get(pk=workflow.pk).graph_version == version


def test_a_save_keeps_steps_by_key_and_replaces_the_rest(make_workflow):
    workflow = make_workflow(*chain(update("a"), update("b")))
    a_id = Step.objects.get(key="a").pk
    version = Workflow.objects.get(pk=workflow.pk).graph_version
    workflow_save_graph(
        workflow=workflow,
        document={
            "steps": [update("a"), update("c")],
            "transitions": [{"from": "trigger", "to": "a"}, {"from": "a", "to": "c"}],
        },
    )
    assert Step.objects.get(key="a").pk == a_id  # its history stays attached
    assert set(Step.objects.values_list("key", flat=True)) == {"a", "c"}
    assert Transition.objects.count() == 2
    assert Workflow.objects.get(pk=workflow.pk).graph_version > version


def test_a_new_workflow_is_created_with_its_graph_or_not_at_all(db):
    with pytest.raises(GraphError):
        workflow_create(
            name="Broken",
            trigger_event="user.signup",
            enabled=True,
            graph={"steps": [update("a")], "transitions": []},
        )
    assert not Workflow.objects.filter(name="Broken").exists()


# --- Locking ----------------------------------------------------------------------------------

NEW_GRAPH = {
    "steps": [update("a"), update("z")],
    "transitions": [{"from": "trigger", "to": "a"}, {"from": "a", "to": "z"}],
}


@pytest.fixture
def busy_workflow(track, make_workflow):
    """A workflow with one WAITING and one RUNNING execution."""
    delay = {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "days"}}
    workflow = make_workflow(*chain(update("a"), delay), name="Busy")
    track_ok(track, email="waiting@example.com")
    drain()
    track_ok(track, email="running@example.com")
    assert execution_of("waiting@example.com").status == Execution.WAITING
    assert execution_of("running@example.com").status == Execution.RUNNING
    return workflow


def assert_graph_unchanged(workflow, before):
    assert workflow_graph_document(workflow) == before
    assert set(Step.objects.filter(workflow=workflow).values_list("key", flat=True)) == {
        "a",
        "pause",
    }


def test_save_graph_is_refused_while_runs_are_active(busy_workflow):
    before = workflow_graph_document(busy_workflow)
    with pytest.raises(WorkflowLocked) as caught:
        workflow_save_graph(workflow=busy_workflow, document=NEW_GRAPH)
    message = str(caught.value)
    assert "'Busy' has 2 active execution(s)" in message
    assert "Disable it, wait for them to finish or cancel them all, edit, then re-enable" in (
        message
    )
    assert_graph_unchanged(busy_workflow, before)


def test_save_graph_is_refused_with_only_a_waiting_run(busy_workflow):
    engine.execution_cancel(execution=execution_of("running@example.com"))
    with pytest.raises(WorkflowLocked, match="1 active"):
        workflow_save_graph(workflow=busy_workflow, document=NEW_GRAPH)


def test_save_graph_works_again_after_cancel_all(busy_workflow):
    workflow_update(workflow=busy_workflow, enabled=False)
    assert engine.executions_cancel_all(workflow=busy_workflow) == 2
    workflow_save_graph(workflow=busy_workflow, document=NEW_GRAPH)
    assert set(Step.objects.filter(workflow=busy_workflow).values_list("key", flat=True)) == {
        "a",
        "z",
    }


def test_save_graph_works_again_when_the_runs_have_ended(track, make_workflow):
    workflow = make_workflow(*chain(update("a")))
    track_ok(track)
    with pytest.raises(WorkflowLocked):
        workflow_save_graph(workflow=workflow, document=NEW_GRAPH)
    drain()
    assert execution_of().status == Execution.COMPLETED
    workflow_save_graph(workflow=workflow, document=NEW_GRAPH)


def test_import_is_refused_while_runs_are_active_and_changes_nothing(busy_workflow):
    before = workflow_graph_document(busy_workflow)
    document = document_export(["Busy"])
    document["templates"].append(
        {"name": "New", "type": "marketing", "subject": "s", "html": "<p>h</p>"}
    )
    document["workflows"][0].update(NEW_GRAPH)
    with pytest.raises(DocumentError) as caught:
        document_import(document)
    assert "active execution(s)" in str(caught.value)
    assert_graph_unchanged(busy_workflow, before)
    assert not Template.objects.filter(name="New").exists()  # all or nothing


def test_name_description_enabled_and_reentry_stay_editable_while_locked(busy_workflow):
    workflow_update(
        workflow=busy_workflow,
        name="Busy (old)",
        description="being replaced",
        enabled=False,
        allow_reentry=True,
    )
    stored = Workflow.objects.get(pk=busy_workflow.pk)
    assert (stored.name, stored.description, stored.enabled, stored.allow_reentry) == (
        "Busy (old)",
        "being replaced",
        False,
        True,
    )
    assert Execution.objects.filter(workflow=stored, status__in=Execution.ACTIVE).count() == 2


def test_the_trigger_event_never_changes(make_workflow):
    workflow = make_workflow(*chain(update("a")), trigger="user.signup")
    with pytest.raises(TriggerImmutable, match="cannot change after creation"):
        workflow_update(workflow=workflow, trigger_event="user.login", name="Renamed")
    stored = Workflow.objects.get(pk=workflow.pk)
    assert (stored.trigger_event, stored.name) == ("user.signup", workflow.name)
    # Naming the same trigger is not a change.
    workflow_update(workflow=workflow, trigger_event="user.signup", name="Renamed")
    assert Workflow.objects.get(pk=workflow.pk).name == "Renamed"


def test_import_cannot_change_a_trigger_either(make_workflow):
    workflow = make_workflow(*chain(update("a")), name="Onboarding", trigger="user.signup")
    document = document_export(["Onboarding"])
    document["workflows"][0]["trigger_event"] = "user.login"
    with pytest.raises(DocumentError, match="cannot change an existing workflow's trigger"):
        document_import(document)
    assert Workflow.objects.get(pk=workflow.pk).trigger_event == "user.signup"
