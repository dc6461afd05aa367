"""Editing as people expect: multi-branch ports and edge labels, automatic layout of a graph
without positions, renaming and moving while locked (and nothing else), full screen."""

import pytest

from templates_app.models import Template
from tests.browser.conftest import login, screenshot
from tests.browser.test_canvas import add, drag_connect, fit, handle, open_canvas, select
from tests.canvas_data import WAIT_GRAPH, start_runs
from workflows_app.files import document_import
from workflows_app.graph import workflow_graph_document
from workflows_app.models import Workflow
from workflows_app.services import workflow_create

pytestmark = pytest.mark.django_db(transaction=True)


def edge_labels(page) -> list[str]:
    texts = page.locator(".react-flow__edge-text")
    return sorted(texts.nth(i).text_content() for i in range(texts.count()))


_BOXES_JS = """() => Object.fromEntries(
  [...document.querySelectorAll('.react-flow__node')].map((n) => {
  const r = n.getBoundingClientRect();
  return [n.dataset.id, {x: r.x, y: r.y, width: r.width, height: r.height}];
}))"""


def node_boxes(page) -> dict[str, dict]:
    """Every node's box, read at one instant and once the viewport has stopped moving (a
    fitView follows a layout): boxes read one by one could straddle the move."""
    boxes = page.evaluate(_BOXES_JS)
    for _ in range(50):
        page.wait_for_timeout(100)
        again = page.evaluate(_BOXES_JS)
        if again == boxes:
            return boxes
        boxes = again
    raise AssertionError("the canvas never stopped moving")


def overlapping(boxes: dict[str, dict]) -> list[tuple[str, str]]:
    keys = sorted(boxes)
    hits = []
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            p, q = boxes[a], boxes[b]
            if (
                p["x"] < q["x"] + q["width"]
                and q["x"] < p["x"] + p["width"]
                and p["y"] < q["y"] + q["height"]
                and q["y"] < p["y"] + p["height"]
            ):
                hits.append((a, b))
    return hits


def saved(page):
    page.click("button.wf-save")
    page.wait_for_selector('[data-testid="notice"]:has-text("Saved.")')


def test_it_builds_a_multi_branch_condition_with_a_port_and_a_label_per_branch(
    page, superuser, transactional_db
):
    workflow = workflow_create(name="Plans", trigger_event="user.signup")
    login(page, "boss")
    open_canvas(page, workflow)
    page.locator(".react-flow__node-trigger").click()
    add(page, "condition")
    page.wait_for_selector('.react-flow__node[data-id="condition-1"]')
    page.wait_for_timeout(250)
    drag_connect(page, "trigger", "next", "condition-1")
    for _ in range(3):
        add(page, "exit")  # each below the last one added
        page.wait_for_timeout(150)

    select(page, "condition-1")
    assert handle(page, "condition-1", "yes").count() == 1  # binary until switched
    page.fill("#cfg-field", "contact.plan")
    page.check("#cfg-mode-multi")
    assert handle(page, "condition-1", "yes").count() == 0
    assert handle(page, "condition-1", "default").count() == 1
    page.click("#cfg-add-branch")
    page.click("#cfg-add-branch")
    page.fill("#cfg-branch-0-name", "Pro plan")
    page.select_option("#cfg-branch-0-operator", "equals")
    page.fill("#cfg-branch-0-value", "pro")
    page.fill("#cfg-branch-1-name", "Free")
    page.select_option("#cfg-branch-1-operator", "exists")
    assert page.locator("#cfg-branch-1-value").count() == 0  # exists takes no value
    page.select_option("#cfg-branch-1-operator", "equals")
    page.fill("#cfg-branch-1-value", "free")
    # One port per branch (its id follows its name) plus default, in order.
    ports = page.locator('.react-flow__node[data-id="condition-1"] .react-flow__handle-bottom')
    assert [ports.nth(i).get_attribute("data-handleid") for i in range(ports.count())] == [
        "pro-plan",
        "free",
        "default",
    ]

    fit(page)
    drag_connect(page, "condition-1", "pro-plan", "exit-1")
    drag_connect(page, "condition-1", "free", "exit-2")
    drag_connect(page, "condition-1", "default", "exit-3")
    assert page.locator(".react-flow__edge").count() == 4
    assert edge_labels(page) == ["Free", "Pro plan", "default"]

    # Renaming a branch renames its port and keeps its connection; reordering keeps both.
    select(page, "condition-1")
    page.fill("#cfg-branch-1-name", "Free plan")
    page.locator('[data-testid="branch-0"] button[aria-label="Move down"]').click()
    assert page.locator(".react-flow__edge").count() == 4
    assert edge_labels(page) == ["Free plan", "Pro plan", "default"]
    assert page.input_value("#cfg-branch-0-name") == "Free plan"
    assert page.locator("#out-free-plan").input_value() == "exit-2"
    page.click("text=Tidy up")
    page.wait_for_timeout(400)
    # Tidy up keeps the children in the order of the ports: no crossing edges.
    boxes = node_boxes(page)
    assert boxes["exit-2"]["x"] < boxes["exit-1"]["x"] < boxes["exit-3"]["x"]
    screenshot(page, "canvas-multi-branch")

    saved(page)
    document = workflow_graph_document(Workflow.objects.get(pk=workflow.pk))
    condition = next(s for s in document["steps"] if s["key"] == "condition-1")
    assert condition["config"]["mode"] == "multi"
    assert condition["config"]["field"] == "contact.plan"
    assert [
        (b["id"], b["name"], b["operator"], b["value"]) for b in condition["config"]["branches"]
    ] == [("free-plan", "Free plan", "equals", "free"), ("pro-plan", "Pro plan", "equals", "pro")]
    assert sorted(
        (t["branch"], t["to"]) for t in document["transitions"] if t["from"] == "condition-1"
    ) == [("default", "exit-3"), ("free-plan", "exit-2"), ("pro-plan", "exit-1")]

    # Back to yes / no: the first branch's test is kept, the branch ports and their edges go.
    select(page, "condition-1")
    page.check("#cfg-mode-binary")
    assert page.input_value("#cfg-value") == "free"
    assert handle(page, "condition-1", "default").count() == 0
    assert page.locator(".react-flow__edge").count() == 1


