"""/v1/workflows: list, create (with a whole graph), get, update, delete, duplicate."""

import json

import pytest
from django.test import Client

from tests.canvas_data import WAIT_GRAPH, start_runs, workflow_with_waiting_runs
from workflows_app.graph import workflow_graph_document
from workflows_app.models import Execution, Step, Workflow
from workflows_app.services import workflow_create

pytestmark = pytest.mark.django_db


class Api:
    def __init__(self, key):
        self.key = key
        self.client = Client()

    def call(self, method, path, body=None, *, key=None, raw=None, **extra):
        token = key if key is not None else self.key
        if token:
            extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        if raw is not None or body is not None:
            extra["data"] = raw if raw is not None else json.dumps(body)
            extra.setdefault("content_type", "application/json")
        return getattr(self.client, method)(path, **extra)

    def get(self, path, **kw):
        return self.call("get", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("post", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.call("patch", path, body, **kw)

    def delete(self, path, **kw):
        return self.call("delete", path, **kw)


@pytest.fixture
def api(secret_key):
    return Api(secret_key)


def error(response, status):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is False and body["error"]["statusCode"] == status
    return body["error"]


def make(name="Onboarding", *, enabled=False, graph=None, trigger="user.signup", **kw):
    return workflow_create(
        name=name, trigger_event=trigger, enabled=enabled, graph=graph or WAIT_GRAPH, **kw
    )


# --- auth ---------------------------------------------------------------------------------------

ENDPOINTS = [
    ("get", "/v1/workflows"),
    ("post", "/v1/workflows"),
    ("get", "/v1/workflows/1"),
    ("patch", "/v1/workflows/1"),
    ("delete", "/v1/workflows/1"),
    ("post", "/v1/workflows/1/duplicate"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_it_needs_a_valid_secret_key(api, public_key, method, path):
    workflow = make()
    path = path.replace("/1", f"/{workflow.pk}")
    body = {"name": "X", "eventName": "e"} if method in ("post", "patch") else None
    assert error(api.call(method, path, body, key=""), 401)["code"] == "authentication_required"
    assert error(api.call(method, path, body, key="sk_nope"), 401)["code"] == (
        "authentication_failed"
    )
    assert error(api.call(method, path, body, key=public_key), 403)["code"] == ("permission_denied")
    # Nothing was changed by the refused calls.
    assert list(Workflow.objects.values_list("name", flat=True)) == ["Onboarding"]


# --- list ---------------------------------------------------------------------------------------


def test_it_lists_workflows_in_plunks_page_shape(api):
    busy = workflow_with_waiting_runs(name="Busy", emails=["ann@example.com"])
    make("Quiet")
    body = api.get("/v1/workflows").json()
    assert body["success"] is True
    assert (body["total"], body["page"], body["pageSize"], body["totalPages"]) == (2, 1, 20, 1)
    # Newest first by default.
    assert [w["name"] for w in body["data"]] == ["Quiet", "Busy"]
    first = body["data"][1]
    assert first == {
        "id": busy.pk,
        "name": "Busy",
        "description": "",
        "triggerType": "event",
        "eventName": "user.signup",
        "enabled": True,
        "allowReentry": False,
        "frequencyCap": "",
        "graphVersion": busy.graph_version,
        "createdAt": first["createdAt"],
        "updatedAt": first["updatedAt"],
        "activeExecutions": 1,
    }


def test_it_filters_searches_sorts_and_pages(api):
    make("Alpha", enabled=True)
    make("beta")
    make("Gamma", enabled=True)
    names = lambda query: [w["name"] for w in api.get(f"/v1/workflows?{query}").json()["data"]]  # noqa: E731
    assert names("status=active&sort=name") == ["Alpha", "Gamma"]
    assert names("status=disabled") == ["beta"]
    assert names("search=ALP") == ["Alpha"]
    assert names("sort=name&dir=desc") == ["Gamma", "beta", "Alpha"]
    assert names("sort=createdAt&dir=asc") == ["Alpha", "beta", "Gamma"]
    page = api.get("/v1/workflows?sort=name&pageSize=2&page=2").json()
    assert [w["name"] for w in page["data"]] == ["Gamma"]
    assert names("sort=name") == ["Alpha", "beta", "Gamma"]  # in any case
    assert (page["total"], page["totalPages"]) == (3, 2)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=on", "status"),
        ("sort=id", "sort"),
        ("dir=up", "dir"),
        ("page=0", "page"),
        ("pageSize=101", "pageSize"),
        ("search=" + "x" * 201, "search"),
    ],
)
def test_it_refuses_bad_list_parameters_naming_them(api, query, field):
    assert field in error(api.get(f"/v1/workflows?{query}"), 400)["fields"]


# --- create -------------------------------------------------------------------------------------


def test_it_creates_a_workflow_with_its_graph(api):
    response = api.post(
        "/v1/workflows",
        {
            "name": "Onboarding",
            "eventName": "user.signup",
            "description": "Hello",
            "enabled": True,
            "allowReentry": True,
            "graph": WAIT_GRAPH,
        },
    )
    assert response.status_code == 201, response.content
    data = response.json()["data"]
    workflow = Workflow.objects.get(pk=data["id"])
    assert (workflow.name, workflow.trigger_event, workflow.trigger_type) == (
        "Onboarding",
        "user.signup",
        "event",
    )
    assert workflow.enabled and workflow.allow_reentry and workflow.description == "Hello"
    assert data["enabled"] is True and data["activeExecutions"] == 0
    graph = workflow_graph_document(workflow)
    assert graph["steps"] == WAIT_GRAPH["steps"]
    assert [(t["from"], t["to"]) for t in graph["transitions"]] == [
        ("trigger", "pause"),
        ("pause", "done"),
    ]


def test_it_creates_disabled_and_without_graph_by_default(api):
    data = api.post("/v1/workflows", {"name": "Empty", "eventName": "a"}).json()["data"]
    assert (data["enabled"], data["allowReentry"], data["description"]) == (False, False, "")
    assert not Step.objects.filter(workflow_id=data["id"]).exists()


def test_it_creates_a_manual_workflow_without_event(api):
    response = api.post("/v1/workflows", {"name": "Win-back", "triggerType": "manual"})
    assert response.status_code == 201
    data = response.json()["data"]
    assert (data["triggerType"], data["eventName"]) == ("manual", None)
    assert Workflow.objects.get(pk=data["id"]).trigger_event == ""
    # Sent back as read, it changes nothing; an event would.
    assert api.patch(f"/v1/workflows/{data['id']}", data).status_code == 200
    fault = error(api.patch(f"/v1/workflows/{data['id']}", {"eventName": "user.signup"}), 400)
    assert "eventName" in fault["fields"]


def test_it_reads_older_email_event_names_as_the_current_ones(api):
    data = api.post("/v1/workflows", {"name": "Opens", "eventName": "email.opened"}).json()
    assert data["data"]["eventName"] == "email.open"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"eventName": "a"}, "name"),
        ({"name": "", "eventName": "a"}, "name"),
        ({"name": "x" * 201, "eventName": "a"}, "name"),
        ({"name": "N\x00", "eventName": "a"}, "name"),
        ({"name": "A"}, "eventName"),
        ({"name": "A", "eventName": ""}, "eventName"),
        ({"name": "A", "triggerType": "manual", "eventName": "a"}, "eventName"),
        ({"name": "A", "eventName": "a", "triggerType": "schedule"}, "triggerType"),
        ({"name": "A", "eventName": "a", "enabled": "maybe"}, "enabled"),
        ({"name": "A", "eventName": "a", "allowReentry": None}, "allowReentry"),
        ({"name": "A", "eventName": "a", "graph": None}, "graph"),
        ({"name": "\ud800", "eventName": "a"}, "name"),
    ],
)
def test_it_refuses_an_invalid_create_naming_the_field(api, body, field):
    assert field in error(api.post("/v1/workflows", body), 400)["fields"]
    assert not Workflow.objects.exists()


