"""Integrity of workflow graphs on every path: templates referenced by key, the lock held by
database triggers (raw ORM writes included), no lost canvas updates, consistent reads, and no
delete that orphans running work.

These run on SQLite too (ALSO_ON_SQLITE in tests/conftest.py: `make run`'s database has its
own triggers), except the concurrency tests (`pg_only`), which prove PostgreSQL's row locks."""

import json
import math
import sys
import threading
import time

import pytest
from django.contrib.admin.sites import site
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from contacts_app.models import Contact, Event
from contacts_app.services import contact_upsert
from templates_app.models import Message, Template
from tests.canvas_data import WAIT_GRAPH, staff_user, start_runs, workflow_with_waiting_runs
from workflows_app import engine
from workflows_app.files import document_export, document_import
from workflows_app.graph import (
    GraphConflict,
    workflow_graph_document,
    workflow_graph_snapshot,
    workflow_save_graph,
)
from workflows_app.models import Execution, Step, StepRun, Transition, Workflow
from workflows_app.services import (
    WorkflowBusy,
    contact_erase,
    workflow_create,
    workflow_delete,
)

SEND_GRAPH = {
    "steps": [
        {"key": "welcome", "type": "send_email", "config": {"template": "Welcome"}},
        {"key": "pause", "type": "delay", "config": {"amount": 2, "unit": "days"}},
    ],
    "transitions": [{"from": "trigger", "to": "welcome"}, {"from": "welcome", "to": "pause"}],
}


def version_of(workflow) -> int:
    return Workflow.objects.values_list("graph_version", flat=True).get(pk=workflow.pk)


# --- Templates by identity ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_send_email_step_points_at_its_template_by_key(template):
    workflow = workflow_create(name="Onboarding", trigger_event="user.signup", graph=SEND_GRAPH)
    step = Step.objects.get(workflow=workflow, key="welcome")
    assert step.template_id == template.pk
    assert "template" not in step.config  # the name is not stored, so it can not go stale

    template.name = "Welcome (2027)"
    template.save()
    document = workflow_graph_document(workflow)
    assert document["steps"][0]["config"] == {"template": "Welcome (2027)"}
    exported = document_export(["Onboarding"])
    assert [t["name"] for t in exported["templates"]] == ["Welcome (2027)"]
    assert exported["workflows"][0]["steps"][0]["config"]["template"] == "Welcome (2027)"


@pytest.mark.django_db
def test_export_then_import_keeps_the_reference_after_a_rename(template):
    workflow_create(name="Onboarding", trigger_event="user.signup", graph=SEND_GRAPH)
    Template.objects.filter(pk=template.pk).update(name="Renamed")
    exported = document_export()
    document_import(exported)  # the identity: nothing changes, nothing is refused
    assert Step.objects.get(key="welcome").template_id == template.pk
    assert document_export() == exported


@pytest.mark.django_db
def test_deleting_a_template_in_use_is_refused_naming_the_workflows(admin_client, template):
    workflow_create(name="Onboarding", trigger_event="user.signup", graph=SEND_GRAPH)
    workflow_create(name="Winback", trigger_event="user.churned", graph=SEND_GRAPH)
    unused = Template.objects.create(name="Unused", subject="s", html="<p>x</p>")
    url = reverse("admin:templates_app_template_delete", args=[template.pk])

    page = admin_client.get(url)
    assert page.status_code == 200
    text = page.content.decode()
    assert "protected" in text and "Onboarding" in text and "Winback" in text
    admin_client.post(url, {"post": "yes"})
    assert Template.objects.filter(pk=template.pk).exists()

    # Bulk delete: the unused one may go, the used one stays.
    changelist = reverse("admin:templates_app_template_changelist")
    admin_client.post(
        changelist,
        {"action": "delete_selected", "_selected_action": [template.pk, unused.pk], "post": "yes"},
    )
    assert Template.objects.filter(pk=template.pk).exists()


@pytest.mark.django_db
def test_a_template_no_longer_used_can_be_deleted(admin_client, template):
    workflow = workflow_create(name="Onboarding", trigger_event="user.signup", graph=SEND_GRAPH)
    workflow_save_graph(workflow=workflow, document=WAIT_GRAPH)
    admin_client.post(
        reverse("admin:templates_app_template_delete", args=[template.pk]), {"post": "yes"}
    )
    assert not Template.objects.filter(pk=template.pk).exists()


