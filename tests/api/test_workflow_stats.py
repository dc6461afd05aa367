"""The statistics endpoints: GET /v1/workflows/<id>/stats (secret key) and the canvas's
GET /admin/workflows_app/workflow/<id>/canvas/stats/ (signed in, the workflow's view
permission). The figures themselves are checked in tests/test_stats.py."""

from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.api.test_workflows_api import Api, error
from tests.canvas_data import staff_user
from tests.conftest import drain
from tests.flow import track_ok

pytestmark = pytest.mark.django_db

STEPS = [
    {
        "key": "ab",
        "type": "split",
        "config": {"branches": [{"id": "a", "weight": 1}, {"id": "b", "weight": 1}]},
    },
    {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "days"}},
    {"key": "done", "type": "exit", "config": {"reason": "b"}},
]
TRANSITIONS = [
    {"from": "trigger", "to": "ab"},
    {"from": "ab", "branch": "a", "to": "pause"},
    {"from": "ab", "branch": "b", "to": "done"},
]
BAD_INPUT = [
    ({"from": "last week"}, "from"),
    ({"to": "2026-02-30"}, "to"),
    ({"from": "2026-03-01", "to": "2026-02-01"}, "from"),
    ({"from": "2024-01-01", "to": "2026-01-01"}, "from"),
    ({"goal": "x" * 256}, "goal"),
]


@pytest.fixture
def api(secret_key):
    return Api(secret_key)


@pytest.fixture
def workflow(make_workflow):
    return make_workflow(STEPS, TRANSITIONS, name="Stats")


@pytest.fixture
def runs(track, workflow):
    for n in range(4):
        track_ok(track, email=f"c{n}@example.com")
    drain()
    return workflow


def path(workflow_id):
    return f"/v1/workflows/{workflow_id}/stats"


def admin_path(workflow_id):
    return reverse("admin:workflows_app_workflow_canvas_stats", args=[workflow_id])


def signed_in(*perms, username="staff"):
    client = Client()
    client.force_login(staff_user(username, *perms))
    return client


def check_figures(data, workflow):
    assert data["goal"] == "order.placed"
    assert sum(data["executions"].values()) == 4
    assert data["executions"]["WAITING"] + data["executions"]["EXITED"] == 4
    assert len(data["started_per_day"]) == 31  # the default 30 days touch 31 dates
    assert data["started_per_day"][-1] == {
        "date": timezone.localdate().isoformat(),
        "started": 4,
    }
    assert list(data["steps"]) == ["ab", "pause", "done"]
    ab = data["steps"]["ab"]
    assert ab["entered"] == 4 and set(ab["branches"]) == {"a", "b"}
    a, b = ab["branches"]["a"], ab["branches"]["b"]
    assert a["entered"] + b["entered"] == 4
    assert (a["waiting"], b["completed"]) == (a["entered"], b["entered"])
    assert a["goal_reached"] == b["goal_reached"] == 0
    assert data["steps"]["pause"]["waiting"] == a["entered"]


# --- /v1 ----------------------------------------------------------------------------------------


def test_it_answers_the_runs_figures(api, runs):
    response = api.get(path(runs.pk) + "?goal=order.placed")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["success"] is True
    check_figures(body["data"], runs)


def test_it_takes_a_period(api, runs):
    today = timezone.localdate()
    response = api.get(
        path(runs.pk) + f"?from={today.isoformat()}&to={today.isoformat()}&goal=order.placed"
    )
    data = response.json()["data"]
    assert data["started_per_day"] == [{"date": today.isoformat(), "started": 4}]
    assert data["steps"]["ab"]["entered"] == 4
    yesterday = today - timedelta(days=1)
    data = api.get(path(runs.pk) + f"?from={yesterday}&to={yesterday}").json()["data"]
    assert data["steps"]["ab"]["entered"] == 0 and set(data["executions"].values()) == {0}
    assert data["goal"] is None