def test_it_refuses_a_taken_name(api):
    make("Onboarding")
    fault = error(api.post("/v1/workflows", {"name": "Onboarding", "eventName": "x"}), 400)
    assert "exists" in fault["fields"]["name"]
    assert Workflow.objects.count() == 1


def test_an_invalid_graph_is_refused_per_step_and_field_creating_nothing(api):
    graph = {
        "steps": [
            {"key": "pause", "type": "delay", "config": {"amount": -1, "unit": "days"}},
            {"key": "island", "type": "exit"},
        ],
        "transitions": [{"from": "trigger", "to": "pause"}],
    }
    fault = error(api.post("/v1/workflows", {"name": "A", "eventName": "e", "graph": graph}), 400)
    assert fault["code"] == "validation_error"
    assert "greater than 0" in fault["fields"]["graph.steps.pause.config.amount"]
    assert "not reachable" in fault["fields"]["graph.steps.island"]
    assert {e["field"] for e in fault["errors"]} == {
        "graph.steps.pause.config.amount",
        "graph.steps.island",
    }
    assert not Workflow.objects.exists()


def test_a_graph_that_is_not_an_object_is_refused(api):
    fault = error(api.post("/v1/workflows", {"name": "A", "eventName": "e", "graph": [1]}), 400)
    assert "must be an object" in fault["fields"]["graph"]


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        ("{", "application/json", 400),
        ('{"name": NaN}', "application/json", 400),
        ("[]", "application/json", 400),
        ("name=A", "text/plain", 415),
    ],
)
def test_it_refuses_malformed_bodies(api, raw, content_type, status):
    error(api.post("/v1/workflows", raw=raw, content_type=content_type), status)
    assert not Workflow.objects.exists()


