"""The dry run's two doors: POST /v1/workflows/<id>/simulate (secret key) and the canvas's
POST /admin/workflows_app/workflow/<id>/canvas/simulate/ (session, CSRF, permissions)."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from contacts_app.services import contact_upsert
from tests.canvas_data import staff_user
from workflows_app.models import Execution

VIEW_WORKFLOW = "workflows_app.view_workflow"
VIEW_CONTACT = "contacts_app.view_contact"

BODY = {
    "contact": {"data": {"firstName": "Ann"}},
    "trigger": {"data": {"orderId": "A-1"}},
    "events": [{"name": "paid", "after": 120, "data": {"total": 42}}],
}


@pytest.fixture
def workflow(make_workflow, template):
    return make_workflow(
        [
            {"key": "welcome", "type": "send_email", "config": {"template": "Welcome"}},
            {
                "key": "paid",
                "type": "wait_for_event",
                "config": {"event": "paid", "timeout": {"amount": 1, "unit": "hours"}},
            },
            {"key": "done", "type": "exit", "config": {"reason": "paid"}},
        ],
        [
            {"from": "trigger", "to": "welcome"},
            {"from": "welcome", "to": "paid"},
            {"from": "paid", "branch": "event", "to": "done"},
        ],
        enabled=False,
    )


@pytest.fixture
def ann(db):
    return contact_upsert(email="ann@example.com", data={"firstName": "Ann", "plan": "pro"})[0]


# --- /v1 ----------------------------------------------------------------------------------


def post(workflow_id, body, key=None, *, raw=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    return Client().post(
        f"/v1/workflows/{workflow_id}/simulate",
        data=raw if raw is not None else json.dumps(body),
        content_type="application/json",
        **headers,
    )


def test_it_answers_the_dry_run(workflow, secret_key):
    response = post(workflow.pk, BODY, secret_key)
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert [(p["step"], p["branch"], p["at"]) for p in data["path"]] == [
        ("welcome", "next", 0),
        ("paid", "event", 0),
        ("done", None, 120),
    ]
    assert data["status"] == Execution.EXITED
    assert data["exit_reason"] == "paid"
    assert data["emails"][0]["subject"] == "Welcome, Ann"
    assert data["context"] == {"orderId": "A-1", "total": 42, "paid": {"total": 42}}
    assert data["contact"]["email"] == "someone@example.com"
    assert Execution.objects.count() == 0


def test_it_runs_for_a_stored_contact(workflow, secret_key, ann):
    response = post(workflow.pk, {"contact": {"email": "ann@example.com"}}, secret_key)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["contact"]["data"] == {"firstName": "Ann", "plan": "pro"}
    assert data["status"] == Execution.COMPLETED  # the wait timed out: no `timeout` transition


def test_it_needs_a_secret_key(workflow, public_key):
    assert post(workflow.pk, BODY).status_code == 401
    assert post(workflow.pk, BODY, "sk_wrong").status_code == 401
    refused = post(workflow.pk, BODY, public_key)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"


def test_an_unknown_workflow_is_404(db, secret_key):
    assert post(999999, BODY, secret_key).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"contact": {"email": "nobody@example.com"}}, "contact.email"),
        ({"contact": {"data": "x"}}, "contact.data"),
        ({**BODY, "events": [{"name": "paid", "after": -5}]}, "events.0.after"),
        ({**BODY, "events": [{"name": "paid", "after": 1, "data": []}]}, "events.0.data"),
        ({**BODY, "events": [{"name": "paid"}] * 101}, "events"),
        ({**BODY, "trigger": {"data": 1}}, "trigger.data"),
        ({"events": []}, "contact"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(workflow, secret_key, body, field):
    response = post(workflow.pk, body, secret_key)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["fields"], error


def test_json_the_api_refuses_is_a_400(workflow, secret_key):
    response = post(workflow.pk, None, secret_key, raw='{"contact": {"data": {"a": NaN}}}')
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_the_body_must_be_an_object(workflow, secret_key):
    response = post(workflow.pk, [1, 2], secret_key)
    assert response.status_code == 400
    assert "body" in response.json()["error"]["fields"]


# --- The admin's endpoint -----------------------------------------------------------------


def admin_url(workflow_id):
    return reverse("admin:workflows_app_workflow_canvas_simulate", args=[workflow_id])


def client_for(*perms, csrf=False):
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(staff_user("staff", *perms))
    return client


def admin_post(client, workflow_id, body, **extra):
    return client.post(
        admin_url(workflow_id), data=json.dumps(body), content_type="application/json", **extra
    )


def test_the_admin_answers_a_viewer_for_a_made_up_contact(workflow):
    client = client_for(VIEW_WORKFLOW)
    response = admin_post(client, workflow.pk, BODY)
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["ok"] is True
    assert data["status"] == Execution.EXITED
    assert data["emails"][0]["to"] == "someone@example.com"


def test_a_stored_contact_needs_the_contact_view_permission(workflow, ann):
    body = {"contact": {"email": "ann@example.com"}}
    viewer = client_for(VIEW_WORKFLOW)
    refused = admin_post(viewer, workflow.pk, body)
    assert refused.status_code == 403
    assert refused.json()["ok"] is False
    assert "Ann" not in refused.content.decode()
    # Refused the same for an address that names no one: the answer tells nothing of who
    # exists.
    nobody = {"contact": {"email": "nobody@example.com"}}
    assert admin_post(viewer, workflow.pk, nobody).status_code == 403


def test_with_the_contact_permission_a_stored_contact_runs(workflow, ann):
    client = client_for(VIEW_WORKFLOW, VIEW_CONTACT)
    response = admin_post(client, workflow.pk, {"contact": {"email": "ann@example.com"}})
    assert response.status_code == 200
    assert response.json()["contact"]["data"]["plan"] == "pro"
    unknown = admin_post(client, workflow.pk, {"contact": {"email": "nobody@example.com"}})
    assert unknown.status_code == 400
    assert "contact.email" in unknown.json()["fields"]


def test_the_admin_needs_the_workflow_view_permission(workflow):
    response = admin_post(client_for(VIEW_CONTACT), workflow.pk, BODY)
    assert response.status_code == 403
    assert response.json()["ok"] is False


def test_the_admin_refuses_anonymous_users_and_get(workflow):
    anonymous = Client().post(admin_url(workflow.pk), data="{}", content_type="application/json")
    assert anonymous.status_code == 302
    assert "/login/" in anonymous["Location"]
    assert client_for(VIEW_WORKFLOW).get(admin_url(workflow.pk)).status_code == 405


def test_the_admin_checks_the_csrf_token(workflow):
    client = client_for(VIEW_WORKFLOW, csrf=True)
    assert admin_post(client, workflow.pk, BODY).status_code == 403
    client.get(reverse("admin:index"))  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    assert admin_post(client, workflow.pk, BODY, HTTP_X_CSRFTOKEN=token).status_code == 200


def test_the_admin_names_the_field_at_fault(workflow):
    client = client_for(VIEW_WORKFLOW)
    response = admin_post(client, workflow.pk, {**BODY, "events": [{"name": "x", "after": "soon"}]})
    assert response.status_code == 400
    assert response.json()["fields"] == {"events.0.after": "Seconds from the start: a number."}
    broken = client.post(admin_url(workflow.pk), data="{", content_type="application/json")
    assert broken.status_code == 400
    assert broken.json()["ok"] is False


def test_an_unknown_workflow_is_404_in_the_admin(db):
    assert admin_post(client_for(VIEW_WORKFLOW), 999999, BODY).status_code == 404


def test_the_admin_dry_run_writes_nothing(workflow, ann):
    before = Execution.objects.count()
    client = client_for(VIEW_WORKFLOW, VIEW_CONTACT)
    body = {"contact": {"email": "ann@example.com"}, "events": [{"name": "paid", "after": 5}]}
    assert admin_post(client, workflow.pk, body).status_code == 200
    assert Execution.objects.count() == before
    ann.refresh_from_db()
    assert ann.data == {"firstName": "Ann", "plan": "pro"}
