"""/v1/workflows/<id>/graph (the whole graph, with its version) and Plunk's one-at-a-time step
and transition endpoints, all over the graph service the admin's canvas uses."""

import copy

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from tests.api.test_workflows_api import Api, error
from tests.canvas_data import WAIT_GRAPH, workflow_with_waiting_runs
from workflows_app import graph_edits
from workflows_app.graph import workflow_graph_document, workflow_graph_snapshot
from workflows_app.models import Step, Transition, Workflow
from workflows_app.services import workflow_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(secret_key):
    return Api(secret_key)


@pytest.fixture
def draft(db):
    """A disabled workflow: trigger -> pause (Delay 2 days) -> done (Exit)."""
    return workflow_create(name="Draft", trigger_event="user.signup", graph=WAIT_GRAPH)


@pytest.fixture
def locked(db):
    """Enabled, the same graph, one run waiting at the delay."""
    return workflow_with_waiting_runs(emails=["ann@example.com"])


def url(workflow, tail=""):
    return f"/v1/workflows/{workflow.pk}{tail}"


def graph_of(workflow):
    return workflow_graph_document(workflow)


def edges(workflow):
    return sorted((t["from"], t["branch"], t["to"]) for t in graph_of(workflow)["transitions"])


def version_of(workflow):
    return Workflow.objects.get(pk=workflow.pk).graph_version


# --- auth ---------------------------------------------------------------------------------------

ENDPOINTS = [
    ("get", "/graph", None),
    ("put", "/graph", {"version": 0, "graph": WAIT_GRAPH}),
    ("post", "/steps", {"type": "exit"}),
    ("patch", "/steps/pause", {"name": "x"}),
    ("delete", "/steps/pause", None),
    ("post", "/transitions", {"fromStepId": "trigger", "toStepId": "done"}),
    ("delete", "/transitions/pause:next", None),
    ("post", "/transitions/pause:next/insert-step", {"type": "exit"}),
]


@pytest.mark.parametrize(("method", "tail", "body"), ENDPOINTS)
def test_every_graph_endpoint_needs_a_secret_key(api, public_key, draft, method, tail, body):
    before = (version_of(draft), graph_of(draft))
    for key, status in (("", 401), ("sk_wrong", 401), (public_key, 403)):
        error(api.call(method, url(draft, tail), body, key=key), status)
    assert (version_of(draft), graph_of(draft)) == before


@pytest.mark.parametrize(("method", "tail", "body"), ENDPOINTS)
def test_every_graph_endpoint_answers_404_for_an_unknown_workflow(api, method, tail, body):
    assert error(api.call(method, f"/v1/workflows/999999{tail}", body), 404)["code"] == (
        "not_found"
    )


# --- the whole graph ----------------------------------------------------------------------------


def test_it_reads_the_graph_with_its_version(api, draft):
    body = api.get(url(draft, "/graph")).json()
    assert body["success"] is True
    version, document = workflow_graph_snapshot(draft)
    assert body["data"] == {"version": version, "graph": document}
    assert [s["key"] for s in body["data"]["graph"]["steps"]] == ["pause", "done"]


def test_it_saves_the_whole_graph_from_the_version_read(api, draft):
    read = api.get(url(draft, "/graph")).json()["data"]
    graph = copy.deepcopy(read["graph"])
    graph["steps"][0]["config"] = {"amount": 5, "unit": "hours"}
    response = api.call("put", url(draft, "/graph"), {"version": read["version"], "graph": graph})
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert data["version"] > read["version"]  # (the database bumps it per row changed, too)
    assert data["version"] == version_of(draft)
    assert data["graph"]["steps"][0]["config"] == {"amount": 5, "unit": "hours"}
    assert Step.objects.get(workflow=draft, key="pause").config == {"amount": 5, "unit": "hours"}
    stored = Workflow.objects.get(pk=draft.pk)
    assert stored.graph_saved_by.startswith("api:sk_") and stored.graph_saved_at