def test_it_needs_a_secret_key(api, public_key, workflow):
    assert error(api.get(path(workflow.pk), key=""), 401)["code"] == "authentication_required"
    assert error(api.get(path(workflow.pk), key="sk_nope"), 401)["code"] == (
        "authentication_failed"
    )
    assert error(api.get(path(workflow.pk), key=public_key), 403)


def test_a_workflow_that_does_not_exist_is_a_404(api, workflow):
    found = error(api.get(path(workflow.pk + 1000)), 404)
    assert found["code"] == "not_found" and str(workflow.pk + 1000) in found["message"]


@pytest.mark.parametrize(("params", "field"), BAD_INPUT)
def test_bad_input_is_a_400_naming_the_field(api, workflow, params, field):
    body = error(api.get(path(workflow.pk), data=params), 400)
    assert body["code"] == "validation_error"
    assert list(body["fields"]) == [field]


def test_any_offset_python_reads_is_answered(api, runs):
    # PostgreSQL refuses offsets beyond 15:59; the view asks it in UTC.
    for offset in ("+23:59", "-23:59", "+20:00"):
        params = {"from": f"2026-01-01T00:00:00{offset}", "to": "2026-01-05"}
        response = api.get(path(runs.pk), data=params)
        assert response.status_code == 200, (offset, response.content)
        asked = datetime.fromisoformat(params["from"])
        assert datetime.fromisoformat(response.json()["data"]["from"]) == asked


def test_a_nul_in_a_parameter_is_a_400_before_the_view(api, workflow):
    # config/middleware.py refuses it for every path (PostgreSQL text can not hold it).
    assert error(api.get(path(workflow.pk), data={"goal": "a\x00b"}), 400)
    response = signed_in("workflows_app.view_workflow").get(
        admin_path(workflow.pk), {"goal": "a\x00b"}
    )
    assert response.status_code == 400


def test_it_is_described(api):
    schema = Client().get("/v1/openapi.json")
    operation = schema.json()["paths"]["/v1/workflows/{workflow_id}/stats"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"workflow_id", "from", "to", "goal"}


# --- the admin's twin ---------------------------------------------------------------------------


def test_the_admin_twin_answers_the_same_figures(api, runs):
    response = signed_in("workflows_app.view_workflow").get(
        admin_path(runs.pk), {"goal": "order.placed"}
    )
    assert response.status_code == 200
    check_figures(response.json(), runs)
    mine = api.get(path(runs.pk) + "?goal=order.placed").json()["data"]
    assert {k: v for k, v in response.json().items() if k not in ("from", "to")} == {
        k: v for k, v in mine.items() if k not in ("from", "to")
    }


def test_the_admin_twin_needs_the_view_permission(workflow):
    response = signed_in("workflows_app.view_execution").get(admin_path(workflow.pk))
    assert response.status_code == 403
    assert response.json() == {"ok": False, "message": "You may not view this workflow."}


def test_the_admin_twin_needs_a_session(workflow):
    response = Client().get(admin_path(workflow.pk))
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert b"steps" not in response.content


def test_the_admin_twin_404s_a_workflow_that_does_not_exist(workflow):
    response = signed_in("workflows_app.view_workflow").get(admin_path(workflow.pk + 1000))
    assert response.status_code == 404 and response.json()["ok"] is False


def test_the_admin_twin_answers_only_get(workflow):
    client = signed_in("workflows_app.view_workflow", "workflows_app.change_workflow")
    assert client.post(admin_path(workflow.pk)).status_code == 405


@pytest.mark.parametrize(("params", "field"), BAD_INPUT)
def test_the_admin_twin_names_the_field_at_fault(workflow, params, field):
    response = signed_in("workflows_app.view_workflow").get(admin_path(workflow.pk), params)
    assert response.status_code == 400
    body = response.json()
    assert body["ok"] is False and body["field"] == field
    assert body["message"].startswith(f"Invalid {field}:")
