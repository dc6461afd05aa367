"""The canvas draws a step's ports by the server's rules: a `branch_requires` field that is
false, 0, empty or null leaves its branch out on both sides (StepType.branches_for reads it
with Python truthiness), so the canvas never offers a port the save would refuse. And a type
with no canvas code of its own (tests/test_step_registry.py's PlanCheck: it names no `form`)
is added from the palette and edited in the form generated from its config schema."""

import json

import pytest

from tests.browser.conftest import login
from tests.browser.test_canvas import add, drag_connect, handle, open_canvas, select
from tests.test_step_registry import PlanCheck
from workflows_app.graph import workflow_graph_document, workflow_save_graph
from workflows_app.models import Step, Workflow
from workflows_app.services import workflow_create
from workflows_app.steps import STEP_TYPES

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def plan_check(monkeypatch):
    # live_server serves from this process: the canvas's palette comes from this registry.
    monkeypatch.setitem(STEP_TYPES, PlanCheck.type, PlanCheck())


def at(step, x, y):
    return {**step, "position": {"x": x, "y": y}}


def tag(key, x, y):
    return at({"key": key, "type": "update_contact", "config": {"set": {"route": key}}}, x, y)


GRAPH = {
    "steps": [
        at(
            {"key": "check", "type": "plan_check", "config": {"plan": "pro", "fallback": False}},
            0,
            0,
        ),
        at({"key": "zero", "type": "plan_check", "config": {"plan": "pro", "fallback": 0}}, 0, 200),
        at({"key": "wait", "type": "wait_for_event", "config": {"event": "user.paid"}}, 0, 400),
        tag("paid", 0, 600),
        tag("other", 300, 200),
        tag("unknown", 300, 400),
    ],
    "transitions": [
        {"from": "trigger", "to": "check"},
        {"from": "check", "branch": "match", "to": "zero"},
        {"from": "check", "branch": "other", "to": "other"},
        {"from": "other", "to": "unknown"},
        {"from": "zero", "branch": "match", "to": "wait"},
        {"from": "wait", "branch": "event", "to": "paid"},
    ],
}


def ports(page, node):
    found = page.locator(f'.react-flow__node[data-id="{node}"] .react-flow__handle-bottom')
    return [found.nth(i).get_attribute("data-handleid") for i in range(found.count())]


def test_false_zero_and_empty_fields_add_no_port(page, superuser, plan_check):
    workflow = workflow_create(name="Plans", trigger_event="user.signup", graph=GRAPH)
    # As stored, not parsed: PlanCheck keeps what was sent (fallback 0), and a Wait for Event
    # row may hold Plunk's shape as written, where a timeout of 0 means none.
    assert Step.objects.get(key="zero").config == {"plan": "pro", "fallback": 0}
    Step.objects.filter(key="wait").update(config={"eventName": "user.paid", "timeout": 0})
    login(page, "boss")
    open_canvas(page, workflow)
    page.wait_for_selector('.react-flow__node[data-id="unknown"]')

    assert ports(page, "check") == ["match", "other"]
    assert ports(page, "zero") == ["match", "other"]
    assert ports(page, "wait") == ["event"]
    select(page, "wait")
    assert not page.locator("#cfg-timeout-on").is_checked()

    # fallback true: the port appears, takes a connection, and the save keeps both. As JSON
    # (the generated form's switch), to type each of the server's falsy forms below.
    select(page, "check")
    page.click("#cfg-as-json")
    page.fill("#cfg-json", '{"plan": "pro", "fallback": true}')
    assert ports(page, "check") == ["match", "other", "unknown"]
    page.select_option("#out-unknown", "unknown")
    page.click("button.wf-save")
    page.wait_for_selector('[data-testid="notice"]:has-text("Saved.")')
    saved = workflow_graph_document(Workflow.objects.get(pk=workflow.pk))
    assert {"from": "check", "to": "unknown", "branch": "unknown"} in saved["transitions"]

    # Unset again (each of the server's falsy forms): the port goes, and its connection with it.
    for unset in ("false", "0", "null", '""', "[]", "{}"):
        page.fill("#cfg-json", '{"plan": "pro", "fallback": true}')
        assert handle(page, "check", "unknown").count() == 1
        page.fill("#cfg-json", f'{{"plan": "pro", "fallback": {unset}}}')
        assert handle(page, "check", "unknown").count() == 0, unset
        assert page.locator("#out-unknown").count() == 0
    assert page.locator('.react-flow__edge[data-testid$="check:unknown"]').count() == 0
    page.fill("#cfg-json", '{"plan": "pro", "fallback": false}')
    page.click("button.wf-save")
    page.wait_for_selector('[data-testid="notice"]:has-text("Saved.")')
    saved = workflow_graph_document(Workflow.objects.get(pk=workflow.pk))
    assert not [t for t in saved["transitions"] if t["branch"] == "unknown"]