@pytest.mark.django_db
def test_the_migration_moves_template_names_to_keys(template):
    import importlib

    from django.apps import apps

    migration = importlib.import_module(
        "workflows_app.migrations.0002_step_template_graph_saved_by"
    )
    workflow = workflow_create(name="Onboarding", trigger_event="user.signup", graph=SEND_GRAPH)
    # The shape rows had before the migration: the name in the config, no key.
    Step.objects.filter(key="welcome").update(template=None, config={"template": "Welcome"})
    migration.names_to_keys(apps, None)
    step = Step.objects.get(workflow=workflow, key="welcome")
    assert (step.template_id, step.config) == (template.pk, {})
    migration.keys_to_names(apps, None)
    assert Step.objects.get(pk=step.pk).config == {"template": "Welcome"}


# --- The lock lives in the database -----------------------------------------------------------


@pytest.fixture
def locked_workflow(db):
    """Delay 2 days -> Exit, with one run waiting at the delay."""
    workflow = workflow_with_waiting_runs(emails=["ann@example.com"])
    assert Execution.objects.filter(workflow=workflow, status=Execution.WAITING).count() == 1
    return workflow


def refused(write) -> str:
    with pytest.raises(IntegrityError) as info, transaction.atomic():
        write()
    return str(info.value)


def test_raw_orm_changes_to_a_locked_graph_are_refused(locked_workflow):
    before = workflow_graph_document(locked_workflow)
    version = version_of(locked_workflow)
    steps = Step.objects.filter(workflow=locked_workflow)
    transitions = Transition.objects.filter(workflow=locked_workflow)

    message = refused(
        lambda: steps.filter(key="pause").update(config={"amount": 1, "unit": "minutes"})
    )
    assert "active executions" in message
    refused(lambda: steps.filter(key="done").delete())
    refused(lambda: steps.update(type="exit"))
    refused(lambda: Step.objects.create(workflow=locked_workflow, key="extra", type="exit"))
    refused(lambda: transitions.delete())
    refused(lambda: transitions.filter(from_step__isnull=False).update(branch="yes"))
    refused(
        lambda: Transition.objects.create(
            workflow=locked_workflow,
            from_step=steps.get(key="done"),
            to_step=steps.get(key="pause"),
        )
    )
    with connection.cursor() as cursor:
        refused(
            lambda: cursor.execute(
                "DELETE FROM workflows_app_transition WHERE workflow_id = %s", [locked_workflow.pk]
            )
        )

    assert workflow_graph_document(locked_workflow) == before
    assert version_of(locked_workflow) == version


def test_a_locked_graph_still_takes_cosmetic_changes(locked_workflow):
    version = version_of(locked_workflow)
    Step.objects.filter(workflow=locked_workflow, key="pause").update(
        name="Wait two days", position_x=320, position_y=-40
    )
    step = Step.objects.get(workflow=locked_workflow, key="pause")
    assert (step.name, step.position_x, step.position_y) == ("Wait two days", 320, -40)
    assert version_of(locked_workflow) > version  # still a new version for cached graphs


def test_every_change_bumps_the_version_whatever_the_path(db):
    workflow = workflow_create(name="Draft", trigger_event="user.signup", graph=WAIT_GRAPH)
    seen = [version_of(workflow)]
    Step.objects.filter(workflow=workflow, key="pause").update(config={"amount": 3, "unit": "days"})
    seen.append(version_of(workflow))
    Transition.objects.filter(workflow=workflow, from_step__isnull=False).delete()
    seen.append(version_of(workflow))
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE workflows_app_step SET name = 'x' WHERE workflow_id = %s", [workflow.pk]
        )
    seen.append(version_of(workflow))
    assert seen == sorted(set(seen)), seen  # strictly increasing


