"""The canvas's JSON endpoints and the Executions tab's server side, without a browser:
permissions, locking, the validation error shape, cancelling."""

import json

import pytest
from django.urls import reverse

from tests.canvas_data import WAIT_GRAPH, staff_user, start_runs, workflow_with_waiting_runs
from workflows_app.canvas import canvas_palette
from workflows_app.graph import workflow_graph_document
from workflows_app.models import Execution, Workflow
from workflows_app.services import workflow_create
from workflows_app.steps import STEP_TYPES

pytestmark = pytest.mark.django_db


def canvas_url(workflow):
    return reverse("admin:workflows_app_workflow_canvas", args=[workflow.pk])


def put(client, workflow, graph, **extra):
    # The version the editor started from: the current one unless a test says otherwise.
    extra.setdefault("graph_version", Workflow.objects.get(pk=workflow.pk).graph_version)
    return client.put(
        canvas_url(workflow),
        data=json.dumps({"graph": graph, **extra}),
        content_type="application/json",
    )


@pytest.fixture
def draft(db):
    return workflow_create(name="Draft", trigger_event="user.signup")


def test_it_serves_graph_palette_and_counts(admin_client):
    workflow = workflow_with_waiting_runs(emails=["ann@example.com", "bob@example.com"])
    body = admin_client.get(canvas_url(workflow)).json()
    assert body["graph"] == workflow_graph_document(workflow)
    assert [k["type"] for k in body["palette"]] == list(STEP_TYPES)
    wait = next(k for k in body["palette"] if k["type"] == "wait_for_event")
    assert wait["branches"] == ["event", "timeout"]
    assert wait["branch_requires"] == {"timeout": "timeout"}
    assert body["counts"]["pause"] == {"waiting": 2, "passed": 0, "failed": 0, "exited": 0}
    assert body["counts"]["trigger"] == {"entered": 2}
    assert body["lock"]["locked"] is True and body["lock"]["active"] == 2
    assert "cancel them all" in body["lock"]["message"]
    assert body["can_change"] is True


def test_it_agrees_with_branches_for_about_conditional_ports():
    for kind in STEP_TYPES.values():
        for branch, field in kind.branch_requires.items():
            without = kind.parse_config({"event": "x"})
            with_field = kind.parse_config({"event": "x", field: {"amount": 1, "unit": "days"}})
            assert branch not in kind.branches_for(without)
            assert branch in kind.branches_for(with_field)
    assert {k["type"] for k in canvas_palette()} == set(STEP_TYPES)


def test_it_saves_the_whole_graph(admin_client, draft):
    response = put(admin_client, draft, WAIT_GRAPH, graph_version=draft.graph_version)
    assert response.status_code == 200, response.content
    assert response.json()["ok"] is True
    draft.refresh_from_db()
    assert workflow_graph_document(draft)["transitions"] == [
        {"from": "trigger", "to": "pause", "branch": "next"},
        {"from": "pause", "to": "done", "branch": "next"},
    ]
    assert draft.graph_version > 0
    assert response.json()["workflow"]["graph_version"] == draft.graph_version
    assert draft.graph_saved_by == "admin"


def test_it_returns_validation_errors_per_step(admin_client, draft):
    graph = {
        "steps": [
            {"key": "wait", "type": "delay", "config": {"amount": 0, "unit": "days"}},
            {"key": "mail", "type": "send_email", "config": {"template": "Nope"}},
            {"key": "out", "type": "exit", "config": {}},
        ],
        "transitions": [
            {"from": "trigger", "to": "wait"},
            {"from": "out", "to": "mail"},
        ],
    }
    response = put(admin_client, draft, graph)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert {"step", "field", "message"} <= set(errors[0])
    by_step = {(e["step"], e["field"]) for e in errors}
    assert ("wait", "config.amount") in by_step
    assert ("mail", "config.template") in by_step
    assert any(e["step"] == "out" and "no outgoing" in e["message"] for e in errors)
    assert workflow_graph_document(draft)["steps"] == []


def test_it_refuses_a_save_while_runs_are_active(admin_client):
    workflow = workflow_with_waiting_runs(emails=["ann@example.com"])
    before = workflow_graph_document(workflow)
    changed = json.loads(json.dumps(WAIT_GRAPH))
    changed["steps"][0]["config"]["amount"] = 5
    response = put(admin_client, workflow, changed)
    assert response.status_code == 409
    assert response.json()["locked"] is True
    assert "1 active execution" in response.json()["message"]
    assert workflow_graph_document(workflow) == before


def test_it_refuses_a_stale_graph_version(admin_client, draft):
    assert put(admin_client, draft, WAIT_GRAPH, graph_version=0).status_code == 200
    response = put(admin_client, draft, {"steps": [], "transitions": []}, graph_version=0)
    assert response.status_code == 409 and response.json()["conflict"] is True


def test_it_needs_the_change_permission_to_save(client, draft):
    client.force_login(staff_user("viewer", "workflows_app.view_workflow"))
    assert client.get(canvas_url(draft)).json()["can_change"] is False
    assert put(client, draft, WAIT_GRAPH).status_code == 403
    assert workflow_graph_document(draft)["steps"] == []


