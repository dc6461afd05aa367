"""The canvas's stats overlay in a real browser: per-step figures, split branches with a goal,
the runs-per-day chart, the period picker, errors shown, and a view-only user.

The runs are made by the real engine at known moments (time-machine, only while building
them); opens and clicks arrive through the provider-event service, an unsubscribe through the
contact service. What each figure must be follows from that story, written out below; each
contact's split branch is worked out here as the split step defines it (a hash of the contact,
the workflow and the step), not read back from what the engine wrote.
"""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from playwright.sync_api import expect

from contacts_app.models import Contact
from contacts_app.services import contact_set_subscribed, contact_upsert, event_record
from templates_app.models import Message, Template
from templates_app.services import message_apply_provider_event
from tests.browser.conftest import login, screenshot
from tests.canvas_data import staff_user
from workflows_app import engine
from workflows_app.services import workflow_create
from workflows_app.steps import STEP_TYPES
from workflows_app.steps.split import split_choose, split_point

pytestmark = pytest.mark.django_db(transaction=True)

GOAL = "order.placed"
GRAPH = {
    "steps": [
        {
            "key": "welcome",
            "type": "send_email",
            "name": "Welcome",
            "config": {"template": "Welcome"},
            "position": {"x": 0, "y": 0},
        },
        {
            "key": "ab",
            "type": "split",
            "name": "A/B",
            "config": {"branches": [{"id": "a", "weight": 50}, {"id": "b", "weight": 50}]},
            "position": {"x": 0, "y": 260},
        },
        {
            "key": "done_a",
            "type": "exit",
            "name": "Done A",
            "config": {"reason": "a"},
            "position": {"x": -200, "y": 520},
        },
        {
            "key": "pause",
            "type": "delay",
            "name": "Pause",
            "config": {"amount": 5, "unit": "days"},
            "position": {"x": 200, "y": 520},
        },
        {
            "key": "done_b",
            "type": "exit",
            "name": "Done B",
            "config": {"reason": "b"},
            "position": {"x": 200, "y": 760},
        },
    ],
    "transitions": [
        {"from": "trigger", "to": "welcome"},
        {"from": "welcome", "to": "ab"},
        {"from": "ab", "branch": "a", "to": "done_a"},
        {"from": "ab", "branch": "b", "to": "pause"},
        {"from": "pause", "to": "done_b"},
    ],
}


def run_at(when, workflow, emails, *, unsubscribed=()):
    """Starts a run for each email at `when` and advances them until they wait or end."""
    with time_machine.travel(when, tick=False):
        for email in emails:
            contact, _ = contact_upsert(email=email, subscribed=email not in unsubscribed)
            event = event_record(contact=contact, name=workflow.trigger_event)
            engine.executions_start(contact=contact, event=event, now=when)
        engine.executions_advance(engine.executions_claim_due(now=when, limit=100))


def message_of(email):
    return Message.objects.get(contact__email=email)


def branch_of(workflow, email):
    """The split's branch for this contact, worked out as the split step defines it."""
    contact = Contact.objects.get(email=email)
    branches = STEP_TYPES["split"].parse_config(GRAPH["steps"][1]["config"]).branches
    return split_choose(branches, split_point(contact.pk, workflow.pk, "ab"))


@pytest.fixture
def story(transactional_db):
    """Two runs started 12 days ago (woken from their pause since, so branch b's completed),
    five 2 days ago: r5 unsubscribed (its welcome is skipped), r1 opened, r2 clicked, r4
    unsubscribed after its mail; r1 and r3 then placed an order (the goal)."""
    Template.objects.create(name="Welcome", subject="Hi", html="<p>Hi</p>")
    workflow = workflow_create(name="Stats", trigger_event="user.signup", enabled=True, graph=GRAPH)
    now = timezone.now()
    old, recent = now - timedelta(days=12), now - timedelta(days=2)
    run_at(old, workflow, ["o1@example.com", "o2@example.com"])
    woke = old + timedelta(days=6)
    with time_machine.travel(woke, tick=False):
        engine.executions_advance(engine.executions_claim_due(now=woke, limit=100))
    recent_emails = [f"r{i}@example.com" for i in range(1, 6)]
    run_at(recent, workflow, recent_emails, unsubscribed={"r5@example.com"})
    with time_machine.travel(recent + timedelta(hours=1), tick=False):
        message_apply_provider_event(message=message_of("r1@example.com"), event_type="opened")
        message_apply_provider_event(message=message_of("r2@example.com"), event_type="clicked")
        r4 = message_of("r4@example.com").contact
        contact_set_subscribed(contact=r4, subscribed=False)
        for email in ("r1@example.com", "r3@example.com"):
            event_record(contact=message_of(email).contact, name=GOAL)
    workflow.recent, workflow.old = recent_emails, ["o1@example.com", "o2@example.com"]
    day = lambda when: timezone.localdate(when).isoformat()  # noqa: E731
    workflow.started = {day(recent): 5, day(old): 2}
    return workflow


