"""The canvas in a real browser: build, connect, configure, save, reload, errors, locking."""

import pytest

from contacts_app.services import contact_upsert, event_record
from templates_app.models import Template
from tests.browser.conftest import login, screenshot
from tests.canvas_data import WAIT_GRAPH, start_runs
from workflows_app.graph import workflow_graph_document
from workflows_app.models import Workflow
from workflows_app.services import workflow_create

pytestmark = pytest.mark.django_db(transaction=True)

FLOW = ".react-flow"


def open_canvas(page, workflow):
    page.goto(f"/admin/workflows_app/workflow/{workflow.pk}/change/")
    page.wait_for_selector(".react-flow__node-trigger")


def handle(page, node, port):
    return page.locator(f'.react-flow__handle[data-nodeid="{node}"][data-handleid="{port}"]')


def drag_connect(page, source, port, target):
    """Drags from a step's output port to another step's input, like a person would."""
    start = handle(page, source, port).bounding_box()
    end = handle(page, target, "in").bounding_box()
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + end["height"] / 2, steps=12)
    page.mouse.up()


def fit(page):
    page.click("text=Fit view")
    page.wait_for_timeout(300)


def select(page, key):
    fit(page)
    page.locator(f'.react-flow__node[data-id="{key}"] .wf-node-title').click()
    page.wait_for_selector(f'[data-testid="config-panel"] .wf-key:text-is("{key}")')


def add(page, type_name):
    page.click(f'.wf-palette-item[data-step-type="{type_name}"]')


@pytest.fixture
def seeded(transactional_db):
    Template.objects.create(name="Welcome", subject="Hi", html="<p>Hi</p>")
    contact, _ = contact_upsert(email="ann@example.com", data={"plan": "pro", "seats": 3})
    event_record(contact=contact, name="user.signup", data={"total": 42, "coupon": "X"})
    return workflow_create(name="Onboarding", trigger_event="user.signup")


