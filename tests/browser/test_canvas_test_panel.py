"""The canvas's Test panel against the real dry-run endpoint: the path highlighted on the graph,
the timeline in virtual time, each email rendered in a sandboxed frame, field errors next to
their inputs, and nothing sent or stored."""

import pytest

from contacts_app.models import Contact, Event
from contacts_app.services import contact_upsert
from templates_app.models import Message, Template
from tests.browser.conftest import login, screenshot
from tests.browser.test_canvas import open_canvas, select
from tests.canvas_data import staff_user
from workflows_app.models import Execution, StepRun
from workflows_app.services import workflow_create

pytestmark = pytest.mark.django_db(transaction=True)


def at(x, y):
    return {"x": x, "y": y}


# Pro contacts wait two days, then for `user.activated` (at most three days), then get the
# welcome email and a webhook tells the team; the others exit at once.
GRAPH = {
    "steps": [
        {
            "key": "is_pro",
            "type": "condition",
            "name": "Pro?",
            "config": {"field": "contact.plan", "operator": "equals", "value": "pro"},
            "position": at(0, 0),
        },
        {
            "key": "pause",
            "type": "delay",
            "name": "Two days",
            "config": {"amount": 2, "unit": "days"},
            "position": at(-150, 160),
        },
        {
            "key": "activated",
            "type": "wait_for_event",
            "name": "Activated?",
            "config": {"event": "user.activated", "timeout": {"amount": 3, "unit": "days"}},
            "position": at(-150, 320),
        },
        {
            "key": "welcome",
            "type": "send_email",
            "name": "Welcome mail",
            "config": {"template": "Welcome"},
            "position": at(-300, 480),
        },
        {
            "key": "notify",
            "type": "webhook",
            "name": "Tell the team",
            "config": {
                "url": "https://hooks.example.com/pro",
                "body": {"plan": "{{ contact.plan }}", "who": "{{ email }}"},
            },
            "position": at(-300, 640),
        },
        {
            "key": "gave_up",
            "type": "exit",
            "name": "Gave up",
            "config": {"reason": "inactive"},
            "position": at(0, 480),
        },
        {
            "key": "free",
            "type": "exit",
            "name": "Free plan",
            "config": {"reason": "free"},
            "position": at(200, 160),
        },
    ],
    "transitions": [
        {"from": "trigger", "to": "is_pro"},
        {"from": "is_pro", "branch": "yes", "to": "pause"},
        {"from": "is_pro", "branch": "no", "to": "free"},
        {"from": "pause", "to": "activated"},
        {"from": "activated", "branch": "event", "to": "welcome"},
        {"from": "activated", "branch": "timeout", "to": "gave_up"},
        {"from": "welcome", "to": "notify"},
    ],
}


@pytest.fixture
def workflow(transactional_db):
    Template.objects.create(
        name="Welcome",
        subject="Welcome, {{ firstName }}",
        html='<h1 id="mail-title">Hi {{ firstName }}!</h1><p>You are on {{ plan }}.</p>'
        '<script>document.title = "owned"</script>',
    )
    contact_upsert(email="ann@example.com", data={"firstName": "Ann", "plan": "pro"})
    return workflow_create(name="Onboarding", trigger_event="user.signup", graph=GRAPH)


def counts():
    return (
        Contact.objects.count(),
        Event.objects.count(),
        Execution.objects.count(),
        StepRun.objects.count(),
        Message.objects.count(),
    )


def open_panel(page):
    page.click('[data-testid="test-toggle"]')
    page.wait_for_selector('[data-testid="test-panel"]')


def run(page):
    page.click("#test-run")
    page.wait_for_selector('[data-testid="test-results"], [data-testid="test-error"]')


def traced(page) -> list[str]:
    nodes = page.locator(".react-flow__node:has(.wf-traced)")
    return sorted(nodes.nth(i).get_attribute("data-id") for i in range(nodes.count()))