UNPLACED = {
    "templates": [],
    "workflows": [
        {
            "name": "Imported",
            "trigger_event": "user.signup",
            "steps": [
                {"key": "pause", "type": "delay", "config": {"amount": 1.5, "unit": "hours"}},
                {
                    "key": "is_pro",
                    "type": "condition",
                    "config": {"field": "contact.plan", "operator": "equals", "value": "pro"},
                },
                {"key": "tag", "type": "update_contact", "config": {"set": {"stage": "pro"}}},
                {"key": "hook", "type": "webhook", "config": {"url": "https://example.com/h"}},
                {"key": "bye", "type": "exit", "config": {"reason": "free"}},
                {"key": "done", "type": "exit", "config": {}},
            ],
            "transitions": [
                {"from": "trigger", "to": "pause"},
                {"from": "pause", "to": "is_pro"},
                {"from": "is_pro", "branch": "yes", "to": "tag"},
                {"from": "is_pro", "branch": "no", "to": "bye"},
                {"from": "tag", "to": "hook"},
                {"from": "hook", "to": "done"},
            ],
        }
    ],
}


def test_a_graph_without_positions_is_laid_out_when_it_opens(page, superuser, transactional_db):
    document_import(UNPLACED)
    workflow = Workflow.objects.get(name="Imported")
    stored = workflow_graph_document(workflow)["steps"]
    assert {(s["position"]["x"], s["position"]["y"]) for s in stored} == {(0, 0)}

    login(page, "boss")
    open_canvas(page, workflow)
    page.wait_for_selector('[data-testid="notice"]:has-text("laid out")')
    boxes = node_boxes(page)
    assert len(boxes) == 7  # the trigger and six steps
    assert overlapping(boxes) == []
    # Top to bottom along the transitions.
    assert boxes["trigger"]["y"] < boxes["pause"]["y"] < boxes["is_pro"]["y"] < boxes["tag"]["y"]
    assert boxes["tag"]["x"] < boxes["bye"]["x"]  # yes, then no: in the order of the ports
    assert page.locator('[data-testid="dirty-state"]').inner_text() == "Unsaved changes"
    screenshot(page, "canvas-auto-layout")

    saved(page)
    positions = {
        s["key"]: (s["position"]["x"], s["position"]["y"])
        for s in workflow_graph_document(Workflow.objects.get(pk=workflow.pk))["steps"]
    }
    assert len(set(positions.values())) == 6

    # Reopened with positions: left as saved, nothing to save.
    page.reload()
    page.wait_for_selector('.react-flow__node[data-id="done"]')
    page.wait_for_timeout(300)
    assert page.locator('[data-testid="dirty-state"]').inner_text() == "All changes saved"