def test_of_two_puts_from_the_same_version_the_second_is_a_409(api, draft):
    read = api.get(url(draft, "/graph")).json()["data"]
    mine, theirs = copy.deepcopy(read["graph"]), copy.deepcopy(read["graph"])
    theirs["steps"][0]["config"]["amount"] = 3
    mine["steps"][0]["config"]["amount"] = 4
    first = api.call("put", url(draft, "/graph"), {"version": read["version"], "graph": theirs})
    assert first.status_code == 200
    second = api.call("put", url(draft, "/graph"), {"version": read["version"], "graph": mine})
    fault = error(second, 409)
    assert fault["code"] == "graph_conflict"
    stored = Workflow.objects.get(pk=draft.pk)
    # Who saved, and when.
    assert stored.graph_saved_by in fault["message"]
    assert f"{stored.graph_saved_at.astimezone():%Y-%m-%d %H:%M}" in fault["message"]
    assert "pause" in fault["message"]  # the step that differs
    assert str(stored.graph_version) in fault["fields"]["version"]
    assert Step.objects.get(workflow=draft, key="pause").config["amount"] == 3


def test_a_locked_graph_refuses_structural_changes_but_takes_names_and_positions(api, locked):
    read = api.get(url(locked, "/graph")).json()["data"]
    changed = copy.deepcopy(read["graph"])
    changed["steps"][0]["config"]["amount"] = 9
    fault = error(
        api.call("put", url(locked, "/graph"), {"version": read["version"], "graph": changed}),
        409,
    )
    assert fault["code"] == "workflow_locked"
    assert "1 active execution" in fault["message"] and "names and positions" in fault["message"]
    assert Step.objects.get(workflow=locked, key="pause").config["amount"] == 2

    cosmetic = copy.deepcopy(read["graph"])
    cosmetic["steps"][0]["name"] = "Renamed"
    cosmetic["steps"][0]["position"] = {"x": 40, "y": 50}
    response = api.call(
        "put", url(locked, "/graph"), {"version": read["version"], "graph": cosmetic}
    )
    assert response.status_code == 200
    pause = Step.objects.get(workflow=locked, key="pause")
    assert (pause.name, pause.position_x, pause.position_y) == ("Renamed", 40, 50)


def test_an_invalid_graph_is_refused_per_step_and_field(api, draft):
    before = (version_of(draft), graph_of(draft))
    graph = copy.deepcopy(WAIT_GRAPH)
    graph["steps"][0]["config"] = {"amount": 2, "unit": "fortnights"}
    graph["steps"].append({"key": "island", "type": "exit"})
    fault = error(
        api.call("put", url(draft, "/graph"), {"version": before[0], "graph": graph}), 400
    )
    assert "graph.steps.pause.config.unit" in fault["fields"]
    assert "not reachable" in fault["fields"]["graph.steps.island"]
    # The whole-graph save is the canvas's: complete graphs only, even on a disabled workflow.
    assert (version_of(draft), graph_of(draft)) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"graph": WAIT_GRAPH}, "version"),
        ({"version": -1, "graph": WAIT_GRAPH}, "version"),
        ({"version": "one", "graph": WAIT_GRAPH}, "version"),
        ({"version": 2**40, "graph": WAIT_GRAPH}, "version"),
        ({"version": 0}, "graph"),
        ({"version": 0, "graph": None}, "graph"),
        ({"version": 0, "graph": "steps"}, "graph"),
        ({"version": 0, "graph": {"steps": {}, "transitions": []}}, "graph"),
    ],
)
def test_a_malformed_put_is_refused_naming_the_field(api, draft, body, field):
    before = version_of(draft)
    assert field in error(api.call("put", url(draft, "/graph"), body), 400)["fields"]
    assert version_of(draft) == before


