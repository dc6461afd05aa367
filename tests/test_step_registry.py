"""A step type owns itself: adding one means writing its module and registering it, nothing
else. This test adds a small type with a config-dependent branch, a config schema (the canvas
edits it with the form it generates from that schema: it names no hand-written `form`) and its
own account of a dry-run visit, and runs it through every layer: the palette, graph
validation, the canvas's endpoints, the save, the file format, the dry run and the engine.
On the canvas itself (its generated form and its ports):
tests/browser/test_canvas_branch_rules.py."""

import json

import pytest
from django.urls import reverse
from pydantic import Field

from tests.conftest import drain
from tests.flow import execution_of, history, track_ok
from workflows_app.canvas import canvas_palette
from workflows_app.files import document_export, document_import
from workflows_app.graph import GraphError, workflow_save_graph
from workflows_app.models import Step, StepRun, step_type_choices
from workflows_app.services import workflow_create
from workflows_app.simulate import simulation_parse, workflow_simulate
from workflows_app.steps import STEP_TYPES
from workflows_app.steps.base import Outcome, RunContext, StepConfig, StepType


class PlanCheckConfig(StepConfig):
    plan: str = Field(min_length=1, description="The plan to look for")
    # With a fallback set, contacts without any plan take the `unknown` branch.
    fallback: bool = False


class PlanCheck(StepType):
    type = "plan_check"
    label = "Plan check"
    description = "Branch on the contact's plan."
    Config = PlanCheckConfig
    branches = ("match", "other", "unknown")
    branch_requires = {"unknown": "fallback"}

    def run(self, ctx: RunContext) -> Outcome:
        plan = ctx.contact.data.get("plan")
        if plan is None and ctx.config.fallback:
            return Outcome(kind="next", branch="unknown", output={"plan": None})
        branch = "match" if plan == ctx.config.plan else "other"
        return Outcome(kind="next", branch=branch, output={"plan": plan})

    def dry_run_detail(self, config, outcome, *, contact, context):
        return {"looked_for": config.plan, "plan": contact.data.get("plan"), "took": outcome.branch}


@pytest.fixture
def plan_check(monkeypatch):
    monkeypatch.setitem(STEP_TYPES, PlanCheck.type, PlanCheck())
    return STEP_TYPES[PlanCheck.type]


def tag(key, value):
    return {"key": key, "type": "update_contact", "config": {"set": {"route": value}}}


def graph(fallback):
    return {
        "steps": [
            {"key": "check", "type": "plan_check", "config": {"plan": "pro", "fallback": fallback}},
            tag("pro", "pro"),
            tag("other", "other"),
            tag("unknown", "unknown"),
        ],
        "transitions": [
            {"from": "trigger", "to": "check"},
            {"from": "check", "branch": "match", "to": "pro"},
            {"from": "check", "branch": "other", "to": "other"},
            {"from": "check", "branch": "unknown", "to": "unknown"},
        ],
    }


def test_the_palette_describes_it_for_the_canvas(plan_check):
    described = next(k for k in canvas_palette() if k["type"] == "plan_check")
    assert described["branches"] == ["match", "other", "unknown"]
    assert described["branch_requires"] == {"unknown": "fallback"}
    assert described["waits"] is False
    assert set(described["config_schema"]["properties"]) == {"plan", "fallback"}
    assert described["form"] == ""  # no hand-written form: the canvas generates one
    # The built-in types name their hand-written canvas forms (ConfigPanel.jsx FORMS).
    forms = {k["type"]: k["form"] for k in canvas_palette()}
    assert forms["condition"] == "condition"
    assert forms["split"] == "split"
    assert ("plan_check", "Plan check") in step_type_choices()


def test_its_config_dependent_branch_is_validated(db, plan_check):
    workflow = workflow_create(name="Plans", trigger_event="user.signup")
    with pytest.raises(GraphError) as info:
        workflow_save_graph(workflow=workflow, document=graph(fallback=False))
    assert "has branches match, other, not 'unknown'" in str(info.value)
    with pytest.raises(GraphError) as info:
        bad = graph(fallback=True)
        bad["steps"][0]["config"] = {"plan": ""}
        workflow_save_graph(workflow=workflow, document=bad)
    assert info.value.errors[0]["field"] == "config.plan"
    workflow_save_graph(workflow=workflow, document=graph(fallback=True))
    assert Step.objects.get(key="check").config == {"plan": "pro", "fallback": True}
    exported = document_export(["Plans"])
    assert exported["workflows"][0]["steps"][0]["type"] == "plan_check"
    Step.objects.filter(key="check").delete()  # no runs: the graph may change
    document_import(exported)  # and the file brings it back whole
    assert Step.objects.get(key="check").config == {"plan": "pro", "fallback": True}


@pytest.mark.parametrize(
    ("data", "route"),
    [({"plan": "pro"}, "pro"), ({"plan": "free"}, "other"), ({}, "unknown")],
)
def test_the_engine_runs_it_down_each_branch(track, plan_check, data, route):
    workflow_create(
        name="Plans", trigger_event="user.signup", enabled=True, graph=graph(fallback=True)
    )
    track_ok(track, data=data)
    drain()
    ex = execution_of()
    assert ex.contact.data["route"] == route
    assert history(ex)[0] == ("check", StepRun.COMPLETED, {"pro": "match"}.get(route, route))


@pytest.mark.parametrize("unset", [False, 0])
def test_the_canvas_endpoints_describe_it_and_refuse_a_port_its_config_lacks(
    admin_client, plan_check, unset
):
    """The canvas's leg over HTTP: what it loads, and its save. The port rule itself (false and
    0 draw no `unknown` port) is drawn in tests/browser/test_canvas_branch_rules.py."""
    workflow = workflow_create(name="Plans", trigger_event="user.signup")
    url = reverse("admin:workflows_app_workflow_canvas", args=[workflow.pk])
    state = admin_client.get(url).json()
    described = next(k for k in state["palette"] if k["type"] == "plan_check")
    assert described["branch_requires"] == {"unknown": "fallback"}
    assert described["config_schema"]["properties"]["fallback"]["default"] is False

    def save(fallback):
        return admin_client.put(
            url,
            data=json.dumps(
                {
                    "graph": graph(fallback=fallback),
                    "graph_version": state["workflow"]["graph_version"],
                }
            ),
            content_type="application/json",
        )

    refused = save(unset)
    assert refused.status_code == 400
    errors = {e["step"]: e["message"] for e in refused.json()["errors"]}
    assert errors["check"] == (
        "a Plan check step has branches match, other, not 'unknown' (set fallback to use 'unknown')"
    )
    assert not Step.objects.filter(workflow=workflow).exists()
    assert save(True).status_code == 200
    assert Step.objects.get(workflow=workflow, key="check").config == {
        "plan": "pro",
        "fallback": True,
    }


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        ({"plan": "pro"}, {"looked_for": "pro", "plan": "pro", "took": "match"}),
        ({}, {"looked_for": "pro", "plan": None, "took": "unknown"}),
    ],
)
def test_the_dry_run_shows_its_own_account_of_a_visit(db, plan_check, data, detail):
    workflow = workflow_create(name="Plans", trigger_event="user.signup", graph=graph(True))
    result = workflow_simulate(
        workflow=workflow, request=simulation_parse({"contact": {"data": data}})
    )
    visits = {p["step"]: p for p in result["path"]}
    assert visits["check"]["detail"] == detail
    # A type without the hook: the dry run's own account (here, the contact change).
    route = {"match": "pro"}.get(detail["took"], detail["took"])
    assert visits[route]["detail"]["set"] == {"route": route}
