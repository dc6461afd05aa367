"""Manual workflows: no event starts them; the engine's execution_start_manual (the API and the
admin action both use it), the file format, the workflow admin, the contacts list's action
"Start a manual workflow for these contacts", and the canvas's trigger."""

from __future__ import annotations

import json

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone

from contacts_app.models import Contact
from contacts_app.services import contact_upsert
from tests.canvas_data import staff_user
from tests.conftest import chain, drain
from workflows_app import admin_views, engine
from workflows_app.canvas import canvas_state
from workflows_app.files import DocumentError, document_export, document_import
from workflows_app.models import Execution, Workflow
from workflows_app.services import workflow_create

pytestmark = pytest.mark.django_db

DELAY = {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "days"}}
EXIT = {"key": "stop", "type": "exit", "config": {"reason": "done"}}
CONTACTS_URL = "/admin/contacts_app/contact/"
ACTION = "start_manual_workflow"
ACTION_LABEL = "Start a manual workflow for these contacts"


def manual(name="Follow-up", *, steps=(DELAY,), enabled=True, reentry=False) -> Workflow:
    all_steps, transitions = chain(*(dict(s) for s in steps))
    return workflow_create(
        name=name,
        trigger_type=Workflow.MANUAL,
        enabled=enabled,
        allow_reentry=reentry,
        graph={"steps": all_steps, "transitions": transitions},
    )


@pytest.fixture
def ann(db) -> Contact:
    return contact_upsert(email="ann@example.com")[0]


@pytest.fixture
def bob(db) -> Contact:
    return contact_upsert(email="bob@example.com")[0]


def start(workflow, contact, context=None) -> Execution:
    return engine.execution_start_manual(
        workflow=workflow, contact=contact, context=context or {}, now=timezone.now()
    )


# --- The engine ---------------------------------------------------------------------------------


def test_it_starts_a_run_due_now_with_the_context(ann):
    workflow = manual(
        steps=[{"key": "tag", "type": "update_contact", "config": {"set": {"stage": "x"}}}]
    )
    execution = start(workflow, ann, {"orderId": "A-1"})
    assert execution.status == Execution.RUNNING and execution.wake_at is not None
    assert execution.context == {"orderId": "A-1"} and execution.trigger is None
    assert drain() == 1
    execution.refresh_from_db()
    assert execution.status == Execution.COMPLETED


def test_a_disabled_workflow_refuses(ann):
    workflow = manual(enabled=False)
    with pytest.raises(engine.WorkflowDisabled, match="disabled"):
        start(workflow, ann)
    assert not Execution.objects.exists()


def test_a_workflow_disabled_since_it_was_read_refuses(ann):
    workflow = manual()
    Workflow.objects.filter(pk=workflow.pk).update(enabled=False)
    with pytest.raises(engine.WorkflowDisabled):
        start(workflow, ann)  # the in-memory copy still says enabled


def test_without_reentry_once_ever(ann):
    workflow = manual(steps=[EXIT])
    start(workflow, ann)
    drain()
    with pytest.raises(engine.ReentryRefused, match="re-entry is off"):
        start(workflow, ann)
    assert Execution.objects.count() == 1


def test_with_reentry_after_the_run_ended_only(ann):
    workflow = manual(reentry=True)
    first = start(workflow, ann)
    with pytest.raises(engine.ReentryRefused, match="active run"):
        start(workflow, ann)
    engine.execution_cancel(execution=first)
    second = start(workflow, ann)
    assert second.pk != first.pk and second.once is False


def test_the_database_decides_a_race(ann, monkeypatch):
    workflow = manual(reentry=True)
    monkeypatch.setattr(engine, "_reentry_refusal", lambda workflow, contact: None)
    start(workflow, ann)
    with pytest.raises(engine.ReentryRefused):
        start(workflow, ann)  # the Python check let it through; the unique index did not
    assert Execution.objects.count() == 1


def test_tracked_events_never_start_a_manual_workflow(track, ann):
    manual()
    for event in ("user.signup", "anything"):
        assert track.post({"event": event, "email": "ann@example.com"}).status_code == 200
    assert not Execution.objects.exists()
    ann.refresh_from_db()
    assert engine.executions_start(contact=ann, event=ann.events.first(), now=timezone.now()) == 0


def test_a_manual_workflow_has_no_event_and_an_event_one_needs_one(db):
    with pytest.raises(ValueError, match="no trigger event"):
        workflow_create(name="A", trigger_type=Workflow.MANUAL, trigger_event="x")
    with pytest.raises(ValueError, match="needs its trigger event"):
        workflow_create(name="B", trigger_type=Workflow.EVENT)


# --- The file format ----------------------------------------------------------------------------


def test_files_export_and_import_a_manual_workflow(db):
    manual(steps=[DELAY, EXIT])
    document = document_export()
    [entry] = document["workflows"]
    assert entry["trigger_type"] == "manual" and "trigger_event" not in entry
    Workflow.objects.all().delete()
    document_import(document)
    workflow = Workflow.objects.get()
    assert (workflow.trigger_type, workflow.trigger_event) == (Workflow.MANUAL, "")
    assert document_export() == document