def test_it_rejects_bad_json(admin_client, draft):
    response = admin_client.put(canvas_url(draft), data="{", content_type="application/json")
    assert response.status_code == 400


def test_it_suggests_fields_from_contacts_and_trigger_events(admin_client):
    workflow = workflow_with_waiting_runs(emails=["ann@example.com"])
    fields = admin_client.get(
        reverse("admin:workflows_app_workflow_canvas_fields", args=[workflow.pk])
    ).json()["fields"]
    assert {"contact.email", "contact.subscribed", "contact.plan", "event.total"} <= set(fields)


def test_it_lists_filters_and_pages_executions(admin_client):
    workflow = workflow_with_waiting_runs(emails=[f"u{i:03}@example.com" for i in range(60)])
    url = reverse("admin:workflows_app_workflow_executions", args=[workflow.pk])
    first = admin_client.get(url)
    assert first.status_code == 200
    assert len(first.context["rows"]) == 50 and first.context["older_url"]
    second = admin_client.get(url + first.context["older_url"])
    assert len(second.context["rows"]) == 10 and not second.context["older_url"]
    seen = {r["execution"].pk for r in first.context["rows"] + second.context["rows"]}
    assert len(seen) == 60
    newer = admin_client.get(url + second.context["newer_url"])
    assert [r["execution"].pk for r in newer.context["rows"]] == [
        r["execution"].pk for r in first.context["rows"]
    ]
    assert admin_client.get(url, {"q": "u007"}).context["rows"][0]["waiting"] == "timer"
    assert len(admin_client.get(url, {"status": "COMPLETED"}).context["rows"]) == 0


def test_it_cancels_one_and_all_with_the_permission(admin_client):
    workflow = workflow_with_waiting_runs(emails=["a@example.com", "b@example.com", "c@x.com"])
    one = Execution.objects.filter(workflow=workflow).first()
    url = reverse("admin:workflows_app_workflow_execution_cancel", args=[workflow.pk, one.pk])
    assert "cancels <strong>1</strong>" in admin_client.get(url).content.decode()
    admin_client.post(url)
    one.refresh_from_db()
    assert one.status == Execution.CANCELLED
    all_url = reverse("admin:workflows_app_workflow_cancel_all", args=[workflow.pk])
    assert "cancels <strong>2</strong>" in admin_client.get(all_url).content.decode()
    admin_client.post(all_url)
    assert set(Execution.objects.filter(workflow=workflow).values_list("status", flat=True)) == {
        Execution.CANCELLED
    }


def test_it_forbids_cancelling_without_the_permission(client):
    workflow = workflow_with_waiting_runs(emails=["a@example.com"])
    client.force_login(
        staff_user("ops", "workflows_app.view_workflow", "workflows_app.change_workflow")
    )
    execution = Execution.objects.get(workflow=workflow)
    page = client.get(reverse("admin:workflows_app_workflow_executions", args=[workflow.pk]))
    html = page.content.decode()
    # The run is listed (its contact by id: this user may not view contacts).
    assert page.status_code == 200 and f"contact #{execution.contact_id}" in html
    assert 'class="button wf-cancel"' not in html and 'id="wf-cancel-all"' not in html
    one = reverse("admin:workflows_app_workflow_execution_cancel", args=[workflow.pk, execution.pk])
    assert client.get(one).status_code == 403
    assert client.post(one).status_code == 403
    everything = reverse("admin:workflows_app_workflow_cancel_all", args=[workflow.pk])
    assert client.post(everything).status_code == 403
    execution.refresh_from_db()
    assert execution.status == Execution.WAITING


def test_it_shows_an_executions_history(admin_client):
    workflow = workflow_with_waiting_runs(emails=["a@example.com"])
    execution = Execution.objects.get(workflow=workflow)
    page = admin_client.get(
        reverse("admin:workflows_app_workflow_execution", args=[workflow.pk, execution.pk])
    ).content.decode()
    assert "Pause" in page and "Waiting" in page and "a@example.com" in page
    assert "&quot;total&quot;: 42" in page


def test_it_enables_and_disables_stating_the_effect(admin_client):
    workflow = workflow_with_waiting_runs(emails=["a@example.com"])
    url = reverse("admin:workflows_app_workflow_enabled", args=[workflow.pk])
    response = admin_client.post(url, {"enabled": "false"}, follow=True)
    assert not Workflow.objects.get(pk=workflow.pk).enabled
    assert "no new executions start" in response.content.decode()
    start_runs(workflow, ["late@example.com"])
    assert not Execution.objects.filter(contact__email="late@example.com").exists()
    admin_client.post(url, {"enabled": "true"})
    assert Workflow.objects.get(pk=workflow.pk).enabled


def test_the_workflow_page_shows_the_webhook_signing_secret(db, django_user_model):
    from django.test import Client

    from workflows_app.services import workflow_create

    workflow = workflow_create(name="Signed", trigger_event="e")
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", "r@example.com", "pw"))
    page = client.get(f"/admin/workflows_app/workflow/{workflow.pk}/change/")
    assert page.status_code == 200
    assert workflow.signing_secret.startswith("whsec_")
    assert workflow.signing_secret in page.content.decode()
