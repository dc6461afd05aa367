"""The canvas draws a step's ports by the server's rules: a `branch_requires` field that is
false, 0, empty or null leaves its branch out on both sides (StepType.branches_for reads it
with Python truthiness), so the canvas never offers a port the save would refuse."""

import pytest

from tests.browser.conftest import login
from tests.browser.test_canvas import handle, open_canvas, select
from tests.test_step_registry import PlanCheck
from workflows_app.graph import workflow_graph_document
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

    # fallback true: the port appears, takes a connection, and the save keeps both.
    select(page, "check")
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