def test_an_oversized_body_is_a_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = {"name": "A", "eventName": "e", "description": "x" * 2000}
    assert error(api.post("/v1/workflows", body), 413)["code"] == "payload_too_large"
    assert not Workflow.objects.exists()


# --- get ----------------------------------------------------------------------------------------


def test_it_gets_one_workflow(api):
    workflow = workflow_with_waiting_runs(emails=["ann@example.com", "bob@example.com"])
    data = api.get(f"/v1/workflows/{workflow.pk}").json()["data"]
    assert (data["id"], data["name"], data["activeExecutions"]) == (workflow.pk, "Nurture", 2)


@pytest.mark.parametrize("path", ["/v1/workflows/999999", "/v1/workflows/99999999999999"])
def test_an_unknown_workflow_is_a_404(api, path):
    assert error(api.get(path), 404)["code"] == "not_found"


# --- update -------------------------------------------------------------------------------------


def test_it_updates_the_editable_fields(api):
    workflow = make()
    response = api.patch(
        f"/v1/workflows/{workflow.pk}",
        {"name": "Renamed", "description": "New", "enabled": True, "allowReentry": True},
    )
    assert response.status_code == 200, response.content
    workflow.refresh_from_db()
    assert (workflow.name, workflow.description, workflow.enabled, workflow.allow_reentry) == (
        "Renamed",
        "New",
        True,
        True,
    )
    assert response.json()["data"]["name"] == "Renamed"
    api.patch(f"/v1/workflows/{workflow.pk}", {"enabled": False})
    workflow.refresh_from_db()
    assert workflow.enabled is False and workflow.name == "Renamed"


def test_name_and_flags_stay_editable_while_runs_are_active(api):
    workflow = workflow_with_waiting_runs(emails=["ann@example.com"])
    response = api.patch(f"/v1/workflows/{workflow.pk}", {"name": "Still", "enabled": False})
    assert response.status_code == 200
    assert response.json()["data"]["activeExecutions"] == 1