def test_files_default_to_an_event_trigger(db):
    document_import(
        {
            "workflows": [
                {"name": "E", "trigger_event": "user.signup", "steps": [], "transitions": []}
            ]
        }
    )
    assert Workflow.objects.get().trigger_type == Workflow.EVENT
    assert "trigger_type" not in document_export()["workflows"][0]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"trigger_type": "schedule"}, "trigger_type: 'event' (the default) or 'manual'"),
        ({"trigger_type": "manual", "trigger_event": "x"}, "a manual workflow has none"),
        ({"trigger_type": "event"}, "trigger_event: required text"),
    ],
)
def test_files_refuse_a_wrong_trigger(db, entry, problem):
    document = {"workflows": [{"name": "W", "steps": [], "transitions": [], **entry}]}
    with pytest.raises(DocumentError) as caught:
        document_import(document)
    assert problem in str(caught.value)
    assert not Workflow.objects.exists()


def test_files_cannot_change_a_trigger_type(make_workflow):
    manual("W")
    make_workflow(*chain(dict(DELAY)), trigger="order.placed", name="E")
    for entry in (
        {"name": "W", "trigger_event": "user.signup"},
        {"name": "E", "trigger_type": "manual"},
    ):
        with pytest.raises(DocumentError, match="cannot change an existing workflow's trigger"):
            document_import({"workflows": [{**entry, "steps": [], "transitions": []}]})
    assert sorted(Workflow.objects.values_list("name", "trigger_type")) == [
        ("E", "event"),
        ("W", "manual"),
    ]


# --- The workflow admin -------------------------------------------------------------------------