def expected(workflow, emails):
    """The figures the story gives for the runs of these contacts (see `story`)."""
    branch = {email: branch_of(workflow, email) for email in emails}
    in_a = [e for e in emails if branch[e] == "a"]
    in_b = [e for e in emails if branch[e] == "b"]
    skipped = int("r5@example.com" in emails)
    sent = len(emails) - skipped
    opened = len({"r1@example.com", "r2@example.com"} & set(emails))
    goal = {"r1@example.com", "r3@example.com"} & set(emails)
    return {
        "started": len(emails),
        "welcome": {
            "entered": len(emails),
            "completed": sent,
            "skipped": skipped,
            "failed": 0,
            "waiting": 0,
            "sent": sent,
            "delivered": opened,
            "opened": opened,
            "clicked": int("r2@example.com" in emails),
            "bounced": 0,
            "unsubscribed": int("r4@example.com" in emails),
        },
        "ab": {"entered": len(emails), "completed": len(emails), "waiting": 0},
        "branches": {"a": len(in_a), "b": len(in_b)},
        "goal": {"a": len(goal & set(in_a)), "b": len(goal & set(in_b))},
        "done_a": {"entered": len(in_a)},
        # Branch b of the old runs woke from the pause; the recent ones wait there.
        "pause": {"entered": len(in_b), "waiting": len([e for e in in_b if e in workflow.recent])},
        "done_b": {"entered": len([e for e in in_b if e in workflow.old])},
    }


def figure(page, key, name):
    return page.locator(f'[data-testid="stats-{key}"] [data-stat="{name}"]')


def expect_figures(page, want):
    """Every figure of `want` on its node (retrying until the overlay shows them)."""
    expect(page.get_by_test_id("stats-trigger")).to_have_text(f"{want['started']} started")
    for key in ("welcome", "ab", "done_a", "pause", "done_b"):
        for name, value in want[key].items():
            expect(figure(page, key, name)).to_have_attribute("data-value", str(value))
    for branch, n in want["branches"].items():
        stat = page.locator(f'[data-testid="branch-stats-ab"] [data-branch="{branch}"]')
        expect(stat).to_have_attribute("data-entered", str(n))


def open_stats(page, workflow):
    page.goto(f"/admin/workflows_app/workflow/{workflow.pk}/change/")
    page.wait_for_selector(".react-flow__node-trigger")
    page.get_by_test_id("stats-toggle").click()
    expect(page.get_by_test_id("stats-state")).to_contain_text("Figures from")


def per_day(page):
    """The chart's numbers, from its table: {date: started} for the days with any."""
    rows = page.locator('[data-testid="runs-table"] tbody tr')
    out = {}
    for i in range(rows.count()):
        day, started = rows.nth(i).locator("td").all_text_contents()
        if int(started):
            out[day] = int(started)
    return out


# How many of the chart canvas's pixels are painted in the bars' colour (the admin's link
# colour): zero when nothing is drawn.
BAR_PIXELS = """(canvas) => {
  const probe = document.createElement('canvas').getContext('2d');
  probe.fillStyle = getComputedStyle(canvas).getPropertyValue('--link-fg').trim();
  probe.fillRect(0, 0, 1, 1);
  const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] === r && data[i + 1] === g && data[i + 2] === b && data[i + 3] === 255) n += 1;
  }
  return n;
}"""


def bar_pixels(page):
    return page.get_by_test_id("runs-chart-canvas").evaluate(BAR_PIXELS)