def test_a_worker_does_not_keep_a_stale_graph_after_a_raw_change(db):
    workflow = workflow_create(name="Draft", trigger_event="user.signup", graph=WAIT_GRAPH)
    cached = engine.graph_for(Workflow.objects.get(pk=workflow.pk))
    assert next(s for s in cached.steps.values() if s.key == "pause").config.amount == 2
    Step.objects.filter(workflow=workflow, key="pause").update(config={"amount": 5, "unit": "days"})
    fresh = engine.graph_for(Workflow.objects.get(pk=workflow.pk))
    assert next(s for s in fresh.steps.values() if s.key == "pause").config.amount == 5


def test_the_service_gives_the_friendly_message_first(locked_workflow):
    from workflows_app.graph import WorkflowLocked

    changed = json.loads(json.dumps(WAIT_GRAPH))
    changed["steps"][0]["config"]["amount"] = 3
    with pytest.raises(WorkflowLocked, match="cancel them all"):
        workflow_save_graph(workflow=locked_workflow, document=changed)


def test_an_active_execution_can_not_be_deleted_even_raw(locked_workflow):
    run = Execution.objects.get(workflow=locked_workflow)
    assert "cancel it first" in refused(lambda: Execution.objects.filter(pk=run.pk).delete())
    engine.execution_cancel(execution=run)
    Execution.objects.filter(pk=run.pk).delete()
    assert not Execution.objects.filter(pk=run.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_raw_change_and_a_starting_run_are_serialised(pg_only):
    """A raw step change holds the workflow row; a run starting meanwhile waits for it, so the
    run never sees a half-changed graph and the change never lands under an active run."""
    workflow = workflow_create(
        name="Draft", trigger_event="user.signup", enabled=True, graph=WAIT_GRAPH
    )
    contact, _ = contact_upsert(email="ann@example.com")
    event = Event.objects.create(contact=contact, name="user.signup", data={})
    changed, started = threading.Event(), []

    def start_run():
        changed.wait(5)
        from django.utils import timezone

        try:
            started.append(
                engine.executions_start(contact=contact, event=event, now=timezone.now())
            )
        finally:
            connection.close()

    thread = threading.Thread(target=start_run)
    thread.start()
    with transaction.atomic():
        Step.objects.filter(workflow=workflow, key="pause").update(
            config={"amount": 9, "unit": "days"}
        )
        changed.set()
        time.sleep(0.5)  # the run's insert is now blocked on the workflow row
        assert not Execution.objects.filter(workflow=workflow).exists()
    thread.join(10)
    assert started == [1]
    assert Step.objects.get(workflow=workflow, key="pause").config["amount"] == 9
    # ...and now the graph is locked for good while that run is active.
    with pytest.raises(IntegrityError):
        Step.objects.filter(workflow=workflow, key="pause").update(
            config={"amount": 1, "unit": "days"}
        )


# --- No lost updates ----------------------------------------------------------------------------


def test_a_stale_save_is_refused_saying_who_changed_what(db, template):
    workflow = workflow_create(name="Draft", trigger_event="user.signup", graph=WAIT_GRAPH)
    opened = version_of(workflow)
    theirs = json.loads(json.dumps(WAIT_GRAPH))
    theirs["steps"][0]["config"]["amount"] = 5
    workflow_save_graph(workflow=workflow, document=theirs, expected_version=opened, by="bea")
    mine = json.loads(json.dumps(WAIT_GRAPH))
    mine["steps"][1]["config"]["reason"] = "mine"
    with pytest.raises(GraphConflict) as info:
        workflow_save_graph(workflow=workflow, document=mine, expected_version=opened, by="ann")
    message = str(info.value)
    assert message.startswith("bea saved this workflow's graph at ")
    assert f"you started from version {opened}" in message
    assert "pause, done" in message or "done, pause" in message
    assert workflow_graph_document(workflow)["steps"][0]["config"]["amount"] == 5


@pytest.mark.django_db(transaction=True)
def test_of_two_concurrent_canvas_saves_one_wins_and_one_gets_409(pg_only, live_server):
    import requests

    workflow = workflow_create(name="Draft", trigger_event="user.signup", graph=WAIT_GRAPH)
    staff_user("ann", "workflows_app.view_workflow", "workflows_app.change_workflow")
    staff_user("bea", "workflows_app.view_workflow", "workflows_app.change_workflow")
    url = live_server.url + reverse("admin:workflows_app_workflow_canvas", args=[workflow.pk])

    def session(username):
        s = requests.Session()
        login = live_server.url + reverse("admin:login")
        s.get(login)
        s.post(
            login,
            {"username": username, "password": "pw-secret-123", "next": "/admin/"},
            headers={"X-CSRFToken": s.cookies["csrftoken"], "Referer": login},
        )
        return s

    sessions = {name: session(name) for name in ("ann", "bea")}
    opened = {name: s.get(url).json()["workflow"]["graph_version"] for name, s in sessions.items()}
    assert opened["ann"] == opened["bea"]
    results: dict[str, requests.Response] = {}
    barrier = threading.Barrier(2)

    def save(name, amount):
        graph = json.loads(json.dumps(WAIT_GRAPH))
        graph["steps"][0]["config"]["amount"] = amount
        s = sessions[name]
        barrier.wait()
        results[name] = s.put(
            url,
            json={"graph": graph, "graph_version": opened[name]},
            headers={"X-CSRFToken": s.cookies["csrftoken"], "Referer": url},
        )

    threads = [threading.Thread(target=save, args=a) for a in (("ann", 3), ("bea", 4))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    statuses = sorted(r.status_code for r in results.values())
    assert statuses == [200, 409], {k: (r.status_code, r.text[:200]) for k, r in results.items()}
    winner = next(name for name, r in results.items() if r.status_code == 200)
    loser = next(name for name, r in results.items() if r.status_code == 409)
    assert results[loser].json()["conflict"] is True
    assert results[loser].json()["message"].startswith(f"{winner} saved this workflow's graph")
    amount = workflow_graph_document(workflow)["steps"][0]["config"]["amount"]
    assert amount == {"ann": 3, "bea": 4}[winner]


@pytest.mark.django_db(transaction=True)
def test_a_graph_read_sees_a_save_wholly_or_not_at_all(pg_only):
    workflow = workflow_create(name="Draft", trigger_event="user.signup", graph=WAIT_GRAPH)
    before_version, before = workflow_graph_snapshot(workflow)
    bigger = json.loads(json.dumps(WAIT_GRAPH))
    bigger["steps"].append({"key": "extra", "type": "exit", "config": {}})
    bigger["transitions"] = [
        {"from": "trigger", "to": "pause"},
        {"from": "pause", "to": "extra"},
    ]
    bigger["steps"] = [s for s in bigger["steps"] if s["key"] != "done"]
    mid_save, read = threading.Event(), []

    def reader():
        mid_save.wait(5)
        try:
            read.append(workflow_graph_snapshot(workflow))
        finally:
            connection.close()

    thread = threading.Thread(target=reader)
    thread.start()
    with transaction.atomic():
        workflow_save_graph(workflow=workflow, document=bigger)
        mid_save.set()
        time.sleep(0.5)  # the reader is waiting for this save to end
        assert not read
    thread.join(10)
    version, document = read[0]
    assert version > before_version
    assert [s["key"] for s in document["steps"]] == ["pause", "extra"]
    assert {t["to"] for t in document["transitions"]} == {"pause", "extra"}
    assert before != document


# --- Canvas saves: shape and types first --------------------------------------------------------


def canvas_put(client, workflow, body, *, raw=None):
    url = reverse("admin:workflows_app_workflow_canvas", args=[workflow.pk])
    data = raw if raw is not None else json.dumps(body)
    return client.put(url, data=data, content_type="application/json")


@pytest.fixture
def draft(db):
    return workflow_create(name="Draft", trigger_event="user.signup", graph=WAIT_GRAPH)


def step_with(**changes):
    step = {"key": "pause", "type": "delay", "config": {"amount": 2, "unit": "days"}}
    return {**step, **changes}


@pytest.mark.parametrize(
    ("body", "raw", "expected"),
    [
        ({"graph": None, "graph_version": 0}, None, "graph must be an object"),
        ({"graph": [], "graph_version": 0}, None, "graph must be an object"),
        ({"graph": {"steps": []}}, None, "graph_version"),
        ({"graph": {"steps": []}, "graph_version": "1"}, None, "graph_version"),
        ({"graph": {"steps": []}, "graph_version": True}, None, "graph_version"),
        (None, '{"graph": {"steps": [{"position": {"x": NaN}}]}, "graph_version": 0}', "NaN"),
        (None, '{"graph": {"steps": []}, "graph_version": 1e400}', "out of range"),
        (None, "[" * 100_000, "nested deeper"),
        (None, b'{"graph": "\xff"}', "not UTF-8"),
        (None, "", "not valid JSON"),
    ],
)
def test_a_canvas_save_refuses_malformed_bodies(admin_client, draft, body, raw, expected):
    before, version = workflow_graph_document(draft), version_of(draft)
    response = canvas_put(admin_client, draft, body, raw=raw)
    assert response.status_code == 400, response.content
    assert expected in response.json()["message"]
    assert workflow_graph_document(draft) == before and version_of(draft) == version


@pytest.mark.parametrize(
    ("step", "field"),
    [
        (step_with(name=["a", "list"]), "name"),
        (step_with(name="Pause\x00"), "name"),
        (step_with(type=["delay"]), "type"),
        (step_with(type={"x": 1}), "type"),
        (step_with(key=["pause"]), "key"),
        (step_with(position={"x": 1e300, "y": 0}), "position"),
        (step_with(position={"x": "1", "y": 0}), "position"),
        (step_with(position={"x": True, "y": 0}), "position"),
        (step_with(position=[1, 2]), "position"),
        (step_with(config=["amount", 2]), "config"),
        (step_with(config={"amount": 2, "unit": "days\x00"}), "config"),
        (step_with(extra="field"), ""),
    ],
)
def test_a_canvas_save_refuses_wrong_types_per_step(admin_client, draft, step, field):
    before, version = workflow_graph_document(draft), version_of(draft)
    graph = {"steps": [step], "transitions": [{"from": "trigger", "to": "pause"}]}
    response = canvas_put(admin_client, draft, {"graph": graph, "graph_version": version})
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert errors and all(isinstance(e["message"], str) for e in errors)
    if field:
        assert any(e["field"].startswith(field) for e in errors), errors
    assert workflow_graph_document(draft) == before and version_of(draft) == version


@pytest.mark.parametrize(
    "transition",
    [
        {"from": ["trigger"], "to": "pause"},
        {"from": "trigger", "to": {"key": "pause"}},
        {"from": "trigger", "to": "pause", "branch": 7},
        {"from": "trigger", "to": "pause", "weight": 2},
        "trigger->pause",
    ],
)
def test_a_canvas_save_refuses_malformed_transitions(admin_client, draft, transition):
    version = version_of(draft)
    graph = {"steps": [step_with()], "transitions": [transition]}
    response = canvas_put(admin_client, draft, {"graph": graph, "graph_version": version})
    assert response.status_code == 400
    assert version_of(draft) == version


def test_the_canvas_opens_after_any_refused_save(admin_client, draft):
    canvas_put(
        admin_client,
        draft,
        None,
        raw='{"graph": {"steps": [{"key": "pause", "type": "delay", "config": {"amount": 2, '
        '"unit": "days"}, "position": {"x": Infinity, "y": 0}}]}, "graph_version": 0}',
    )
    response = admin_client.get(reverse("admin:workflows_app_workflow_canvas", args=[draft.pk]))
    assert response.status_code == 200
    positions = [s["position"] for s in response.json()["graph"]["steps"]]
    assert positions == [{"x": 0.0, "y": 0.0}, {"x": 0.0, "y": 160.0}]


# --- No delete orphans running work -------------------------------------------------------------


def test_a_workflow_with_active_runs_can_not_be_deleted_from_its_page(
    admin_client, locked_workflow
):
    url = reverse("admin:workflows_app_workflow_delete", args=[locked_workflow.pk])
    for response in (
        admin_client.get(url, follow=True),
        admin_client.post(url, {"post": "yes"}, follow=True),
    ):
        assert response.status_code == 200
        text = response.content.decode()
        assert "1 active execution(s)" in text and "cannot be deleted" in text
    assert Workflow.objects.filter(pk=locked_workflow.pk).exists()
    assert Execution.objects.filter(workflow=locked_workflow).count() == 1


def test_the_bulk_delete_keeps_busy_workflows_and_says_so(admin_client, locked_workflow):
    idle = workflow_create(name="Idle", trigger_event="user.other", graph=WAIT_GRAPH)
    response = admin_client.post(
        reverse("admin:workflows_app_workflow_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [locked_workflow.pk, idle.pk],
            "post": "yes",
        },
        follow=True,
    )
    assert "Not deleted: Workflow &#x27;Nurture&#x27; has 1 active" in response.content.decode()
    assert Workflow.objects.filter(pk=locked_workflow.pk).exists()
    assert not Workflow.objects.filter(pk=idle.pk).exists()


def test_a_workflow_whose_runs_ended_can_be_deleted(admin_client, locked_workflow):
    engine.executions_cancel_all(workflow=locked_workflow)
    admin_client.post(
        reverse("admin:workflows_app_workflow_delete", args=[locked_workflow.pk]), {"post": "yes"}
    )
    assert not Workflow.objects.filter(pk=locked_workflow.pk).exists()
    assert not Execution.objects.exists() and not Step.objects.exists()


def test_the_service_refuses_too(locked_workflow):
    with pytest.raises(WorkflowBusy, match="cannot be deleted"):
        workflow_delete(workflow=locked_workflow)
    assert Workflow.objects.filter(pk=locked_workflow.pk).exists()


def test_active_executions_can_only_be_cancelled_in_the_admin(admin_client, locked_workflow):
    run = Execution.objects.get(workflow=locked_workflow)
    url = reverse("admin:workflows_app_execution_delete", args=[run.pk])
    response = admin_client.post(url, {"post": "yes"}, follow=True)
    assert "active executions cannot be deleted, only cancelled" in response.content.decode()
    admin_client.post(
        reverse("admin:workflows_app_execution_changelist"),
        {"action": "delete_selected", "_selected_action": [run.pk], "post": "yes"},
    )
    assert Execution.objects.filter(pk=run.pk, status=Execution.WAITING).exists()
    engine.execution_cancel(execution=run)
    admin_client.post(url, {"post": "yes"})
    assert not Execution.objects.filter(pk=run.pk).exists()


def test_erasing_a_contact_cancels_its_runs_and_removes_its_traces(
    client, locked_workflow, template
):
    ann = Contact.objects.get(email="ann@example.com")
    start_runs(locked_workflow, ["bob@example.com"])
    Message.objects.create(
        idempotency_key="x", contact=ann, to_email=ann.email, from_email="a@b.c", subject="Hi"
    )
    assert StepRun.objects.filter(execution__contact=ann).exists()
    # Erasing takes one permission: deleting contacts.
    client.force_login(
        staff_user("privacy", "contacts_app.view_contact", "contacts_app.delete_contact")
    )
    url = reverse("admin:contacts_app_contact_delete", args=[ann.pk])
    page = client.get(url)
    assert page.status_code == 200 and "Are you sure" in page.content.decode()
    client.post(url, {"post": "yes"})

    assert not Contact.objects.filter(email="ann@example.com").exists()
    assert not Event.objects.filter(contact_id=ann.pk).exists()
    assert not Message.objects.filter(contact_id=ann.pk).exists()
    assert not Execution.objects.filter(contact_id=ann.pk).exists()
    assert not StepRun.objects.filter(execution__contact_id=ann.pk).exists()
    bob = Execution.objects.get(contact__email="bob@example.com")
    assert bob.status == Execution.WAITING  # nobody else is touched


def test_the_erase_service_reports_what_it_removed(locked_workflow):
    ann = Contact.objects.get(email="ann@example.com")
    removed = contact_erase(contact=ann, by="privacy-bot")
    assert removed["cancelled"] == 1
    assert removed["contact"] == 1 and removed["execution"] == 1 and removed["event"] == 1


def test_the_admin_registry_uses_the_erasing_contact_admin():
    from django.contrib.admin import ModelAdmin

    model_admin: ModelAdmin = site._registry[Contact]
    assert type(model_admin).__module__ == "workflows_app.admin"


# --- Cosmetic edits while locked ----------------------------------------------------------------


def test_a_locked_workflow_takes_new_names_and_positions_and_nothing_else(
    admin_client, locked_workflow
):
    from workflows_app.graph import WorkflowLocked

    version = version_of(locked_workflow)
    renamed = json.loads(json.dumps(WAIT_GRAPH))
    renamed["steps"][0]["name"] = "Wait two days"
    renamed["steps"][1]["position"] = {"x": 400, "y": 240}
    response = canvas_put(
        admin_client, locked_workflow, {"graph": renamed, "graph_version": version}
    )
    assert response.status_code == 200, response.content
    document = workflow_graph_document(locked_workflow)
    assert document["steps"][0]["name"] == "Wait two days"
    assert document["steps"][1]["position"] == {"x": 400.0, "y": 240.0}
    assert version_of(locked_workflow) > version

    structural = json.loads(json.dumps(renamed))
    structural["steps"][0]["config"]["amount"] = 3
    with pytest.raises(WorkflowLocked):
        workflow_save_graph(workflow=locked_workflow, document=structural)
    rewired = json.loads(json.dumps(renamed))
    rewired["steps"].append({"key": "extra", "type": "exit", "config": {}})
    rewired["transitions"].append({"from": "pause", "to": "extra"})
    rewired["transitions"] = [t for t in rewired["transitions"] if t["to"] != "done"]
    rewired["steps"] = [s for s in rewired["steps"] if s["key"] != "done"]
    response = canvas_put(
        admin_client,
        locked_workflow,
        {"graph": rewired, "graph_version": version_of(locked_workflow)},
    )
    assert response.status_code == 409 and response.json()["locked"] is True
    assert workflow_graph_document(locked_workflow) == document


# --- Finite positions, checked by the database --------------------------------------------------


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_the_database_refuses_a_non_finite_step_position(draft, value):
    steps = Step.objects.filter(workflow=draft, key="pause")
    message = refused(lambda: steps.update(position_x=value))
    if not math.isnan(value):  # (SQLite stores NaN as NULL: NOT NULL refuses it first)
        assert "step_position_finite" in message
    refused(lambda: steps.update(position_y=value))
    refused(lambda: Step.objects.create(workflow=draft, key="extra", type="exit", position_y=value))
    with connection.cursor() as cursor:
        refused(
            lambda: cursor.execute(
                "UPDATE workflows_app_step SET position_x = %s WHERE workflow_id = %s",
                [value, draft.pk],
            )
        )
    step = steps.get()
    assert math.isfinite(step.position_x) and math.isfinite(step.position_y)
    # Every finite number is still a position, the largest ones included.
    steps.update(position_x=sys.float_info.max, position_y=-sys.float_info.max)
    assert steps.values_list("position_x", "position_y").get() == (
        sys.float_info.max,
        -sys.float_info.max,
    )


def lift_the_position_check() -> None:
    """As before migration 0011, inside this test's transaction only (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # (ALTER TABLE waits for none)
        cursor.execute("ALTER TABLE workflows_app_step DROP CONSTRAINT step_position_finite")


def test_the_migration_moves_non_finite_positions_to_0(draft, pg_only):
    import importlib
    from types import SimpleNamespace

    from django.apps import apps

    migration = importlib.import_module("workflows_app.migrations.0011_finite_step_positions")
    lift_the_position_check()
    Step.objects.filter(workflow=draft, key="pause").update(position_x=math.inf, position_y=7.5)
    Step.objects.filter(workflow=draft, key="done").update(position_x=-1, position_y=math.nan)
    migration.finite_positions(apps, SimpleNamespace(connection=connection))
    rows = Step.objects.filter(workflow=draft).values_list("key", "position_x", "position_y")
    positions = {key: (x, y) for key, x, y in rows}
    assert positions == {"pause": (0, 7.5), "done": (-1, 0)}


def test_the_canvas_sends_strict_json_even_for_a_non_finite_position(admin_client, draft, pg_only):
    lift_the_position_check()
    Step.objects.filter(workflow=draft, key="pause").update(position_x=math.inf)
    Step.objects.filter(workflow=draft, key="done").update(position_y=math.nan)
    response = admin_client.get(reverse("admin:workflows_app_workflow_canvas", args=[draft.pk]))
    assert response.status_code == 200

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    state = json.loads(response.content, parse_constant=refuse)
    positions = {s["key"]: s["position"] for s in state["graph"]["steps"]}
    assert positions["pause"]["x"] == 0 and positions["done"]["y"] == 0