def test_an_oversized_graph_is_a_413(api, draft, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    graph = copy.deepcopy(WAIT_GRAPH)
    graph["steps"][0]["name"] = "x" * 3000
    response = api.call("put", url(draft, "/graph"), {"version": 0, "graph": graph})
    assert error(response, 413)["code"] == "payload_too_large"


# --- steps --------------------------------------------------------------------------------------


def test_a_disabled_workflow_is_built_one_step_at_a_time(api):
    created = api.post("/v1/workflows", {"name": "Built", "eventName": "user.signup"})
    workflow = Workflow.objects.get(pk=created.json()["data"]["id"])

    first = api.post(
        url(workflow, "/steps"),
        {"type": "delay", "name": "Wait a day", "config": {"amount": 1, "unit": "days"}},
    )
    assert first.status_code == 201, first.content
    step = first.json()["data"]
    assert step["key"] == step["id"] == "wait-a-day"
    assert step["config"] == {"amount": 1, "unit": "days"} and step["templateId"] is None
    # Not connected yet: a draft, allowed while disabled.
    assert edges(workflow) == []
    second = api.post(url(workflow, "/steps"), {"type": "exit", "key": "bye"}).json()["data"]
    assert second["key"] == "bye"
    assert second["position"]["y"] > step["position"]["y"]  # placed below the last one

    # Enabling an incomplete graph is refused, naming what is missing.
    fault = error(api.patch(url(workflow), {"enabled": True}), 400)
    assert "enabled" in fault["fields"] and "connect the trigger" in fault["message"]
    assert Workflow.objects.get(pk=workflow.pk).enabled is False

    for body in (
        {"fromStepId": "trigger", "toStepId": "wait-a-day"},
        {"fromStepId": "wait-a-day", "toStepId": "bye"},
    ):
        assert api.post(url(workflow, "/transitions"), body).status_code == 201
    assert edges(workflow) == [("trigger", "next", "wait-a-day"), ("wait-a-day", "next", "bye")]
    assert api.patch(url(workflow), {"enabled": True}).status_code == 200
    assert Workflow.objects.get(pk=workflow.pk).enabled is True


def test_an_enabled_workflow_keeps_a_complete_graph(api, draft):
    Workflow.objects.filter(pk=draft.pk).update(enabled=True)
    before = (version_of(draft), graph_of(draft))
    fault = error(api.post(url(draft, "/steps"), {"type": "exit", "key": "loose"}), 400)
    assert "not reachable" in fault["fields"]["body"]
    assert "insert-step" in fault["message"] and "disable" in fault["message"]
    assert (version_of(draft), graph_of(draft)) == before


def test_a_step_names_its_template_by_id(api, draft, template):
    response = api.post(url(draft, "/steps"), {"type": "send_email", "templateId": template.pk})
    assert response.status_code == 201, response.content
    step = response.json()["data"]
    assert step["templateId"] == template.pk and step["config"] == {"template": "Welcome"}
    assert Step.objects.get(workflow=draft, key=step["key"]).template == template
    # In the config, as Plunk writes it, too.
    plunk = api.post(
        url(draft, "/steps"), {"type": "send_email", "config": {"templateId": template.pk}}
    )
    assert plunk.json()["data"]["templateId"] == template.pk


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "type"),
        ({"type": "teleport"}, "type"),
        ({"type": "delay", "config": {"amount": 0, "unit": "days"}}, "config.amount"),
        ({"type": "delay", "config": {"amount": 1, "unit": "days", "x": 1}}, "config.x"),
        ({"type": "delay", "config": []}, "config"),
        ({"type": "exit", "key": "Not A Slug"}, "key"),
        ({"type": "exit", "key": "trigger"}, "key"),
        ({"type": "exit", "key": "\ud800"}, "key"),
        ({"type": "exit", "name": "n" * 201}, "name"),
        ({"type": "exit", "position": {"x": 1}}, "position.y"),
        ({"type": "exit", "position": {"x": 1, "y": 2e6}}, "position.y"),
        ({"type": "send_email", "templateId": 999999}, "templateId"),
        ({"type": "delay", "templateId": 1, "config": {"amount": 1, "unit": "days"}}, "templateId"),
        ({"type": "send_email", "config": {"template": "Nope"}}, "config.template"),
    ],
)
def test_an_invalid_step_is_refused_naming_the_field(api, draft, body, field):
    before = (version_of(draft), graph_of(draft))
    fault = error(api.post(url(draft, "/steps"), body), 400)
    assert field in fault["fields"], fault
    assert (version_of(draft), graph_of(draft)) == before


def test_a_taken_key_is_a_409(api, draft):
    fault = error(api.post(url(draft, "/steps"), {"type": "exit", "key": "pause"}), 409)
    assert fault["code"] == "step_exists" and "key" in fault["fields"]
    assert graph_of(draft)["steps"][0]["type"] == "delay"


def test_it_updates_a_step(api, draft):
    response = api.patch(
        url(draft, "/steps/pause"),
        {"name": "Longer", "config": {"amount": 3, "unit": "weeks"}, "position": {"x": 5, "y": 6}},
    )
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert (data["name"], data["config"], data["position"]) == (
        "Longer",
        {"amount": 3, "unit": "weeks"},
        {"x": 5, "y": 6},
    )
    pause = Step.objects.get(workflow=draft, key="pause")
    assert (pause.name, pause.config) == ("Longer", {"amount": 3, "unit": "weeks"})
    assert edges(draft) == [("pause", "next", "done"), ("trigger", "next", "pause")]


