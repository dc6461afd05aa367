"""The A/B Split on the canvas: added from the palette, branches and weights edited in its form
with live shares, one labelled port per branch, edges kept across renames, saved and reloaded."""

import pytest

from tests.browser.conftest import login, screenshot
from tests.browser.test_canvas import add, drag_connect, fit, handle, open_canvas, select
from workflows_app.graph import workflow_graph_document
from workflows_app.models import Workflow
from workflows_app.services import workflow_create

pytestmark = pytest.mark.django_db(transaction=True)


def port_ids(page, node) -> list[str]:
    ports = page.locator(f'.react-flow__node[data-id="{node}"] .react-flow__handle-bottom')
    return [ports.nth(i).get_attribute("data-handleid") for i in range(ports.count())]


def port_labels(page, node) -> list[str]:
    labels = page.locator(f'.react-flow__node[data-id="{node}"] .wf-port-label')
    return [labels.nth(i).inner_text() for i in range(labels.count())]


def summary(page, node) -> str:
    return page.locator(f'.react-flow__node[data-id="{node}"] .wf-node-summary').inner_text()


def shares(page) -> list[str]:
    out = page.locator(".wf-split-share")
    return [out.nth(i).inner_text() for i in range(out.count())]


def targets(workflow) -> list[tuple[str, str]]:
    document = workflow_graph_document(Workflow.objects.get(pk=workflow.pk))
    return sorted((t["branch"], t["to"]) for t in document["transitions"] if t["from"] == "split-1")


def split_config(workflow) -> dict:
    document = workflow_graph_document(Workflow.objects.get(pk=workflow.pk))
    return next(s for s in document["steps"] if s["key"] == "split-1")["config"]


def test_it_builds_a_weighted_split_with_a_port_per_branch(page, superuser, transactional_db):
    workflow = workflow_create(name="Welcome test", trigger_event="user.signup")
    login(page, "boss")
    open_canvas(page, workflow)
    item = page.locator('.wf-palette-item[data-step-type="split"]')
    assert item.inner_text() == "A/B Split"

    page.locator(".react-flow__node-trigger").click()
    add(page, "split")
    page.wait_for_selector('.react-flow__node[data-id="split-1"]')
    page.wait_for_timeout(250)
    drag_connect(page, "trigger", "next", "split-1")
    for _ in range(2):
        add(page, "exit")
        page.wait_for_timeout(150)

    # A new split starts with two even branches: a port each, labelled with id and share.
    select(page, "split-1")
    assert port_ids(page, "split-1") == ["a", "b"]
    assert port_labels(page, "split-1") == ["a 50%", "b 50%"]
    assert shares(page) == ["50%", "50%"]

    page.fill("#cfg-split-0-weight", "70")
    page.fill("#cfg-split-1-weight", "30")
    assert shares(page) == ["70%", "30%"]
    assert summary(page, "split-1") == "a 70% · b 30%"
    assert port_labels(page, "split-1") == ["a 70%", "b 30%"]

    fit(page)
    drag_connect(page, "split-1", "a", "exit-1")
    drag_connect(page, "split-1", "b", "exit-2")
    assert page.locator(".react-flow__edge").count() == 3

    # A third branch: its own port and share; with weights 70/30/50 the shares follow.
    select(page, "split-1")
    page.click("#cfg-add-split-branch")
    assert port_ids(page, "split-1") == ["a", "b", "c"]
    assert shares(page) == ["46.7%", "20%", "33.3%"]
    page.select_option("#out-c", "exit-2")  # two ways may lead to one step
    assert page.locator(".react-flow__edge").count() == 4

    # Renaming a branch renames its port and keeps its edge; an unusable id is refused next
    # to the field and the port (and its edge) stay as they were.
    page.fill("#cfg-split-1-id", "control")
    assert port_ids(page, "split-1") == ["a", "control", "c"]
    assert page.locator("#out-control").input_value() == "exit-2"
    page.fill("#cfg-split-1-id", "a")
    row = page.locator('[data-testid="split-branch-1"]')
    assert "already a branch" in row.locator(".wf-field-message").inner_text()
    page.fill("#cfg-split-1-id", "no spaces")
    assert "Letters, digits" in row.locator(".wf-field-message").inner_text()
    assert port_ids(page, "split-1") == ["a", "control", "c"]
    page.fill("#cfg-split-1-id", "control")
    assert row.locator(".wf-field-message").count() == 0

    # A weight of 0 is marked at once.
    page.fill("#cfg-split-2-weight", "0")
    assert (
        "above 0" in page.locator('[data-testid="split-branch-2"] .wf-field-message').inner_text()
    )
    assert shares(page)[2] == "—"

    # Removing a branch takes its port and its edge; two is the least.
    page.locator('[data-testid="split-branch-2"] button[aria-label="Remove branch"]').click()
    assert port_ids(page, "split-1") == ["a", "control"]
    assert page.locator(".react-flow__edge").count() == 3
    assert page.locator('button[aria-label="Remove branch"]').first.is_disabled()
    screenshot(page, "canvas-split")

    page.click("button.wf-save")
    page.wait_for_selector('[data-testid="notice"]:has-text("Saved.")')
    assert split_config(workflow) == {
        "branches": [{"id": "a", "weight": 70}, {"id": "control", "weight": 30}]
    }
    assert targets(workflow) == [("a", "exit-1"), ("control", "exit-2")]

    # Reloaded: the ports, their labels, the summary and the edges come back.
    page.reload()
    page.wait_for_selector('.react-flow__node[data-id="split-1"]')
    assert port_ids(page, "split-1") == ["a", "control"]
    assert port_labels(page, "split-1") == ["a 70%", "control 30%"]
    assert summary(page, "split-1") == "a 70% · control 30%"
    assert page.locator(".react-flow__edge").count() == 3
    select(page, "split-1")
    assert page.input_value("#cfg-split-0-weight") == "70"
    assert shares(page) == ["70%", "30%"]


def test_the_servers_errors_show_next_to_the_branch(page, superuser, transactional_db):
    workflow = workflow_create(name="Welcome test", trigger_event="user.signup")
    login(page, "boss")
    open_canvas(page, workflow)
    page.locator(".react-flow__node-trigger").click()
    add(page, "split")
    page.wait_for_selector('.react-flow__node[data-id="split-1"]')
    page.wait_for_timeout(250)
    drag_connect(page, "trigger", "next", "split-1")
    select(page, "split-1")
    page.fill("#cfg-split-1-weight", "2000000")  # over the server's cap
    page.click("button.wf-save")
    page.wait_for_selector('[data-testid="save-error"]')
    message = page.locator('[data-testid="split-branch-1"] .wf-field-message')
    assert "at most 1000000" in message.inner_text()
    assert page.locator('[data-testid="split-branch-0"] .wf-field-message').count() == 0
    assert workflow_graph_document(Workflow.objects.get(pk=workflow.pk))["steps"] == []
    assert handle(page, "split-1", "b").count() == 1
