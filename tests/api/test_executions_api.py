"""Executions over the API: POST/GET /v1/workflows/<id>/executions, GET/DELETE
/v1/workflows/<id>/executions/<execId> and POST .../executions/cancel-all."""

from __future__ import annotations

import json
import uuid

import pytest
from django.core import mail
from django.test import Client

from contacts_app.models import Contact
from contacts_app.services import contact_upsert
from templates_app.models import Template
from tests.conftest import chain, drain
from workflows_app import engine
from workflows_app.models import Execution, StepRun, Workflow
from workflows_app.services import workflow_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _mail(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def call(method, path, key=None, body=None, *, raw=None, content_type="application/json"):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    client = Client()
    if body is None and raw is None:
        return getattr(client, method)(path, **headers)
    data = raw if raw is not None else json.dumps(body)
    return getattr(client, method)(path, data=data, content_type=content_type, **headers)


def manual(name="Orders", *, steps=None, enabled=True, reentry=False) -> Workflow:
    steps = steps or [{"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "days"}}]
    all_steps, transitions = chain(*steps)
    return workflow_create(
        name=name,
        trigger_type=Workflow.MANUAL,
        enabled=enabled,
        allow_reentry=reentry,
        graph={"steps": all_steps, "transitions": transitions},
    )


@pytest.fixture
def ann(db) -> Contact:
    contact, _ = contact_upsert(email="ann@example.com", data={"firstName": "Ann"})
    return contact


@pytest.fixture
def bob(db) -> Contact:
    contact, _ = contact_upsert(email="bob@example.com")
    return contact


def url(workflow, *rest) -> str:
    pk = workflow.pk if isinstance(workflow, Workflow) else workflow
    return "/".join([f"/v1/workflows/{pk}/executions", *map(str, rest)])


def start(key, workflow, contact, context=None):
    body = {"contactId": str(contact.pk)}
    if context is not None:
        body["context"] = context
    return call("post", url(workflow), key, body)


def error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code, body
    assert body["error"]["statusCode"] == status
    return body["error"]


# --- Starting -----------------------------------------------------------------------------------


def test_it_starts_a_manual_run_with_its_context(secret_key, ann):
    Template.objects.create(
        name="Receipt",
        type=Template.TRANSACTIONAL,
        subject="Order {{ orderId }} for {{ firstName }}",
        html="<p>{{ event.orderId }}</p>",
    )
    workflow = manual(
        steps=[{"key": "mail", "type": "send_email", "config": {"template": "Receipt"}}]
    )
    response = start(secret_key, workflow, ann, {"orderId": "A-1"})
    assert response.status_code == 201, response.content
    data = response.json()["data"]
    assert response.json()["success"] is True
    execution = Execution.objects.get()
    assert data["id"] == execution.pk
    assert data["workflowId"] == workflow.pk
    assert data["contactId"] == str(ann.pk)
    assert data["email"] == "ann@example.com"
    assert data["status"] == "RUNNING"
    assert data["context"] == {"orderId": "A-1"}
    assert data["triggerEventId"] is None and data["currentStep"] is None
    assert data["finishedAt"] is None and data["exitReason"] == "" and data["error"] == ""
    assert set(data) >= {"startedAt", "updatedAt", "wakeAt", "waitingFor"}
    assert execution.trigger is None and execution.once is True
    # Due now: the clock hands it to a worker, which sends the email with the context.
    assert drain() == 1
    execution.refresh_from_db()
    assert execution.status == Execution.COMPLETED
    assert [m.subject for m in mail.outbox] == ["Order A-1 for Ann"]
    assert "A-1" in mail.outbox[0].alternatives[0][0]


def test_it_finds_the_contact_by_email_in_any_case(secret_key, ann):
    workflow = manual()
    response = call("post", url(workflow), secret_key, {"email": " Ann@Example.COM "})
    assert response.status_code == 201, response.content
    assert response.json()["data"]["contactId"] == str(ann.pk)
    assert response.json()["data"]["context"] == {}


def test_it_starts_an_event_workflow_too(secret_key, ann, make_workflow):
    steps, transitions = chain(
        {"key": "wait", "type": "delay", "config": {"amount": 1, "unit": "days"}}
    )
    workflow = make_workflow(steps, transitions, trigger="order.placed")
    response = start(secret_key, workflow, ann, None)
    assert response.status_code == 201
    assert Execution.objects.get().trigger is None


def test_a_null_context_is_empty(secret_key, ann):
    response = start(secret_key, manual(), ann, None)
    assert response.status_code == 201
    response = call(
        "post", url(manual("Other")), secret_key, {"contactId": str(ann.pk), "context": None}
    )
    assert response.status_code == 201
    assert response.json()["data"]["context"] == {}


def test_a_disabled_workflow_is_a_409_and_starts_nothing(secret_key, ann):
    workflow = manual(enabled=False)
    err = error(start(secret_key, workflow, ann, {}), 409, "workflow_disabled")
    assert "disabled" in err["message"]
    assert not Execution.objects.exists()


def test_without_reentry_a_contact_enters_once(secret_key, ann):
    workflow = manual(steps=[{"key": "stop", "type": "exit", "config": {}}])
    assert start(secret_key, workflow, ann).status_code == 201
    drain()
    assert Execution.objects.get().status == Execution.EXITED
    err = error(start(secret_key, workflow, ann), 409, "reentry_refused")
    assert "re-entry is off" in err["message"] and "ann@example.com" in err["message"]
    assert Execution.objects.count() == 1


def test_with_reentry_never_two_active_runs(secret_key, ann):
    workflow = manual(reentry=True)
    first = start(secret_key, workflow, ann)
    assert first.status_code == 201
    err = error(start(secret_key, workflow, ann), 409, "reentry_refused")
    assert f"#{first.json()['data']['id']}" in err["message"] and "active run" in err["message"]
    assert Execution.objects.count() == 1
    # Once that run ended, the contact may enter again.
    call("delete", url(workflow, first.json()["data"]["id"]), secret_key)
    assert start(secret_key, workflow, ann).status_code == 201
    assert Execution.objects.count() == 2


def test_a_concurrent_start_that_wins_the_entry_is_a_409(secret_key, ann, monkeypatch):
    workflow = manual()
    original = engine._reentry_refusal
    calls = []

    def late(workflow, contact):
        # The first check passes; another start then takes the entry before our insert.
        calls.append(1)
        if len(calls) == 1:
            Execution.objects.create(workflow=workflow, contact=contact, once=True)
            return None
        return original(workflow, contact)

    monkeypatch.setattr(engine, "_reentry_refusal", late)
    error(start(secret_key, workflow, ann), 409, "reentry_refused")
    # The stand-in for the other start ran inside this start's transaction (the workflow row
    # is locked throughout), so it went with the rollback: neither run exists.
    assert Execution.objects.count() == 0


def test_an_unknown_contact_is_a_404_naming_it(secret_key, db):
    workflow = manual()
    missing = uuid.uuid4()
    err = error(
        call("post", url(workflow), secret_key, {"contactId": str(missing)}), 404, "not_found"
    )
    assert str(missing) in err["message"] and "contactId" in err["fields"]
    err = error(
        call("post", url(workflow), secret_key, {"email": "nobody@example.com"}), 404, "not_found"
    )
    assert "email" in err["fields"]
    assert not Execution.objects.exists() and not Contact.objects.exists()


@pytest.mark.parametrize("pk", ["999999", str(2**63), "99999999999999999999999"])
def test_an_unknown_workflow_is_a_404(secret_key, ann, pk):
    err = error(call("post", url(pk), secret_key, {"contactId": str(ann.pk)}), 404, "not_found")
    assert "workflow" in err["message"]
    error(call("get", url(pk), secret_key), 404, "not_found")
    error(call("get", url(pk, 1), secret_key), 404, "not_found")
    error(call("delete", url(pk, 1), secret_key), 404, "not_found")
    error(call("post", url(pk, "cancel-all"), secret_key), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "contactId"),
        ({"context": {}}, "contactId"),
        (
            {"contactId": "00000000-0000-0000-0000-000000000000", "email": "a@example.com"},
            "contactId",
        ),
        ({"contactId": "not-a-uuid"}, "contactId"),
        ({"contactId": 12}, "contactId"),
        ({"email": "not an email"}, "email"),
        ({"email": ["ann@example.com"]}, "email"),
        ({"email": "ann\u0000@example.com"}, "email"),
        ({"email": ""}, "email"),
        ({"contactId": None}, "contactId"),
        ({"email": "ann@example.com", "context": [1, 2]}, "context"),
        ({"email": "ann@example.com", "context": "orderId=A-1"}, "context"),
        ({"email": "ann@example.com", "context": {"note": "nul\u0000here"}}, "context"),
        ([{"email": "ann@example.com"}], "non_field_errors"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(secret_key, ann, body, field):
    err = error(call("post", url(manual()), secret_key, body), 400, "validation_error")
    assert field in err["fields"], err
    assert not Execution.objects.exists()


def test_a_context_over_the_contact_data_cap_is_refused(secret_key, ann, settings):
    settings.CONTACT_MAX_DATA_BYTES = 100
    body = {"contactId": str(ann.pk), "context": {"blob": "x" * 200}}
    err = error(call("post", url(manual()), secret_key, body), 400, "validation_error")
    assert "100 bytes" in err["fields"]["context"]
    assert not Execution.objects.exists()


@pytest.mark.parametrize(
    "raw",
    ['{"email": "ann@example.com", "context": {"n": NaN}}', '{"email":', "[" * 100 + "]" * 100],
)
def test_malformed_json_is_a_400(secret_key, ann, raw):
    response = call("post", url(manual()), secret_key, raw=raw)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert not Execution.objects.exists()


def test_a_body_that_is_not_json_is_a_415(secret_key, ann):
    response = call("post", url(manual()), secret_key, raw="email=ann", content_type="text/plain")
    error(response, 415, "unsupported_media_type")


def test_an_oversized_body_is_a_413(secret_key, ann, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = {"contactId": str(ann.pk), "context": {"blob": "x" * 5000}}
    error(call("post", url(manual()), secret_key, body), 413, "payload_too_large")
    assert not Execution.objects.exists()


# --- Keys ---------------------------------------------------------------------------------------


def _endpoints(workflow, execution_id):
    return [
        ("get", url(workflow)),
        ("post", url(workflow)),
        ("get", url(workflow, execution_id)),
        ("delete", url(workflow, execution_id)),
        ("post", url(workflow, "cancel-all")),
    ]


def test_every_endpoint_needs_a_secret_key(secret_key, public_key, ann):
    workflow = manual()
    execution = engine.execution_start_manual(
        workflow=workflow, contact=ann, context={}, now=ann.created_at
    )
    for method, path in _endpoints(workflow, execution.pk):
        body = {"contactId": str(ann.pk)} if method == "post" else None
        missing = call(method, path, None, body)
        assert missing.status_code == 401, (method, path)
        assert missing.json()["error"]["code"] == "authentication_required"
        error(call(method, path, "sk_wrong", body), 401, "authentication_failed")
        error(call(method, path, public_key, body), 403, "permission_denied")
    execution.refresh_from_db()
    assert execution.status == Execution.RUNNING
    assert Execution.objects.count() == 1


# --- Listing ------------------------------------------------------------------------------------


@pytest.fixture
def runs(secret_key, ann, bob):
    """Orders: ann's run cancelled, then bob's running; Other: one run of ann's."""
    workflow = manual(reentry=True)
    first = start(secret_key, workflow, ann).json()["data"]["id"]
    call("delete", url(workflow, first), secret_key)
    second = start(secret_key, workflow, bob).json()["data"]["id"]
    other = manual("Other")
    start(secret_key, other, ann)
    return workflow, first, second


def test_it_lists_a_workflows_runs_newest_first(secret_key, runs):
    workflow, first, second = runs
    response = call("get", url(workflow), secret_key)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert [e["id"] for e in body["executions"]] == [second, first]
    assert (body["total"], body["page"], body["pageSize"], body["totalPages"]) == (2, 1, 20, 1)
    assert body["executions"][0]["email"] == "bob@example.com"
    assert "steps" not in body["executions"][0]


def test_it_pages(secret_key, runs):
    workflow, first, second = runs
    page2 = call("get", url(workflow) + "?page=2&pageSize=1", secret_key).json()
    assert [e["id"] for e in page2["executions"]] == [first]
    assert (page2["total"], page2["page"], page2["pageSize"], page2["totalPages"]) == (2, 2, 1, 2)
    past = call("get", url(workflow) + "?page=9", secret_key).json()
    assert past["executions"] == [] and past["total"] == 2


@pytest.mark.parametrize("status", ["CANCELLED", "cancelled", "Cancelled"])
def test_it_filters_by_status_in_any_case(secret_key, runs, status):
    workflow, first, _ = runs
    body = call("get", url(workflow) + f"?status={status}", secret_key).json()
    assert [e["id"] for e in body["executions"]] == [first]
    assert body["executions"][0]["status"] == "CANCELLED"
    assert call("get", url(workflow) + "?status=failed", secret_key).json()["total"] == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=DONE", "status"),
        ("page=0", "page"),
        ("pageSize=101", "pageSize"),
        ("page=x", "page"),
    ],
)
def test_bad_list_parameters_are_a_400(secret_key, runs, query, field):
    workflow = runs[0]
    err = error(call("get", url(workflow) + f"?{query}", secret_key), 400, "validation_error")
    assert field in err["fields"]


# --- One execution ------------------------------------------------------------------------------


def test_it_shows_one_run_with_its_step_history(secret_key, ann):
    workflow = manual(
        steps=[
            {"key": "tag", "type": "update_contact", "config": {"set": {"stage": "vip"}}},
            {"key": "pause", "type": "delay", "config": {"amount": 2, "unit": "hours"}},
        ]
    )
    pk = start(secret_key, workflow, ann, {"orderId": "A-1"}).json()["data"]["id"]
    drain()
    response = call("get", url(workflow, pk), secret_key)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["status"] == "WAITING" and data["currentStep"] == "pause"
    assert data["wakeAt"] is not None
    steps = data["steps"]
    assert [(s["stepKey"], s["stepType"], s["status"]) for s in steps] == [
        ("tag", "update_contact", "completed"),
        ("pause", "delay", "waiting"),
    ]
    assert steps[0]["branch"] == "next" and steps[0]["finishedAt"] is not None
    assert steps[0]["attempts"] == 1 and steps[0]["error"] == ""
    assert steps[1]["finishedAt"] is None
    assert set(steps[0]) >= {"id", "stepName", "output", "messageId", "startedAt"}


def test_a_run_of_another_workflow_is_a_404(secret_key, runs):
    workflow, first, _ = runs
    other_run = Execution.objects.exclude(workflow=workflow).get()
    err = error(call("get", url(workflow, other_run.pk), secret_key), 404, "not_found")
    assert str(other_run.pk) in err["message"]
    error(call("delete", url(workflow, other_run.pk), secret_key), 404, "not_found")
    assert Execution.objects.get(pk=other_run.pk).status == Execution.RUNNING
    error(call("get", url(workflow, 10**30), secret_key), 404, "not_found")


# --- Cancelling ---------------------------------------------------------------------------------


def test_it_cancels_one_run(secret_key, ann):
    workflow = manual()
    pk = start(secret_key, workflow, ann).json()["data"]["id"]
    drain()
    assert Execution.objects.get().status == Execution.WAITING
    response = call("delete", url(workflow, pk), secret_key)
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert data["status"] == "CANCELLED" and data["finishedAt"] is not None
    assert data["exitReason"].startswith("Cancelled by API key")
    assert StepRun.objects.get().status == StepRun.CANCELLED
    # Already ended: a 409 saying so, and nothing changes.
    again = error(call("delete", url(workflow, pk), secret_key), 409, "not_active")
    assert "CANCELLED" in again["message"]
    assert Execution.objects.get().finished_at.isoformat().startswith(data["finishedAt"][:19])


def test_a_finished_run_is_not_cancelled(secret_key, ann):
    workflow = manual(steps=[{"key": "stop", "type": "exit", "config": {"reason": "done"}}])
    pk = start(secret_key, workflow, ann).json()["data"]["id"]
    drain()
    error(call("delete", url(workflow, pk), secret_key), 409, "not_active")
    assert Execution.objects.get().status == Execution.EXITED


def test_cancel_all_cancels_only_this_workflows_active_runs(secret_key, ann, bob):
    workflow = manual(reentry=True)
    other = manual("Other")
    start(secret_key, workflow, ann)
    start(secret_key, workflow, bob)
    start(secret_key, other, ann)
    done = manual("Done", steps=[{"key": "stop", "type": "exit", "config": {}}])
    start(secret_key, done, bob)
    drain()
    response = call("post", url(workflow, "cancel-all"), secret_key)
    assert response.status_code == 200
    assert response.json() == {"success": True, "data": {"cancelled": 2}}
    assert set(Execution.objects.filter(workflow=workflow).values_list("status", flat=True)) == {
        "CANCELLED"
    }
    assert Execution.objects.get(workflow=other).status == Execution.WAITING
    assert call("post", url(workflow, "cancel-all"), secret_key).json()["data"]["cancelled"] == 0
    assert call("post", url(done, "cancel-all"), secret_key).json()["data"]["cancelled"] == 0
    assert Execution.objects.get(workflow=done).status == Execution.EXITED


def test_the_description_lists_every_executions_endpoint(secret_key):
    schema = Client().get("/v1/openapi.json").json()
    paths = schema["paths"]
    prefix = "/v1/workflows/{workflow_id}/executions"
    assert set(paths[prefix]) >= {"get", "post"}
    assert set(paths[prefix + "/{execution_id}"]) >= {"get", "delete"}
    assert "post" in paths[prefix + "/cancel-all"]
    started = paths[prefix]["post"]["responses"]
    assert {"201", "400", "404", "409"} <= set(started)
