"""Migration 0006: stored Condition steps get Plunk's operator names, even in a workflow whose
runs are active (the graph-lock triggers are lifted for the rewrite and only for it)."""

import importlib
from datetime import timedelta

import pytest
import time_machine
from django.apps import apps
from django.db import IntegrityError, connection, transaction

from contacts_app.models import Contact
from tests.conftest import drain
from tests.flow import T0, execution_of, track_ok
from workflows_app.models import Execution, Step, Workflow

migration = importlib.import_module("workflows_app.migrations.0006_condition_operators")

# The schema editor lifts triggers with ALTER TABLE (PostgreSQL) or DROP/CREATE TRIGGER
# (SQLite, whose schema editor refuses to run inside the test's transaction): commit for real.
pytestmark = pytest.mark.django_db(transaction=True)

OLD_BINARY = {"field": "data.seats", "operator": "greater_or_equal", "value": 10}
OLD_MULTI = {
    "mode": "multi",
    "field": "data.plan",
    "branches": [
        {"id": "gone", "name": "No plan", "operator": "not_exists"},
        {"id": "big", "name": "Big", "operator": "equals", "value": "enterprise"},
        {"id": "other", "name": "Not free", "operator": "not_equals", "value": "free"},
    ],
}


def condition_workflow(make_workflow, trigger, config, *, pause=False):
    steps = [
        {"key": "check", "type": "condition", "config": config},
        {"key": "yes", "type": "update_contact", "config": {"set": {"path": "yes"}}},
    ]
    transitions = [{"from": "check", "branch": "yes", "to": "yes"}]
    if pause:
        steps.insert(0, {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "days"}})
        transitions += [{"from": "trigger", "to": "pause"}, {"from": "pause", "to": "check"}]
    else:
        transitions.append({"from": "trigger", "to": "check"})
    return make_workflow(steps, transitions, trigger=trigger)


def plant(workflow, config):
    """Stores a config as an older version of the product did (no run is active yet)."""
    Step.objects.filter(workflow=workflow, key="check").update(config=config)


def config_of(workflow):
    return Step.objects.get(workflow=workflow, key="check").config


def version_of(workflow):
    return Workflow.objects.get(pk=workflow.pk).graph_version


def run_migration():
    with connection.schema_editor() as editor:
        migration.rename(apps, editor)


def test_it_renames_operators_in_locked_and_idle_workflows(track, make_workflow):
    with time_machine.travel(T0, tick=False) as traveller:
        locked = condition_workflow(
            make_workflow, "user.signup", {"field": "data.a", "operator": "exists"}, pause=True
        )
        idle = condition_workflow(
            make_workflow, "user.other", {"field": "data.a", "operator": "exists"}
        )
        current = condition_workflow(
            make_workflow, "user.third", {"field": "data.a", "operator": "notExists"}
        )
        plant(locked, OLD_BINARY)
        plant(idle, OLD_MULTI)
        track_ok(track, data={"seats": 12})
        drain(now=T0)
        assert execution_of().status == Execution.WAITING
        versions = {wf.pk: version_of(wf) for wf in (locked, idle, current)}
        with pytest.raises(IntegrityError), transaction.atomic():
            Step.objects.filter(workflow=locked, key="check").update(config={"x": 1})

        run_migration()

        assert config_of(locked) == {
            "field": "data.seats",
            "operator": "greaterThanOrEqual",
            "value": 10,
        }
        assert [b["operator"] for b in config_of(idle)["branches"]] == [
            "notExists",
            "equals",
            "notEquals",
        ]
        assert config_of(idle)["branches"][2] == {
            "id": "other",
            "name": "Not free",
            "operator": "notEquals",
            "value": "free",
        }
        assert config_of(current) == {"field": "data.a", "operator": "notExists"}
        assert version_of(locked) == versions[locked.pk] + 1
        assert version_of(idle) == versions[idle.pk] + 1
        assert version_of(current) == versions[current.pk]
        # The lock is back once the migration is done.
        with pytest.raises(IntegrityError), transaction.atomic():
            Step.objects.filter(workflow=locked, key="check").update(config={"x": 1})
        assert config_of(locked)["operator"] == "greaterThanOrEqual"

        # The waiting run carries on with the renamed condition: 12 >= 10.
        traveller.move_to(T0 + timedelta(days=1))
        drain(now=T0 + timedelta(days=1))
    ex = execution_of()
    assert ex.status == Execution.COMPLETED
    assert ex.step_runs.get(step_key="check").branch == "yes"
    assert Contact.objects.get().data["path"] == "yes"


def test_running_it_again_changes_nothing(make_workflow):
    workflow = condition_workflow(
        make_workflow, "user.signup", {"field": "data.a", "operator": "exists"}
    )
    plant(workflow, OLD_MULTI)
    run_migration()
    once, version = config_of(workflow), version_of(workflow)
    run_migration()
    assert config_of(workflow) == once
    assert version_of(workflow) == version


def test_it_leaves_other_step_types_alone(make_workflow):
    workflow = condition_workflow(
        make_workflow, "user.signup", {"field": "data.a", "operator": "exists"}
    )
    # An Update Contact step whose data happens to hold a key named "operator".
    Step.objects.filter(workflow=workflow, key="yes").update(
        config={"set": {"operator": "not_equals"}}
    )
    version = version_of(workflow)
    run_migration()
    assert Step.objects.get(workflow=workflow, key="yes").config == {
        "set": {"operator": "not_equals"}
    }
    assert version_of(workflow) == version


@pytest.mark.django_db(transaction=True)
def test_it_goes_back_to_the_old_names_and_refuses_with_a_multi_branch_condition():
    from workflows_app.services import workflow_create

    workflow = workflow_create(
        name="Plans",
        trigger_event="user.signup",
        graph={
            "steps": [
                {
                    "key": "big",
                    "type": "condition",
                    "config": {
                        "field": "event.total",
                        "operator": "greaterThanOrEqual",
                        "value": 10,
                    },
                }
            ],
            "transitions": [{"from": "trigger", "to": "big"}],
        },
    )
    with connection.schema_editor() as editor:
        migration.unrename(apps, editor)
    assert Step.objects.get(workflow=workflow).config["operator"] == "greater_or_equal"
    Step.objects.filter(workflow=workflow).update(
        config={"mode": "multi", "field": "event.total", "branches": []}
    )
    with (
        pytest.raises(RuntimeError, match="several branches"),
        connection.schema_editor() as editor,
    ):
        migration.unrename(apps, editor)