def test_the_trigger_is_fixed_once_created(api):
    workflow = make()
    fault = error(api.patch(f"/v1/workflows/{workflow.pk}", {"eventName": "other"}), 400)
    assert "fixed" in fault["fields"]["eventName"]
    fault = error(api.patch(f"/v1/workflows/{workflow.pk}", {"triggerType": "manual"}), 400)
    assert "fixed" in fault["fields"]["triggerType"]
    workflow.refresh_from_db()
    assert (workflow.trigger_event, workflow.trigger_type) == ("user.signup", "event")
    # The same values (as a client sending the whole object back) are fine.
    same = {"eventName": "user.signup", "triggerType": "event", "name": "Again"}
    assert api.patch(f"/v1/workflows/{workflow.pk}", same).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "Other"}, "name"),
        ({"enabled": "yes please"}, "enabled"),
        ({"allowReentry": None}, "allowReentry"),
        ({"description": "\x00"}, "description"),
    ],
)
def test_it_refuses_an_invalid_update_changing_nothing(api, body, field):
    make("Other")
    workflow = make()
    assert field in error(api.patch(f"/v1/workflows/{workflow.pk}", body), 400)["fields"]
    workflow.refresh_from_db()
    assert (workflow.name, workflow.enabled, workflow.allow_reentry) == (
        "Onboarding",
        False,
        False,
    )


def test_updating_an_unknown_workflow_is_a_404(api):
    error(api.patch("/v1/workflows/999999", {"name": "X"}), 404)


# --- delete -------------------------------------------------------------------------------------


def test_it_deletes_a_workflow(api):
    workflow = make()
    response = api.delete(f"/v1/workflows/{workflow.pk}")
    assert response.status_code == 204 and response.content == b""
    assert not Workflow.objects.filter(pk=workflow.pk).exists()
    error(api.delete(f"/v1/workflows/{workflow.pk}"), 404)


def test_it_refuses_to_delete_while_runs_are_active(api):
    workflow = workflow_with_waiting_runs(emails=["ann@example.com"])
    fault = error(api.delete(f"/v1/workflows/{workflow.pk}"), 409)
    assert fault["code"] == "workflow_busy" and "1 active execution" in fault["message"]
    assert Workflow.objects.filter(pk=workflow.pk).exists()
    assert Execution.objects.filter(workflow=workflow).count() == 1


# --- duplicate ----------------------------------------------------------------------------------


def test_it_duplicates_as_a_disabled_copy(api):
    workflow = workflow_with_waiting_runs(name="Nurture", emails=["ann@example.com"])
    response = api.post(f"/v1/workflows/{workflow.pk}/duplicate")
    assert response.status_code == 201, response.content
    data = response.json()["data"]
    assert (data["name"], data["enabled"], data["activeExecutions"]) == (
        "Nurture (Copy)",
        False,
        0,
    )
    copy = Workflow.objects.get(pk=data["id"])
    assert workflow_graph_document(copy) == workflow_graph_document(workflow)
    assert copy.graph_saved_by.startswith("api:sk_")
    again = api.post(f"/v1/workflows/{workflow.pk}/duplicate").json()["data"]
    assert again["name"] == "Nurture (Copy 2)"


def test_it_duplicates_a_manual_workflow(api):
    manual = workflow_create(name="Manual", trigger_type=Workflow.MANUAL, graph=WAIT_GRAPH)
    data = api.post(f"/v1/workflows/{manual.pk}/duplicate").json()["data"]
    assert (data["triggerType"], data["eventName"]) == ("manual", None)


def test_duplicating_an_unknown_workflow_is_a_404(api):
    error(api.post("/v1/workflows/999999/duplicate"), 404)
    assert not Workflow.objects.exists()


def test_start_runs_helper_makes_active_runs_that_the_list_counts(api):
    workflow = make(enabled=True)
    start_runs(workflow, ["a@example.com", "b@example.com"])
    data = api.get("/v1/workflows").json()["data"]
    assert data[0]["activeExecutions"] == 2