def test_a_partly_positioned_graph_is_laid_out_too(page, superuser, transactional_db):
    """Two steps placed, four without a position (added by the API, or a file that gave only
    some): the four would sit on one spot, so the graph is laid out."""
    document = {
        "templates": [],
        "workflows": [{**UNPLACED["workflows"][0], "name": "Partly placed"}],
    }
    steps = document["workflows"][0]["steps"]
    steps[0] = {**steps[0], "position": {"x": 400, "y": 0}}
    steps[1] = {**steps[1], "position": {"x": 400, "y": 200}}
    document_import(document)
    workflow = Workflow.objects.get(name="Partly placed")
    stored = {
        s["key"]: (s["position"]["x"], s["position"]["y"])
        for s in workflow_graph_document(workflow)["steps"]
    }
    assert stored["pause"] == (400, 0) and stored["tag"] == stored["bye"] == (0, 0)

    login(page, "boss")
    open_canvas(page, workflow)
    page.wait_for_selector('[data-testid="notice"]:has-text("laid out")')
    boxes = node_boxes(page)
    assert len(boxes) == 7
    assert overlapping(boxes) == []
    assert boxes["pause"]["y"] < boxes["is_pro"]["y"] < boxes["tag"]["y"] < boxes["hook"]["y"]
    assert page.locator('[data-testid="dirty-state"]').inner_text() == "Unsaved changes"


# Runs wait at `pause`; the condition's `no` port is free.
LOCKED_GRAPH = {
    "steps": [
        *WAIT_GRAPH["steps"][:1],
        {
            "key": "check",
            "type": "condition",
            "name": "Pro?",
            "config": {"field": "contact.plan", "operator": "equals", "value": "pro"},
            "position": {"x": 0, "y": 160},
        },
        {**WAIT_GRAPH["steps"][1], "position": {"x": 0, "y": 320}},
    ],
    "transitions": [
        {"from": "trigger", "to": "pause"},
        {"from": "pause", "to": "check"},
        {"from": "check", "branch": "yes", "to": "done"},
    ],
}


def test_a_locked_workflow_lets_you_rename_and_move_steps_and_nothing_else(
    page, superuser, transactional_db
):
    workflow = workflow_create(
        name="Nurture", trigger_event="user.signup", enabled=True, graph=LOCKED_GRAPH
    )
    start_runs(workflow, ["ann@example.com"])
    before = workflow_graph_document(workflow)
    login(page, "boss")
    open_canvas(page, workflow)
    banner = page.locator('[data-testid="lock-banner"]').inner_text()
    assert "1 active execution" in banner
    assert "rename steps and move them" in banner

    # Nothing to add, delete or connect; config and outputs are disabled.
    assert page.locator(".wf-palette").count() == 0
    select(page, "pause")
    assert page.locator("#cfg-delay-amount").is_disabled()
    assert page.locator("#cfg-delay-unit").is_disabled()
    assert page.locator("#out-next").is_disabled()
    assert page.locator(".wf-delete").count() == 0
    page.keyboard.press("Delete")
    assert page.locator('.react-flow__node[data-id="pause"]').count() == 1
    fit(page)
    page.locator(".react-flow__edge").first.click(force=True)
    page.keyboard.press("Backspace")
    assert page.locator(".react-flow__edge").count() == 3
    drag_connect(page, "check", "no", "done")  # a free port: still no new edge
    assert page.locator(".react-flow__edge").count() == 3
    select(page, "check")
    assert page.locator("#cfg-field").is_disabled()
    assert page.locator("#cfg-mode-multi").is_disabled()
    assert page.locator("#out-no").is_disabled()

    # The name and the position can change.
    select(page, "pause")
    assert page.locator("#cfg-name").is_enabled()
    page.fill("#cfg-name", "Two-day pause")
    assert "Two-day pause" in page.locator('.react-flow__node[data-id="pause"]').inner_text()
    node = page.locator('.react-flow__node[data-id="done"] .wf-node-title')
    box = node.bounding_box()
    page.mouse.move(box["x"] + 20, box["y"] + 5)
    page.mouse.down()
    page.mouse.move(box["x"] + 220, box["y"] + 65, steps=10)
    page.mouse.up()
    assert page.locator('[data-testid="dirty-state"]').inner_text() == "Unsaved changes"
    screenshot(page, "canvas-locked-rename-move")

    saved(page)
    after = workflow_graph_document(Workflow.objects.get(pk=workflow.pk))
    old, new = ({s["key"]: s for s in d["steps"]} for d in (before, after))
    assert new["pause"]["name"] == "Two-day pause"
    assert new["done"]["position"]["x"] > old["done"]["position"]["x"] + 100
    assert new["done"]["position"]["y"] > old["done"]["position"]["y"]
    assert new["pause"]["position"] == old["pause"]["position"]
    for key in old:  # nothing a run depends on changed
        assert (new[key]["type"], new[key]["config"]) == (old[key]["type"], old[key]["config"])
    assert after["transitions"] == before["transitions"]