def test_changing_a_locked_steps_config_is_a_409_but_its_name_may_change(api, locked):
    before = (version_of(locked), graph_of(locked))
    fault = error(
        api.patch(url(locked, "/steps/pause"), {"config": {"amount": 1, "unit": "days"}}), 409
    )
    assert fault["code"] == "workflow_locked" and "active execution" in fault["message"]
    assert (version_of(locked), graph_of(locked)) == before
    delay = {"type": "delay", "config": {"amount": 1, "unit": "hours"}}
    error(api.post(url(locked, "/transitions/pause:next/insert-step"), delay), 409)
    error(api.delete(url(locked, "/steps/done")), 409)
    assert graph_of(locked) == before[1]

    renamed = api.patch(
        url(locked, "/steps/pause"), {"name": "Cosmetic", "position": {"x": 1, "y": 2}}
    )
    assert renamed.status_code == 200
    assert Step.objects.get(workflow=locked, key="pause").name == "Cosmetic"


def test_updating_an_unknown_step_is_a_404(api, draft):
    assert error(api.patch(url(draft, "/steps/nope"), {"name": "x"}), 404)["code"] == "not_found"
    assert error(api.delete(url(draft, "/steps/nope")), 404)["code"] == "not_found"


def test_an_invalid_step_update_changes_nothing(api, draft):
    before = (version_of(draft), graph_of(draft))
    fault = error(api.patch(url(draft, "/steps/pause"), {"config": {"unit": "days"}}), 400)
    assert "config.amount" in fault["fields"]
    assert error(api.patch(url(draft, "/steps/pause"), {"templateId": 1}), 400)["fields"] == {
        "templateId": "A Delay step has no template."
    }
    assert (version_of(draft), graph_of(draft)) == before


def test_deleting_a_step_removes_its_transitions(api, draft):
    response = api.delete(url(draft, "/steps/pause"))
    assert response.status_code == 204
    assert [s["key"] for s in graph_of(draft)["steps"]] == ["done"]
    assert edges(draft) == []  # a draft: "done" is not connected any more


def test_deleting_with_splice_reconnects_around_the_step(api, draft):
    assert api.delete(url(draft, "/steps/pause?splice=true")).status_code == 204
    assert edges(draft) == [("trigger", "next", "done")]


def test_an_ambiguous_splice_is_a_400_explaining(api):
    graph = {
        "steps": [
            {
                "key": "check",
                "type": "condition",
                "config": {"field": "contact.plan", "operator": "exists"},
            },
            {"key": "yes", "type": "exit"},
            {"key": "no", "type": "exit"},
        ],
        "transitions": [
            {"from": "trigger", "to": "check"},
            {"from": "check", "branch": "yes", "to": "yes"},
            {"from": "check", "branch": "no", "to": "no"},
        ],
    }
    workflow = workflow_create(name="Branchy", trigger_event="e", graph=graph)
    before = graph_of(workflow)
    fault = error(api.delete(url(workflow, "/steps/check?splice=true")), 400)
    assert fault["code"] == "ambiguous_splice" and "2 outgoing branches" in fault["message"]
    assert "splice" in fault["fields"]
    assert graph_of(workflow) == before
    assert "splice" in error(api.delete(url(workflow, "/steps/check?splice=maybe")), 400)["fields"]


# --- transitions --------------------------------------------------------------------------------


@pytest.fixture
def waiting(db):
    """A disabled workflow: trigger -> wait (Wait for Event with a timeout); a loose Exit."""
    graph = {
        "steps": [
            {
                "key": "wait",
                "type": "wait_for_event",
                "config": {"event": "paid", "timeout": {"amount": 1, "unit": "days"}},
            },
            {
                "key": "check",
                "type": "condition",
                "config": {"field": "contact.plan", "operator": "exists"},
            },
            {"key": "done", "type": "exit"},
        ],
        "transitions": [
            {"from": "trigger", "to": "wait"},
            {"from": "wait", "branch": "event", "to": "check"},
            {"from": "check", "branch": "yes", "to": "done"},
        ],
    }
    return workflow_create(name="Waiting", trigger_event="e", graph=graph)


