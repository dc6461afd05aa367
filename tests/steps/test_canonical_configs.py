"""One meaning, one stored config: what an editor sends (ours or Plunk's shape, defaults spelled
out or left out) is stored in the step type's one canonical form, exports as it, and imports
back to it; migration 0010 rewrites the configs stored before, even of a workflow with runs."""

import importlib

import pytest
from django.apps import apps
from django.db import connection

from tests.conftest import chain, drain
from tests.flow import execution_of, history, track_ok
from workflows_app.files import document_export, document_import
from workflows_app.models import Execution, Step, StepRun, Workflow

migration = importlib.import_module("workflows_app.migrations.0010_canonical_step_configs")

URL = "https://example.com/hooks/pro"

# (type, [equivalent configs], the one stored form)
EQUIVALENT = [
    (
        "webhook",
        [
            {"url": URL},
            {"url": URL, "method": "POST"},
            {
                "url": f"  {URL} ",
                "method": "post",
                "headers": {},
                "body": None,
                "timeout_seconds": 10,
            },
        ],
        {"url": URL},
    ),
    (
        "webhook",
        [
            {"url": URL, "method": "put", "headers": {"X-Team": "growth"}, "timeout_seconds": 5},
            {
                "url": URL,
                "method": "PUT",
                "headers": {"X-Team": "growth"},
                "body": None,
                "timeout_seconds": 5,
            },
        ],
        {"url": URL, "method": "PUT", "headers": {"X-Team": "growth"}, "timeout_seconds": 5},
    ),
    (
        "wait_for_event",
        [
            {"event": "user.paid"},
            {"event": "user.paid", "timeout": None},
            {"eventName": "user.paid", "timeout": 0},
            {"eventName": "user.paid"},
        ],
        {"event": "user.paid"},
    ),
    (
        "wait_for_event",
        [
            {"eventName": "user.paid", "timeout": 86400},
            {"event": "user.paid", "timeout": {"amount": 1, "unit": "days"}},
        ],
        {"event": "user.paid", "timeout": {"amount": 1, "unit": "days"}},
    ),
    (
        "update_contact",
        [
            {"set": {"stage": "active"}},
            {"set": {"stage": "active"}, "unset": [], "subscribed": None},
            {"updates": {"stage": "active"}},
            {"updates": {"stage": "active", "note": ""}, "subscriptionAction": "none"},
        ],
        {"set": {"stage": "active"}},
    ),
    (
        "update_contact",
        [
            {"unset": ["trial"], "subscribed": False},
            {"set": {}, "unset": ["trial"], "subscribed": False},
            {"updates": {"trial": None}, "subscriptionAction": "unsubscribe"},
        ],
        {"unset": ["trial"], "subscribed": False},
    ),
    ("exit", [{}, {"reason": "exit_step"}], {}),
    ("exit", [{"reason": ""}], {"reason": ""}),
    (
        "condition",
        [
            {"field": "data.plan", "operator": "equals", "value": "pro"},
            {"mode": "binary", "field": "data.plan", "operator": "equals", "value": "pro"},
            {"field": "data.plan", "operator": "equals", "value": "pro", "branches": None},
        ],
        {"field": "data.plan", "operator": "equals", "value": "pro"},
    ),
]


def store(make_workflow, name, type_name, config):
    make_workflow(*chain({"key": "only", "type": type_name, "config": config}), name=name)
    return Step.objects.get(workflow__name=name).config


@pytest.mark.parametrize(("type_name", "configs", "stored"), EQUIVALENT)
def test_equivalent_configs_are_stored_alike_and_round_trip(
    make_workflow, type_name, configs, stored
):
    names = [f"v{i}" for i in range(len(configs))]
    for name, config in zip(names, configs, strict=True):
        assert store(make_workflow, name, type_name, config) == stored, config

    exported = document_export(names)
    assert [w["steps"][0]["config"] for w in exported["workflows"]] == [stored] * len(names)
    Workflow.objects.filter(name__in=names).delete()  # no runs: they may go
    document_import(exported)
    assert document_export(names) == exported
    assert [Step.objects.get(workflow__name=n).config for n in names] == [stored] * len(names)