def field_error(page, field_id):
    return page.locator(f".wf-field:has(#{field_id}) .wf-field-message")


def test_a_new_type_is_added_and_edited_in_its_generated_form(page, superuser, plan_check):
    workflow = workflow_create(name="Plans", trigger_event="user.signup")
    # A disabled workflow's draft: one step, not connected yet (the new step's target).
    workflow_save_graph(
        workflow=workflow, document={"steps": [tag("unknown", 300, 300)]}, draft=True
    )
    login(page, "boss")
    open_canvas(page, workflow)
    page.locator(".react-flow__node-trigger").click()
    add(page, "plan_check")
    page.wait_for_selector('.react-flow__node[data-id="plan_check-1"]')
    page.wait_for_timeout(250)
    drag_connect(page, "trigger", "next", "plan_check-1")
    select(page, "plan_check-1")

    # The form from the schema: the field's title, its description as the hint, `plan`
    # marked required, `fallback` a checkbox at its default.
    form = page.locator('[data-testid="schema-form"]')
    assert form.locator('label[for="cfg-prop-plan"]').inner_text() == "Plan *"
    assert "The plan to look for" in form.inner_text()
    assert not page.locator("#cfg-prop-fallback").is_checked()
    assert page.locator("#cfg-json").count() == 0
    assert ports(page, "plan_check-1") == ["match", "other"]

    # The server's error for an empty plan shows under the field.
    page.click("button.wf-save")
    assert "Field required" in field_error(page, "cfg-prop-plan").inner_text()

    page.fill("#cfg-prop-plan", "pro")
    page.check("#cfg-prop-fallback")
    assert ports(page, "plan_check-1") == ["match", "other", "unknown"]
    page.select_option("#out-unknown", "unknown")
    page.click("button.wf-save")
    page.wait_for_selector('[data-testid="notice"]:has-text("Saved.")')
    assert Step.objects.get(workflow=workflow, key="plan_check-1").config == {
        "plan": "pro",
        "fallback": True,
    }
    saved = workflow_graph_document(Workflow.objects.get(pk=workflow.pk))
    assert {"from": "plan_check-1", "to": "unknown", "branch": "unknown"} in saved["transitions"]

    # Reloaded, the form shows the stored config; unticked, the port and its edge go.
    page.reload()
    page.wait_for_selector('.react-flow__node[data-id="plan_check-1"]')
    select(page, "plan_check-1")
    assert page.locator("#cfg-prop-plan").input_value() == "pro"
    assert page.locator("#cfg-prop-fallback").is_checked()
    assert page.locator("#out-unknown").input_value() == "unknown"
    page.uncheck("#cfg-prop-fallback")
    assert ports(page, "plan_check-1") == ["match", "other"]
    assert page.locator("#out-unknown").count() == 0
    assert page.locator('.react-flow__edge[data-testid$="plan_check-1:unknown"]').count() == 0

    # The JSON switch shows the same config, and what is typed there comes back to the form.
    page.click("#cfg-as-json")
    assert json.loads(page.locator("#cfg-json").input_value()) == {
        "plan": "pro",
        "fallback": False,
    }
    page.fill("#cfg-json", '{"plan": "team", "fallback": false}')
    page.click("#cfg-as-json")
    assert page.locator("#cfg-prop-plan").input_value() == "team"
    page.select_option("#out-match", "unknown")  # every step reachable again, for the save
    page.click("button.wf-save")
    page.wait_for_selector('[data-testid="notice"]:has-text("Saved.")')
    assert Step.objects.get(workflow=workflow, key="plan_check-1").config == {
        "plan": "team",
        "fallback": False,
    }
    saved = workflow_graph_document(Workflow.objects.get(pk=workflow.pk))
    assert sorted((t["from"], t["branch"], t["to"]) for t in saved["transitions"]) == [
        ("plan_check-1", "match", "unknown"),
        ("trigger", "next", "plan_check-1"),
    ]