def test_it_overlays_the_figures_and_charts_runs_per_day_for_the_chosen_period(
    page, superuser, story
):
    login(page, "boss")
    open_stats(page, story)
    everyone = story.recent + story.old
    want = expected(story, everyone)

    # The last 30 days (the default): every run of the story.
    expect(page.get_by_test_id("stats-period")).to_have_value("30")
    expect_figures(page, want)
    welcome = page.get_by_test_id("stats-welcome")
    sent = want["welcome"]["sent"]
    expect(figure(page, "welcome", "opened")).to_contain_text(f"{round(100 * 2 / sent)}% opened")
    expect(figure(page, "welcome", "clicked")).to_contain_text(f"{round(100 / sent)}% clicked")
    expect(welcome.get_by_test_id("skipped-reasons-welcome")).to_have_text(
        "Skipped: unsubscribed 1"
    )
    # Edges carry how many took them: a split's branch its own count, any other edge that is
    # the only way into its step the step's entered.
    labels = page.locator(".react-flow__edge-text").all_text_contents()
    assert f"a · {want['branches']['a']}" in labels
    assert f"b · {want['branches']['b']}" in labels
    assert str(len(everyone)) in labels  # trigger -> welcome, welcome -> ab

    # The chart: drawn, its numbers (the table) the days the runs started, and the runs by
    # their status now.
    assert per_day(page) == story.started
    assert bar_pixels(page) > 50
    statuses = page.get_by_test_id("runs-statuses")
    waiting = want["pause"]["waiting"]
    expect(statuses.locator('tr[data-status="WAITING"] td')).to_have_text(str(waiting))
    expect(statuses.locator('tr[data-status="EXITED"] td')).to_have_text(
        str(len(everyone) - waiting)
    )
    label = page.get_by_test_id("runs-chart-canvas").get_attribute("aria-label")
    assert f"{len(everyone)} in all" in label
    screenshot(page, "canvas-stats")

    # The last 7 days: only the recent runs.
    page.get_by_test_id("stats-period").select_option("7")
    expect_figures(page, expected(story, story.recent))
    assert per_day(page) == {k: v for k, v in story.started.items() if v == len(story.recent)}
    screenshot(page, "canvas-stats-7-days")

    # Dates: the day of the old runs alone, then a day without any.
    old_day = next(k for k, v in story.started.items() if v == len(story.old))
    page.get_by_test_id("stats-period").select_option("custom")
    page.get_by_test_id("stats-from").fill(old_day)
    page.get_by_test_id("stats-to").fill(old_day)
    expect_figures(page, expected(story, story.old))
    assert per_day(page) == {old_day: len(story.old)}
    empty_day = (timezone.localdate() - timedelta(days=20)).isoformat()
    page.get_by_test_id("stats-from").fill(empty_day)
    page.get_by_test_id("stats-to").fill(empty_day)
    expect(page.get_by_test_id("stats-trigger")).to_have_text("0 started")
    expect(figure(page, "welcome", "entered")).to_have_attribute("data-value", "0")
    assert per_day(page) == {}
    assert bar_pixels(page) == 0

    # A refused period is said, and no stale figures stay on the nodes.
    page.get_by_test_id("stats-from").fill(old_day)
    page.get_by_test_id("stats-to").fill(empty_day)
    expect(page.get_by_test_id("stats-error")).to_contain_text("before")
    expect(page.get_by_test_id("stats-from")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("stats-welcome")).to_have_count(0)
    expect(page.get_by_test_id("runs-chart")).to_have_count(0)

    # Off: the live counts come back.
    page.get_by_test_id("stats-toggle").click()
    expect(page.get_by_test_id("stats-panel")).to_have_count(0)
    expect(page.locator('[data-testid="node-welcome"] .wf-node-counts')).to_be_visible()


def test_it_shows_each_split_branchs_share_of_the_goal_by_its_port(page, superuser, story):
    login(page, "boss")
    open_stats(page, story)
    want = expected(story, story.recent + story.old)
    branches = page.get_by_test_id("branch-stats-ab")
    expect(branches.locator('[data-branch="a"]')).not_to_contain_text("goal")

    page.get_by_test_id("stats-goal").fill(GOAL)
    page.get_by_test_id("stats-goal").press("Enter")
    expect(page.get_by_test_id("stats-state")).to_contain_text(f"goal “{GOAL}”")
    for branch in ("a", "b"):
        stat = branches.locator(f'[data-branch="{branch}"]')
        entered, reached = want["branches"][branch], want["goal"][branch]
        expect(stat).to_have_attribute("data-goal-reached", str(reached))
        share = f"{round(100 * reached / entered)}%" if entered else "–"
        expect(stat).to_contain_text(f"goal {share}")
    # Each branch's figures sit under its own port.
    for branch in ("a", "b"):
        port = page.locator(f'.react-flow__handle[data-nodeid="ab"][data-handleid="{branch}"]')
        stat = branches.locator(f'[data-branch="{branch}"]')
        port_x = port.bounding_box()["x"] + port.bounding_box()["width"] / 2
        stat_x = stat.bounding_box()["x"] + stat.bounding_box()["width"] / 2
        assert abs(port_x - stat_x) < 3
    screenshot(page, "canvas-stats-goal")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "canvas-stats-goal-dark")


def test_a_user_who_may_only_view_the_workflow_sees_the_stats(page, story):
    staff_user("viewer", "workflows_app.view_workflow")
    login(page, "viewer")
    open_stats(page, story)
    expect(page.get_by_text("You can view this workflow but not change it.")).to_be_visible()
    expect_figures(page, expected(story, story.recent + story.old))
    assert per_day(page) == story.started