def test_plunks_wait_outcome_and_condition_name_the_branch(api, waiting):
    api.delete(url(waiting, "/transitions/check:yes"))
    response = api.post(
        url(waiting, "/transitions"),
        {"fromStepId": "wait", "toStepId": "done", "waitOutcome": "TIMEOUT"},
    )
    assert response.status_code == 201, response.content
    assert response.json()["data"] == {
        "id": "wait:timeout",
        "fromStepId": "wait",
        "toStepId": "done",
        "branch": "timeout",
    }
    response = api.post(
        url(waiting, "/transitions"),
        {"fromStepId": "check", "toStepId": "done", "condition": {"branch": "no"}},
    )
    assert response.json()["data"]["id"] == "check:no"
    assert edges(waiting) == [
        ("check", "no", "done"),
        ("trigger", "next", "wait"),
        ("wait", "event", "check"),
        ("wait", "timeout", "done"),
    ]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"fromStepId": "nope", "toStepId": "done"}, 400, "fromStepId"),
        ({"fromStepId": "check", "toStepId": "nope"}, 400, "toStepId"),
        ({"fromStepId": "check", "toStepId": "done", "branch": "maybe"}, 400, "branch"),
        ({"fromStepId": "done", "toStepId": "check"}, 400, "branch"),
        ({"fromStepId": "trigger", "toStepId": "done", "branch": "yes"}, 400, "branch"),
        (
            {
                "fromStepId": "check",
                "toStepId": "done",
                "branch": "no",
                "condition": {"branch": "yes"},
            },
            400,
            "condition",
        ),
        ({"fromStepId": "wait", "toStepId": "done", "waitOutcome": "LATER"}, 400, "waitOutcome"),
        ({"toStepId": "done"}, 400, "fromStepId"),
        ({"fromStepId": "check", "toStepId": "done", "branch": "yes"}, 409, "fromStepId"),
        ({"fromStepId": "trigger", "toStepId": "done"}, 409, "fromStepId"),
    ],
)
def test_an_invalid_transition_is_refused_naming_the_field(api, waiting, body, status, field):
    before = (version_of(waiting), graph_of(waiting))
    fault = error(api.post(url(waiting, "/transitions"), body), status)
    assert field in fault["fields"], fault
    if status == 409:
        assert fault["code"] == "transition_exists"
    assert (version_of(waiting), graph_of(waiting)) == before


def test_a_transition_that_closes_a_cycle_is_refused(api, waiting):
    fault = error(
        api.post(
            url(waiting, "/transitions"),
            {"fromStepId": "check", "toStepId": "wait", "branch": "no"},
        ),
        400,
    )
    assert "cycle" in fault["message"]
    assert ("check", "no", "wait") not in edges(waiting)


def test_it_deletes_a_transition_by_its_id(api, waiting):
    assert api.delete(url(waiting, "/transitions/check:yes")).status_code == 204
    assert ("check", "yes", "done") not in edges(waiting)
    assert Transition.objects.filter(workflow=waiting).count() == 2


@pytest.mark.parametrize("ident", ["check:no", "check", "nope:next", "trigger:yes"])
def test_an_unknown_transition_is_a_404(api, waiting, ident):
    before = graph_of(waiting)
    assert error(api.delete(url(waiting, f"/transitions/{ident}")), 404)["code"] == "not_found"
    error(api.post(url(waiting, f"/transitions/{ident}/insert-step"), {"type": "exit"}), 404)
    assert graph_of(waiting) == before


def test_it_inserts_a_step_on_a_transition(api, locked):
    # An enabled workflow stays complete: trigger -> new -> pause -> done. (Locked: disable
    # it is not enough while its run waits, so use a fresh copy of the same graph.)
    workflow = workflow_create(name="Live", trigger_event="e", enabled=True, graph=WAIT_GRAPH)
    response = api.post(
        url(workflow, "/transitions/trigger:next/insert-step"),
        {"type": "update_contact", "name": "Tag", "config": {"set": {"stage": "new"}}},
    )
    assert response.status_code == 201, response.content
    step = response.json()["data"]
    assert step["key"] == "tag" and step["type"] == "update_contact"
    assert edges(workflow) == [
        ("pause", "next", "done"),
        ("tag", "next", "pause"),
        ("trigger", "next", "tag"),
    ]