def test_an_exit_without_a_reason_ends_with_plunks_default(track, make_workflow):
    make_workflow(*chain({"key": "done", "type": "exit", "config": {}}))
    track_ok(track)
    drain()
    assert (execution_of().status, execution_of().exit_reason) == (Execution.EXITED, "exit_step")


# --- migration 0010 ---------------------------------------------------------------------------


def plant(workflow, key, config):
    """Stores a config as an earlier version did (before any run is active)."""
    Step.objects.filter(workflow=workflow, key=key).update(config=config)


def run_migration():
    with connection.schema_editor() as editor:
        migration.rewrite(apps, editor)


@pytest.mark.django_db(transaction=True)
def test_the_migration_rewrites_stored_configs_even_of_a_locked_workflow(
    track, make_workflow, template
):
    steps, transitions = chain(
        {"key": "wait", "type": "wait_for_event", "config": {"event": "user.paid"}},
        {"key": "tag", "type": "update_contact", "config": {"set": {"stage": "paid"}}},
        {"key": "done", "type": "exit", "config": {"reason": "paid"}},
    )
    transitions[1]["branch"] = "event"
    locked = make_workflow(steps, transitions, name="Locked")
    idle = make_workflow(
        *chain(
            {"key": "hook", "type": "webhook", "config": {"url": URL}},
            {"key": "mail", "type": "send_email", "config": {"template": template.name}},
            {"key": "done", "type": "exit", "config": {"reason": "x"}},
        ),
        trigger="user.other",
        name="Idle",
    )
    make_workflow(
        *chain({"key": "done", "type": "exit", "config": {"reason": "kept"}}),
        trigger="user.third",
        name="Untouched",
    )
    plant(locked, "wait", {"eventName": "user.paid", "timeout": 0})
    plant(locked, "tag", {"set": {"stage": "paid"}, "unset": [], "subscribed": None})
    plant(locked, "done", {})  # before 0010: an Exit without a reason recorded none
    plant(idle, "hook", {"url": URL, "method": "POST", "headers": {}, "body": None})
    plant(idle, "mail", {"template": template.name, "recipient": {"type": "CONTACT"}})
    plant(idle, "done", {"reason": "x", "code": 3})  # no longer valid: left for validation
    track_ok(track)
    drain()
    assert execution_of().status == Execution.WAITING
    versions = dict(Workflow.objects.values_list("name", "graph_version"))

    run_migration()

    configs = {(s.workflow.name, s.key): s.config for s in Step.objects.select_related("workflow")}
    assert configs == {
        ("Locked", "wait"): {"event": "user.paid"},
        ("Locked", "tag"): {"set": {"stage": "paid"}},
        ("Locked", "done"): {"reason": ""},
        ("Idle", "hook"): {"url": URL},
        ("Idle", "mail"): {"template": template.name},
        ("Idle", "done"): {"reason": "x", "code": 3},
        ("Untouched", "done"): {"reason": "kept"},
    }
    after = dict(Workflow.objects.values_list("name", "graph_version"))
    assert after["Locked"] > versions["Locked"] and after["Idle"] > versions["Idle"]
    assert after["Untouched"] == versions["Untouched"]
    # Rewritten in form only: the waiting run goes on as before, and exits with no reason.
    track_ok(track, event="user.paid")
    drain()
    ex = execution_of()
    assert (ex.status, ex.exit_reason) == (Execution.EXITED, "")
    assert history(ex)[-2:] == [("tag", StepRun.COMPLETED, "next"), ("done", StepRun.COMPLETED, "")]
    assert ex.contact.data["stage"] == "paid"