def test_full_screen_takes_the_window_and_esc_leaves(page, superuser, transactional_db):
    Template.objects.create(name="Welcome", subject="Hi", html="<p>Hi</p>")
    workflow = workflow_create(
        name="Nurture", trigger_event="user.signup", enabled=False, graph=WAIT_GRAPH
    )
    login(page, "boss")
    open_canvas(page, workflow)
    root = page.locator('[data-testid="canvas-root"]')
    normal = root.bounding_box()
    assert normal["width"] < 1600 or normal["y"] > 0

    page.click('[data-testid="fullscreen"]')
    page.wait_for_timeout(300)
    box = root.bounding_box()
    assert (box["x"], box["y"], box["width"], box["height"]) == (0, 0, 1600, 1200)
    editor = page.locator(".wf-editor").bounding_box()
    assert editor["height"] > 1000  # the graph gets the room, not just the frame
    assert page.locator('[data-testid="fullscreen"]').inner_text() == "Exit full screen"
    screenshot(page, "canvas-fullscreen")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "canvas-fullscreen-dark")
    page.emulate_media(color_scheme="light")

    # Editing goes on in full screen; Esc leaves it, the edit kept.
    select(page, "pause")
    page.fill("#cfg-name", "Longer pause")
    page.locator("#cfg-name").press("Escape")
    page.wait_for_timeout(200)
    assert root.bounding_box() == normal
    assert page.locator('[data-testid="dirty-state"]').inner_text() == "Unsaved changes"

    page.click('[data-testid="fullscreen"]')
    page.wait_for_timeout(200)
    assert root.bounding_box()["height"] == 1200
    page.click('[data-testid="fullscreen"]')  # the button leaves too
    page.wait_for_timeout(200)
    assert root.bounding_box() == normal


def test_the_duplicate_button_opens_the_disabled_copy(page, superuser, transactional_db):
    workflow = workflow_create(
        name="Nurture", trigger_event="user.signup", enabled=True, graph=WAIT_GRAPH
    )
    login(page, "boss")
    open_canvas(page, workflow)
    page.click('[data-testid="duplicate-workflow"]')
    page.wait_for_selector(".messagelist")
    copy = Workflow.objects.get(name="Nurture (Copy)")
    assert page.url.endswith(f"/admin/workflows_app/workflow/{copy.pk}/change/")
    assert "Duplicated 'Nurture' as 'Nurture (Copy)'" in page.locator(".messagelist").inner_text()
    page.wait_for_selector('.react-flow__node[data-id="done"]')
    assert page.locator(".react-flow__edge").count() == 2
    assert copy.enabled is False
    screenshot(page, "workflow-duplicated")