@pytest.fixture
def admin_client(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def add_workflow(client, **fields):
    data = {"name": "New", "description": "", "trigger_type": "event", "trigger_event": ""}
    data.update(fields)
    return client.post("/admin/workflows_app/workflow/add/", data)


def test_the_add_form_creates_a_manual_workflow_without_an_event(admin_client):
    response = add_workflow(admin_client, trigger_type="manual")
    assert response.status_code == 302, response.content.decode()[:3000]
    workflow = Workflow.objects.get()
    assert (workflow.trigger_type, workflow.trigger_event) == (Workflow.MANUAL, "")


def test_the_add_form_refuses_a_manual_workflow_with_an_event(admin_client):
    response = add_workflow(admin_client, trigger_type="manual", trigger_event="user.signup")
    assert response.status_code == 200
    assert "A manual workflow has no trigger event" in response.content.decode()
    assert not Workflow.objects.exists()


def test_the_add_form_needs_an_event_for_an_event_trigger(admin_client):
    response = add_workflow(admin_client, trigger_type="event")
    assert response.status_code == 200
    assert "An event trigger needs the event" in response.content.decode()
    assert not Workflow.objects.exists()
    assert add_workflow(admin_client, trigger_event="user.signup").status_code == 302
    assert Workflow.objects.get().trigger_type == Workflow.EVENT


def test_the_trigger_type_is_fixed_once_created(admin_client):
    workflow = manual()
    url = f"/admin/workflows_app/workflow/{workflow.pk}/change/"
    response = admin_client.post(
        url,
        {
            "name": "Renamed",
            "description": "",
            "trigger_type": "event",
            "trigger_event": "user.signup",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    workflow.refresh_from_db()
    assert workflow.name == "Renamed"
    assert (workflow.trigger_type, workflow.trigger_event) == (Workflow.MANUAL, "")


def test_the_workflow_list_says_manual(admin_client, make_workflow):
    manual("Hand-started")
    make_workflow(*chain(dict(DELAY)), trigger="order.placed", name="Orders")
    html = admin_client.get("/admin/workflows_app/workflow/").content.decode()
    row = html[html.index("Hand-started") :]
    assert "Manual" in row[: row.index("</tr>")]
    row = html[html.index(">Orders<") :]
    assert "order.placed" in row[: row.index("</tr>")]
    page = admin_client.get(
        f"/admin/workflows_app/workflow/{Workflow.objects.get(name='Hand-started').pk}/change/"
    )
    assert "Runs can be started for contacts" in page.content.decode()


# --- The canvas ---------------------------------------------------------------------------------


def test_the_canvas_knows_the_trigger_type(make_workflow):
    assert canvas_state(manual())["workflow"]["trigger_type"] == "manual"
    event = make_workflow(*chain(dict(DELAY)), trigger="order.placed", name="Orders")
    state = canvas_state(event)["workflow"]
    assert (state["trigger_type"], state["trigger_event"]) == ("event", "order.placed")


# --- The contacts list's action -----------------------------------------------------------------


def client_with(*perms: str) -> Client:
    client = Client()
    client.force_login(staff_user("ops", *perms))
    return client


ALLOWED = ("contacts_app.view_contact", "workflows_app.change_workflow")


def post_action(client, contacts, **fields):
    data = {"action": ACTION, "_selected_action": [str(c.pk) for c in contacts], "index": "0"}
    data.update(fields)
    return client.post(CONTACTS_URL, data)


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_the_action_asks_for_the_workflow_then_starts_runs(ann, bob):
    workflow = manual()
    manual("Off", enabled=False)
    client = client_with(*ALLOWED)
    assert ACTION_LABEL in client.get(CONTACTS_URL).content.decode()
    page = post_action(client, [ann, bob])
    assert page.status_code == 200
    html = page.content.decode()
    assert "ann@example.com" in html and "bob@example.com" in html
    assert "Follow-up" in html and ">Off<" not in html  # only enabled manual workflows
    assert not Execution.objects.exists()

    done = post_action(
        client,
        [ann, bob],
        apply="yes",
        workflow=str(workflow.pk),
        context=json.dumps({"orderId": "A-1"}),
    )
    assert done.status_code == 302
    runs = Execution.objects.filter(workflow=workflow)
    assert sorted(runs.values_list("contact__email", flat=True)) == [
        "ann@example.com",
        "bob@example.com",
    ]
    assert all(r.context == {"orderId": "A-1"} and r.trigger is None for r in runs)
    assert "Started 2 run(s) of 'Follow-up'." in messages_of(done)


def test_the_action_starts_at_most_a_bounded_number_of_runs(ann, bob, monkeypatch):
    workflow = manual()
    monkeypatch.setattr(admin_views, "START_MAX", 1)
    client = client_with(*ALLOWED)
    done = post_action(client, [ann, bob], apply="yes", workflow=str(workflow.pk), context="")
    assert done.status_code == 302
    assert any("at most 1 at a time" in n for n in messages_of(done))
    assert not Execution.objects.exists()


def test_the_action_reports_refusals(ann, bob):
    workflow = manual()
    start(workflow, ann)
    client = client_with(*ALLOWED)
    done = post_action(client, [ann, bob], apply="yes", workflow=str(workflow.pk), context="")
    assert done.status_code == 302
    notes = messages_of(done)
    assert "Started 1 run(s) of 'Follow-up'." in notes
    assert any(n.startswith("Refused 1:") and "ann@example.com" in n for n in notes)
    assert Execution.objects.count() == 2


@pytest.mark.parametrize(
    ("context", "problem"),
    [
        ("[1, 2]", "must be a JSON object"),
        ('{"a": NaN}', "Not valid JSON"),
        ("{oops", "Not valid JSON"),
    ],
)
def test_the_action_refuses_a_bad_context(ann, context, problem):
    workflow = manual()
    client = client_with(*ALLOWED)
    page = post_action(client, [ann], apply="yes", workflow=str(workflow.pk), context=context)
    assert page.status_code == 200
    assert problem in page.content.decode()
    assert not Execution.objects.exists()


def test_the_action_refuses_an_event_or_disabled_workflow(ann, make_workflow):
    event = make_workflow(*chain(dict(DELAY)), trigger="order.placed", name="Orders")
    off = manual("Off", enabled=False)
    manual("On")
    client = client_with(*ALLOWED)
    for workflow in (event, off):
        page = post_action(client, [ann], apply="yes", workflow=str(workflow.pk))
        assert page.status_code == 200
        assert "Select a valid choice" in page.content.decode()
    assert not Execution.objects.exists()


def test_the_action_says_when_no_workflow_can_be_started(ann):
    page = post_action(client_with(*ALLOWED), [ann])
    assert "No workflow can be started by hand" in page.content.decode()


@pytest.mark.parametrize(
    "perms",
    [
        ("contacts_app.view_contact",),
        ("contacts_app.view_contact", "contacts_app.change_contact", "workflows_app.view_workflow"),
    ],
)
def test_the_action_needs_the_change_workflow_permission(ann, perms):
    workflow = manual()
    client = client_with(*perms)
    listing = client.get(CONTACTS_URL)
    assert listing.status_code == 200
    assert ACTION_LABEL not in listing.content.decode()
    post_action(client, [ann], apply="yes", workflow=str(workflow.pk))
    assert not Execution.objects.exists()


def test_without_viewing_contacts_there_is_no_list_at_all(ann):
    workflow = manual()
    client = client_with("workflows_app.change_workflow")
    assert client.get(CONTACTS_URL).status_code == 403
    response = post_action(client, [ann], apply="yes", workflow=str(workflow.pk))
    assert response.status_code == 403
    assert not Execution.objects.exists()


def test_the_action_itself_checks_the_permission(ann, rf, admin_user):
    from django.contrib import admin
    from django.core.exceptions import PermissionDenied

    model_admin = admin.site._registry[Contact]
    request = rf.post(CONTACTS_URL)
    request.user = staff_user("viewer", "contacts_app.view_contact")
    with pytest.raises(PermissionDenied):
        model_admin.start_manual_workflow(request, Contact.objects.all())
    assert not Execution.objects.exists()