def taken(page) -> list[str]:
    edges = page.locator(".react-flow__edge.wf-edge-taken")
    return sorted(edges.nth(i).get_attribute("data-id") for i in range(edges.count()))


def timeline(page) -> list[tuple[str, str]]:
    items = page.locator('[data-testid="test-timeline"] > li')
    return [
        (items.nth(i).get_attribute("data-step"), items.nth(i).locator(".wf-test-at").inner_text())
        for i in range(items.count())
    ]


def test_it_runs_a_contact_through_the_saved_graph_and_shows_the_path_and_email(
    page, superuser, workflow
):
    before = counts()
    login(page, "boss")
    open_canvas(page, workflow)
    open_panel(page)
    page.fill("#test-email", "ann@example.com")
    page.click("#test-add-event")
    page.fill("#test-event-0-name", "user.activated")
    page.fill("#test-event-0-after", "3")
    page.select_option("#test-event-0-unit", "days")
    run(page)

    assert page.locator('[data-testid="test-status"]').inner_text().startswith("COMPLETED")
    # The timeline in virtual time: the delay's two days, the event on day three.
    assert timeline(page) == [
        ("is_pro", "start"),
        ("pause", "start"),
        ("activated", "+2 days"),
        ("welcome", "+3 days"),
        ("notify", "+3 days"),
    ]
    condition = page.locator('[data-testid="test-timeline"] > li[data-step="is_pro"]')
    assert "→ yes" in condition.inner_text()
    assert "pro" in condition.locator(".wf-test-detail").inner_text()

    # The path on the graph: visited steps and taken edges highlighted, the rest dimmed.
    assert traced(page) == ["activated", "is_pro", "notify", "pause", "trigger", "welcome"]
    assert page.locator(".react-flow__node:has(.wf-untraced)").count() == 2  # the two exits
    assert taken(page) == [
        "activated:event",
        "is_pro:yes",
        "pause:next",
        "trigger:next",
        "welcome:next",
    ]
    assert page.locator(".react-flow__edge.wf-edge-untaken").count() == 2
    order = page.locator('.react-flow__node[data-id="welcome"] .wf-trace-step').inner_text()
    assert order == "4"

    # The email, rendered in a sandboxed frame and nowhere else in the page.
    email = page.locator('[data-testid="test-email-0"]')
    assert "ann@example.com" in email.inner_text()
    assert "Welcome, Ann" in email.inner_text()
    frame = email.locator("iframe")
    assert frame.get_attribute("sandbox") == ""
    assert (
        page.frame_locator('[data-testid="test-email-0"] iframe')
        .locator("#mail-title")
        .inner_text()
        == "Hi Ann!"
    )
    assert page.locator("#mail-title").count() == 0  # not injected into the admin page
    assert page.title() != "owned"  # and its script did not run here

    # The webhook's request, as it would be made.
    webhook = page.locator('[data-testid="test-webhook-0"]').inner_text()
    assert "POST https://hooks.example.com/pro" in webhook
    assert '"who": "ann@example.com"' in webhook and '"plan": "pro"' in webhook
    screenshot(page, "canvas-test-panel")
    frame.scroll_into_view_if_needed()
    screenshot(page, "canvas-test-panel-email")
    page.emulate_media(color_scheme="dark")  # the admin's "auto" theme follows the system
    screenshot(page, "canvas-test-panel-dark")
    page.emulate_media(color_scheme="light")

    # A made-up contact on the free plan: the other way, and the highlight follows.
    page.check("#test-mode-data")
    page.fill("#test-contact-data", '{"firstName": "Bob", "plan": "free"}')
    run(page)
    page.wait_for_selector('[data-testid="test-timeline"] > li[data-step="free"]')
    status = page.locator('[data-testid="test-status"]').inner_text()
    assert status.startswith("EXITED") and "free" in status
    assert traced(page) == ["free", "is_pro", "trigger"]
    assert taken(page) == ["is_pro:no", "trigger:next"]
    assert page.locator('[data-testid^="test-email-"]').count() == 0

    # Closing the panel clears the highlight.
    page.click('[data-testid="test-toggle"]')
    assert page.locator('[data-testid="test-panel"]').count() == 0
    assert page.locator(".wf-traced, .wf-untraced").count() == 0
    assert page.locator(".react-flow__edge.wf-edge-taken").count() == 0
    assert counts() == before  # nothing sent, run or stored