def test_it_builds_saves_and_reloads_a_workflow_with_every_step_type(page, superuser, seeded):
    login(page, "boss")
    open_canvas(page, seeded)
    assert "user.signup" in page.locator('[data-testid="node-trigger"]').inner_text()

    # Every step type from the palette, each added below the selected step and connected to
    # it by dragging from the selected step's port to the new step's input.
    keys = [
        "send_email-1",
        "delay-1",
        "wait_for_event-1",
        "condition-1",
        "webhook-1",
        "update_contact-1",
        "exit-1",
    ]
    page.locator(".react-flow__node-trigger").click()
    previous, port = "trigger", "next"
    for key in keys:
        add(page, key.rsplit("-", 1)[0])
        page.wait_for_selector(f'.react-flow__node[data-id="{key}"]')
        page.wait_for_timeout(250)
        drag_connect(page, previous, port, key)
        previous, port = key, {"wait_for_event-1": "event", "condition-1": "yes"}.get(key, "next")
        page.locator(f'.react-flow__node[data-id="{key}"] .wf-node-title').click()
    assert page.locator(".react-flow__edge").count() == 7
    assert page.locator('[data-testid="dirty-state"]').inner_text() == "Unsaved changes"

    # Typed ports: Exit has none, Condition yes/no, Wait for Event only `event` until a
    # timeout is set.
    assert handle(page, "exit-1", "next").count() == 0
    assert handle(page, "condition-1", "yes").count() == 1
    assert handle(page, "condition-1", "no").count() == 1
    assert handle(page, "wait_for_event-1", "timeout").count() == 0

    # Config forms.
    select(page, "send_email-1")
    page.select_option("#cfg-template", "Welcome")
    assert page.locator("#cfg-template-edit").get_attribute("href").endswith("/change/")
    page.fill("#cfg-name", "Say hello")
    select(page, "delay-1")
    page.fill("#cfg-delay-amount", "2")
    page.select_option("#cfg-delay-unit", "days")
    select(page, "wait_for_event-1")
    page.fill("#cfg-event", "user.activated")
    page.check("#cfg-timeout-on")
    page.fill("#cfg-timeout-amount", "3")
    page.select_option("#cfg-timeout-unit", "days")
    assert handle(page, "wait_for_event-1", "timeout").count() == 1
    select(page, "condition-1")
    suggestions = page.locator("#cfg-field-suggestions option")
    values = {suggestions.nth(i).get_attribute("value") for i in range(suggestions.count())}
    assert {"contact.plan", "contact.seats", "event.total", "event.coupon"} <= values
    page.fill("#cfg-field", "contact.plan")
    page.select_option("#cfg-operator", "equals")
    page.fill("#cfg-value", "pro")
    select(page, "webhook-1")
    page.fill("#cfg-url", "https://example.com/hooks/pro")
    page.click("#cfg-headers .wf-add-row")
    page.fill('#cfg-headers input[aria-label="Header"]', "X-Team")
    page.fill('#cfg-headers input[aria-label="Value"]', "growth")
    page.fill("#cfg-body", '{"plan": "{{ contact.plan }}"}')
    select(page, "update_contact-1")
    page.click("#cfg-set .wf-add-row")
    page.fill('#cfg-set input[aria-label="Key"]', "stage")
    page.fill('#cfg-set input[aria-label="Value"]', "active")
    page.click("#cfg-set .wf-add-row")
    page.locator('#cfg-set input[aria-label="Key"]').nth(1).fill("score")
    page.locator('#cfg-set input[aria-label="Value"]').nth(1).fill("10")
    page.select_option("#cfg-subscribed", "true")
    select(page, "exit-1")
    page.fill("#cfg-reason", "activated")

    # The timeout port, connected from the side panel's outputs.
    select(page, "wait_for_event-1")
    page.select_option("#out-timeout", "exit-1")
    assert page.locator(".react-flow__edge").count() == 8

    # Refused: a second edge from one port, and a loop; each says why.
    fit(page)
    drag_connect(page, "send_email-1", "next", "webhook-1")
    notice = page.locator('[data-testid="notice"]')
    assert "already leads to" in notice.inner_text()
    drag_connect(page, "update_contact-1", "next", "send_email-1")  # port taken too
    select(page, "condition-1")
    page.select_option("#out-no", "send_email-1")
    assert "loop" in notice.inner_text()
    assert page.locator(".react-flow__edge").count() == 8

    # Tidy up lays the connected graph out top to bottom.
    page.click("text=Tidy up")
    page.wait_for_timeout(400)
    screenshot(page, "canvas-built")

    page.click("button.wf-save")
    page.wait_for_selector('[data-testid="notice"]:has-text("Saved.")')
    assert page.locator('[data-testid="dirty-state"]').inner_text() == "All changes saved"

    document = workflow_graph_document(Workflow.objects.get(pk=seeded.pk))
    steps = {s["key"]: s for s in document["steps"]}
    assert {k: s["type"] for k, s in steps.items()} == {k: k.rsplit("-", 1)[0] for k in keys}
    assert steps["send_email-1"]["name"] == "Say hello"
    assert steps["send_email-1"]["config"] == {"template": "Welcome"}
    assert steps["delay-1"]["config"] == {"amount": 2, "unit": "days"}
    assert steps["wait_for_event-1"]["config"] == {
        "event": "user.activated",
        "timeout": {"amount": 3, "unit": "days"},
    }
    assert steps["condition-1"]["config"] == {
        "field": "contact.plan",
        "operator": "equals",
        "value": "pro",
    }
    assert steps["webhook-1"]["config"] == {  # without its defaults (POST, 10 s)
        "url": "https://example.com/hooks/pro",
        "headers": {"X-Team": "growth"},
        "body": {"plan": "{{ contact.plan }}"},
    }
    assert steps["update_contact-1"]["config"] == {
        "set": {"stage": "active", "score": 10},
        "subscribed": True,
    }
    assert steps["exit-1"]["config"] == {"reason": "activated"}
    assert sorted((t["from"], t["branch"], t["to"]) for t in document["transitions"]) == sorted(
        [
            ("trigger", "next", "send_email-1"),
            ("send_email-1", "next", "delay-1"),
            ("delay-1", "next", "wait_for_event-1"),
            ("wait_for_event-1", "event", "condition-1"),
            ("wait_for_event-1", "timeout", "exit-1"),
            ("condition-1", "yes", "webhook-1"),
            ("webhook-1", "next", "update_contact-1"),
            ("update_contact-1", "next", "exit-1"),
        ]
    )

    # Reload: the same graph comes back, positions included.
    page.reload()
    page.wait_for_selector('.react-flow__node[data-id="exit-1"]')
    assert page.locator(".react-flow__edge").count() == 8
    assert "Say hello" in page.locator('.react-flow__node[data-id="send_email-1"]').inner_text()
    select(page, "webhook-1")
    assert page.input_value("#cfg-url") == "https://example.com/hooks/pro"
    assert workflow_graph_document(Workflow.objects.get(pk=seeded.pk)) == document