def test_the_forms_cover_recipient_method_headers_and_decimal_delays(
    page, superuser, transactional_db
):
    Template.objects.create(name="Welcome", subject="Hi", html="<p>Hi</p>")
    workflow = workflow_create(name="Forms", trigger_event="user.signup")
    login(page, "boss")
    open_canvas(page, workflow)
    page.locator(".react-flow__node-trigger").click()
    previous = "trigger"
    for key in ("send_email-1", "delay-1", "webhook-1", "condition-1"):
        add(page, key.rsplit("-", 1)[0])
        page.wait_for_selector(f'.react-flow__node[data-id="{key}"]')
        page.wait_for_timeout(250)
        drag_connect(page, previous, "next", key)
        previous = key
        page.locator(f'.react-flow__node[data-id="{key}"] .wf-node-title').click()

    select(page, "send_email-1")
    page.select_option("#cfg-template", "Welcome")
    assert page.locator("#cfg-recipient-CONTACT").is_checked()
    assert page.locator("#cfg-custom-email").count() == 0
    page.check("#cfg-recipient-CUSTOM")
    page.fill("#cfg-custom-email", "team@example.com")
    select(page, "delay-1")
    page.fill("#cfg-delay-amount", "1.5")
    page.select_option("#cfg-delay-unit", "hours")
    select(page, "webhook-1")
    assert page.input_value("#cfg-method") == "POST"
    assert set(page.locator("#cfg-method option").all_inner_texts()) == {
        "GET",
        "POST",
        "PUT",
        "PATCH",
        "DELETE",
    }
    page.select_option("#cfg-method", "PUT")
    page.fill("#cfg-url", "https://example.com/users/{{ id }}")
    page.click("#cfg-headers .wf-add-row")
    page.fill('#cfg-headers input[aria-label="Header"]', "Authorization")
    page.fill('#cfg-headers input[aria-label="Value"]', "Bearer {{ data.token }}")
    page.fill("#cfg-body", '{"plan": "{{ plan }}", "seats": 3}')
    screenshot(page, "canvas-forms-webhook")
    # equals is strict: the value says whether it is the number 3 or the text "3".
    select(page, "condition-1")
    page.fill("#cfg-field", "contact.seats")
    page.select_option("#cfg-operator", "equals")
    page.fill("#cfg-value", "3")
    page.select_option("#cfg-value-type", "number")
    screenshot(page, "canvas-forms-condition")

    saved(page)
    steps = {
        s["key"]: s["config"]
        for s in workflow_graph_document(Workflow.objects.get(pk=workflow.pk))["steps"]
    }
    assert steps["send_email-1"] == {
        "template": "Welcome",
        "recipient": {"type": "CUSTOM", "customEmail": "team@example.com"},
    }
    assert steps["delay-1"] == {"amount": 1.5, "unit": "hours"}
    assert steps["condition-1"]["value"] == 3
    assert steps["condition-1"]["field"] == "contact.seats"
    assert steps["webhook-1"] == {
        "url": "https://example.com/users/{{ id }}",
        "method": "PUT",
        "headers": {"Authorization": "Bearer {{ data.token }}"},
        "body": {"plan": "{{ plan }}", "seats": 3},
    }

    # Reopened, the forms show what was stored.
    page.reload()
    page.wait_for_selector('.react-flow__node[data-id="webhook-1"]')
    select(page, "send_email-1")
    assert page.locator("#cfg-recipient-CUSTOM").is_checked()
    assert page.input_value("#cfg-custom-email") == "team@example.com"
    select(page, "condition-1")
    assert page.input_value("#cfg-value-type") == "number"
    select(page, "webhook-1")
    assert page.input_value("#cfg-method") == "PUT"
    assert (
        "PUT https://example.com/users/"
        in page.locator('.react-flow__node[data-id="webhook-1"]').inner_text()
    )


def test_a_manual_workflows_trigger_says_so(page, superuser, transactional_db):
    workflow = workflow_create(name="Order follow-up", trigger_type=Workflow.MANUAL)
    login(page, "boss")
    open_canvas(page, workflow)
    trigger = page.locator('[data-testid="node-trigger"]').inner_text()
    assert "Manual trigger" in trigger
    # An event workflow's trigger names its event instead.
    other = workflow_create(name="Welcome", trigger_event="user.signup")
    open_canvas(page, other)
    trigger = page.locator('[data-testid="node-trigger"]').inner_text()
    assert "user.signup" in trigger and "Manual" not in trigger