def test_it_shows_field_errors_next_to_the_inputs(page, superuser, workflow):
    before = counts()
    login(page, "boss")
    open_canvas(page, workflow)
    open_panel(page)

    # An unknown contact: the server's 400, next to the email input.
    page.fill("#test-email", "nobody@example.com")
    run(page)
    field = page.locator(".wf-field:has(#test-email)")
    assert field.locator(".wf-field-message").count() == 1
    assert "nobody@example.com" in field.locator(".wf-field-message").inner_text() or (
        "contact" in field.locator(".wf-field-message").inner_text().lower()
    )
    assert page.locator('[data-testid="test-results"]').count() == 0

    # Bad JSON: marked on its field before anything is sent.
    page.check("#test-mode-data")
    page.fill("#test-contact-data", '{"plan": "pro",}')
    page.fill("#test-trigger-data", "[1, 2]")
    run(page)
    data_field = page.locator(".wf-field:has(#test-contact-data)")
    assert "Not valid JSON" in data_field.locator(".wf-field-message").inner_text()
    trigger_field = page.locator(".wf-field:has(#test-trigger-data)")
    assert "JSON object" in trigger_field.locator(".wf-field-message").inner_text()
    assert page.locator(".wf-traced").count() == 0
    screenshot(page, "canvas-test-panel-errors")

    # An event without a name, after a bad time: the row says so.
    page.fill("#test-contact-data", '{"plan": "pro"}')
    page.fill("#test-trigger-data", "")
    page.click("#test-add-event")
    page.fill("#test-event-0-after", "-1")
    run(page)
    row = page.locator('[data-testid="test-event-0"]').inner_text()
    assert "Enter the event name" in row and "0 or more" in row

    # Unsaved changes: the panel says the saved version is what runs.
    assert page.locator('[data-testid="test-unsaved"]').count() == 0
    page.click('[data-testid="test-toggle"]')
    select(page, "free")
    page.fill("#cfg-reason", "not pro")
    open_panel(page)
    assert "saved version" in page.locator('[data-testid="test-unsaved"]').inner_text()
    assert counts() == before


def test_without_the_contacts_permission_only_sample_data_runs(page, workflow):
    staff_user("viewer", "workflows_app.view_workflow")
    login(page, "viewer")
    open_canvas(page, workflow)
    open_panel(page)  # a view-only user may test too: the dry run changes nothing
    page.fill("#test-email", "ann@example.com")
    run(page)
    message = page.locator(".wf-field:has(#test-email) .wf-field-message").inner_text()
    assert "permission to view contacts" in message
    assert page.locator('[data-testid="test-results"]').count() == 0

    page.check("#test-mode-data")
    page.fill("#test-contact-data", '{"firstName": "Cy", "plan": "pro"}')
    page.uncheck("#test-subscribed")
    page.click("#test-add-event")
    page.fill("#test-event-0-name", "user.activated")
    page.fill("#test-event-0-after", "60")
    page.select_option("#test-event-0-unit", "hours")
    run(page)
    # Unsubscribed: the marketing email is skipped, and the timeline says so.
    page.wait_for_selector('[data-testid="test-timeline"] > li[data-step="welcome"]')
    welcome = page.locator('[data-testid="test-timeline"] > li[data-step="welcome"]').inner_text()
    assert "skipped" in welcome and "unsubscribed" in welcome
    assert page.locator('[data-testid^="test-email-"]').count() == 0