def test_it_shows_validation_errors_on_the_offending_node(page, superuser, seeded):
    login(page, "boss")
    open_canvas(page, seeded)
    page.locator(".react-flow__node-trigger").click()
    add(page, "delay")
    page.wait_for_timeout(250)
    drag_connect(page, "trigger", "next", "delay-1")
    add(page, "send_email")  # below the delay, not connected, no template chosen
    page.click("button.wf-save")
    page.wait_for_selector('[data-testid="save-error"]')
    assert "problem" in page.locator('[data-testid="save-error"]').inner_text()
    errors = page.locator('[data-testid="errors-delay-1"]').inner_text()
    assert "amount" in errors and "unit" in errors
    assert "not reachable" in page.locator('[data-testid="errors-send_email-1"]').inner_text()
    assert page.locator('.react-flow__node[data-id="delay-1"] .wf-has-errors').count() == 1
    screenshot(page, "canvas-validation-errors")
    assert workflow_graph_document(Workflow.objects.get(pk=seeded.pk))["steps"] == []

    # Fixing the form clears the way: the same page saves.
    select(page, "delay-1")
    assert page.locator(".wf-field-error").count() >= 1
    page.fill("#cfg-delay-amount", "1")
    page.select_option("#cfg-delay-unit", "hours")
    select(page, "send_email-1")
    page.click(".wf-delete")
    page.click("button.wf-save")
    page.wait_for_selector('[data-testid="notice"]:has-text("Saved.")')
    assert page.locator(".wf-has-errors").count() == 0


def test_it_is_read_only_while_runs_are_active(page, superuser, transactional_db):
    workflow = workflow_create(
        name="Nurture", trigger_event="user.signup", enabled=True, graph=WAIT_GRAPH
    )
    start_runs(workflow, ["ann@example.com", "bob@example.com"])
    login(page, "boss")
    open_canvas(page, workflow)
    banner = page.locator('[data-testid="lock-banner"]')
    assert "2 active executions" in banner.inner_text()
    assert "Disable it, wait for them to finish or cancel them all" in banner.inner_text()
    assert page.locator(".wf-palette").count() == 0
    assert page.locator("button.wf-save").is_disabled()
    # Live counts: both runs wait at the Delay.
    pause = page.locator('.react-flow__node[data-id="pause"]')
    assert "2 waiting" in pause.inner_text()
    assert "2 entered" in page.locator('[data-testid="node-trigger"]').inner_text()
    select(page, "pause")
    assert page.locator("#cfg-delay-amount").is_disabled()
    screenshot(page, "canvas-locked")
    page.emulate_media(color_scheme="dark")  # the admin's "auto" theme follows the system
    screenshot(page, "canvas-locked-dark")


def test_it_refuses_a_save_when_the_workflow_locks_while_editing(page, superuser, transactional_db):
    workflow = workflow_create(
        name="Nurture", trigger_event="user.signup", enabled=True, graph=WAIT_GRAPH
    )
    before = workflow_graph_document(workflow)
    login(page, "boss")
    open_canvas(page, workflow)
    assert page.locator('[data-testid="lock-banner"]').count() == 0
    select(page, "pause")
    page.fill("#cfg-delay-amount", "9")

    start_runs(workflow, ["ann@example.com"])  # a run starts while the page is open

    page.click("button.wf-save")
    error = page.locator('[data-testid="save-error"]')
    error.wait_for()
    assert "1 active execution" in error.inner_text()
    assert "cancel them all" in error.inner_text()
    assert workflow_graph_document(Workflow.objects.get(pk=workflow.pk)) == before
    assert page.locator('[data-testid="dirty-state"]').inner_text() == "Unsaved changes"
    assert page.input_value("#cfg-delay-amount") == "9"  # the edit is kept, not lost

    # Leaving with unsaved changes asks first.
    dialogs = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.type), dialog.dismiss()))
    page.close(run_before_unload=True)
    page.wait_for_timeout(300)
    assert dialogs == ["beforeunload"]