def test_an_inserted_condition_leads_on_by_the_branch_asked(api, draft):
    response = api.post(
        url(draft, "/transitions/pause:next/insert-step"),
        {
            "type": "condition",
            "key": "pro",
            "branch": "no",
            "config": {"field": "contact.plan", "operator": "equals", "value": "pro"},
        },
    )
    assert response.status_code == 201, response.content
    assert edges(draft) == [
        ("pause", "next", "pro"),
        ("pro", "no", "done"),
        ("trigger", "next", "pause"),
    ]
    bad = api.post(
        url(draft, "/transitions/pause:next/insert-step"), {"type": "exit", "branch": "next"}
    )
    assert "branch" in error(bad, 400)["fields"]


def test_an_invalid_inserted_step_changes_nothing(api, draft):
    before = (version_of(draft), graph_of(draft))
    fault = error(
        api.post(
            url(draft, "/transitions/pause:next/insert-step"),
            {"type": "delay", "config": {"amount": "soon", "unit": "days"}},
        ),
        400,
    )
    assert "config.amount" in fault["fields"]
    assert (version_of(draft), graph_of(draft)) == before


def test_an_edit_is_reapplied_when_someone_saved_in_between(api, draft, monkeypatch):
    real = graph_edits.workflow_graph_snapshot
    calls = []

    def stale_once(workflow):
        version, document = real(workflow)
        calls.append(version)
        return (version - 1 if len(calls) == 1 else version), document

    monkeypatch.setattr(graph_edits, "workflow_graph_snapshot", stale_once)
    response = api.patch(url(draft, "/steps/pause"), {"name": "Retried"})
    assert response.status_code == 200 and len(calls) == 2
    assert Step.objects.get(workflow=draft, key="pause").name == "Retried"


# --- enabling a draft, in the admin too --------------------------------------------------------


@pytest.fixture
def loose(api, draft):
    """The draft with an extra step not connected (made through the API)."""
    assert api.post(url(draft, "/steps"), {"type": "exit", "key": "loose"}).status_code == 201
    return draft


def test_the_admins_enable_button_refuses_a_draft(admin_client, loose):
    response = admin_client.post(
        reverse("admin:workflows_app_workflow_enabled", args=[loose.pk]),
        {"enabled": "true"},
        follow=True,
    )
    assert response.status_code == 200
    assert any("not reachable" in str(m) for m in get_messages(response.wsgi_request))
    assert Workflow.objects.get(pk=loose.pk).enabled is False


def test_the_admins_enable_action_refuses_a_draft(admin_client, loose):
    response = admin_client.post(
        reverse("admin:workflows_app_workflow_changelist"),
        {"action": "enable", "_selected_action": [loose.pk]},
        follow=True,
    )
    assert any("Not enabled 'Draft'" in str(m) for m in get_messages(response.wsgi_request))
    assert Workflow.objects.get(pk=loose.pk).enabled is False


def test_the_admins_change_form_refuses_to_enable_a_draft(admin_client, loose):
    response = admin_client.post(
        reverse("admin:workflows_app_workflow_change", args=[loose.pk]),
        {"name": "Draft", "description": "", "allow_reentry": "", "enabled": "on"},
    )
    assert response.status_code == 200  # the form again, with the error
    assert "not reachable" in response.content.decode()
    assert Workflow.objects.get(pk=loose.pk).enabled is False


def test_a_draft_is_duplicated_as_a_draft(api, loose):
    response = api.post(url(loose, "/duplicate"))
    assert response.status_code == 201, response.content
    copy_ = Workflow.objects.get(pk=response.json()["data"]["id"])
    assert graph_of(copy_) == graph_of(loose) and copy_.enabled is False


@pytest.mark.parametrize(
    ("method", "tail"),
    [("post", "/steps"), ("patch", "/steps/pause"), ("post", "/transitions"), ("put", "/graph")],
)
def test_edits_refuse_oversized_and_non_json_bodies(api, draft, settings, method, tail):
    before = (version_of(draft), graph_of(draft))
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 500
    big = {"type": "exit", "name": "x" * 600, "fromStepId": "x" * 600}
    assert error(api.call(method, url(draft, tail), big), 413)["code"] == "payload_too_large"
    form = api.call(method, url(draft, tail), raw="type=exit", content_type="text/plain")
    assert error(form, 415)["code"] == "unsupported_media_type"
    assert error(api.call(method, url(draft, tail), raw="{"), 400)["code"] == "invalid_json"
    assert (version_of(draft), graph_of(draft)) == before
