"""Per-step statistics (workflows_app.stats) checked against known runs: contacts whose split
branch is known in advance run through the real engine, their mail gets provider events through
the service the webhooks use, they unsubscribe and track a goal event at known times."""

from datetime import UTC, date, datetime, timedelta
from unittest import mock

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from contacts_app.models import Contact
from contacts_app.services import contact_set_subscribed, contact_upsert
from templates_app.models import Message
from templates_app.services import message_apply_provider_event
from tests.conftest import drain
from tests.flow import T0, track_ok
from workflows_app.models import Execution, StepRun
from workflows_app.stats import StatsInputError, stats_query, workflow_stats
from workflows_app.steps import STEP_TYPES
from workflows_app.steps.base import StepFailed
from workflows_app.steps.split import split_choose, split_point

pytestmark = pytest.mark.django_db

GOAL = "order.placed"
STEPS = [
    {
        "key": "ab",
        "type": "split",
        "config": {"branches": [{"id": "a", "weight": 50}, {"id": "b", "weight": 50}]},
    },
    {
        "key": "welcome_a",
        "type": "send_email",
        "name": "Welcome A",
        "config": {"template": "Welcome"},
    },
    {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "days"}},
    {"key": "followup", "type": "send_email", "config": {"template": "Welcome"}},
    {"key": "welcome_b", "type": "send_email", "config": {"template": "Welcome"}},
]
TRANSITIONS = [
    {"from": "trigger", "to": "ab"},
    {"from": "ab", "branch": "a", "to": "welcome_a"},
    {"from": "welcome_a", "to": "pause"},
    {"from": "pause", "to": "followup"},
    {"from": "ab", "branch": "b", "to": "welcome_b"},
]
EMAIL_ZERO = {
    "sent": 0,
    "delivered": 0,
    "opened": 0,
    "clicked": 0,
    "bounced": 0,
    "unsubscribed": 0,
}
VISIT_ZERO = {"entered": 0, "completed": 0, "skipped": 0, "failed": 0, "waiting": 0}


@pytest.fixture(autouse=True)
def _locmem_email(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def workflow(template, make_workflow):
    return make_workflow(STEPS, TRANSITIONS, name="Stats")


def contacts_by_branch(workflow, a: int, b: int) -> dict[str, list[Contact]]:
    """Contacts, created now, whose branch at `ab` is known: `a` of them in a, `b` in b."""
    found: dict[str, list[Contact]] = {"a": [], "b": []}
    wanted = {"a": a, "b": b}
    branches = STEP_TYPES["split"].parse_config(STEPS[0]["config"]).branches
    n = 0
    while len(found["a"]) < a or len(found["b"]) < b:
        n += 1
        contact, _ = contact_upsert(email=f"c{n}@example.com")
        branch = split_choose(branches, split_point(contact.pk, workflow.pk, "ab"))
        if len(found[branch]) < wanted[branch]:
            found[branch].append(contact)
        else:
            contact.delete()
    return found


def message_of(contact, step_key):
    return StepRun.objects.get(execution__contact=contact, step_key=step_key).message


def stats(workflow, *, goal=None, start=T0 - timedelta(days=1), end=T0 + timedelta(days=5)):
    return workflow_stats(workflow=workflow, start=start, end=end, goal=goal)


def test_it_counts_known_runs_per_step_branch_email_and_goal(track, workflow):
    with time_machine.travel(T0 - timedelta(hours=1), tick=False) as traveller:
        people = contacts_by_branch(workflow, a=3, b=2)
        a1, a2, a3 = people["a"]
        b1, b2 = people["b"]
        contact_set_subscribed(contact=b2, subscribed=False)
        track_ok(track, event=GOAL, email=b1.email)  # before the split: not the branch's doing

        traveller.move_to(T0)
        for contact in (a1, a2, a3, b1, b2):
            track_ok(track, email=contact.email)
        drain()

        traveller.move_to(T0 + timedelta(minutes=10))
        message_apply_provider_event(message=message_of(a1, "welcome_a"), event_type="delivered")
        message_apply_provider_event(message=message_of(a1, "welcome_a"), event_type="opened")
        message_apply_provider_event(message=message_of(a2, "welcome_a"), event_type="clicked")
        # A hard bounce unsubscribes the contact: that unsubscribe is this message's.
        message_apply_provider_event(message=message_of(b1, "welcome_b"), event_type="bounced")

        traveller.move_to(T0 + timedelta(minutes=20))
        contact_set_subscribed(contact=a3, subscribed=False)
        traveller.move_to(T0 + timedelta(minutes=30))
        for contact in (a1, a2, b2):
            track_ok(track, event=GOAL, email=contact.email)

        first = stats(workflow, goal=GOAL)

        traveller.move_to(T0 + timedelta(days=1, minutes=1))
        drain()  # the pause ends: a1 and a2 get the follow-up, a3 (unsubscribed) is skipped
        traveller.move_to(T0 + timedelta(days=1, minutes=10))
        contact_set_subscribed(contact=a1, subscribed=False)  # after the follow-up: its doing
        second = stats(workflow, goal=GOAL)
        without_goal = stats(workflow)

    assert first["goal"] == GOAL
    assert first["executions"] == {
        "RUNNING": 0,
        "WAITING": 3,
        "COMPLETED": 2,
        "EXITED": 0,
        "FAILED": 0,
        "CANCELLED": 0,
    }
    steps = first["steps"]
    assert list(steps) == ["ab", "welcome_a", "pause", "followup", "welcome_b"]
    ab = steps["ab"]
    assert (ab["type"], ab["name"]) == ("split", "")
    assert {k: ab[k] for k in VISIT_ZERO} == {**VISIT_ZERO, "entered": 5, "completed": 5}
    assert ab["branches"]["a"] == {
        "entered": 3,
        "completed": 0,
        "skipped": 0,
        "failed": 0,
        "waiting": 3,
        "sent": 3,
        "delivered": 2,
        "opened": 2,
        "clicked": 1,
        "bounced": 0,
        "unsubscribed": 1,
        "goal_reached": 2,
        "goal_share": pytest.approx(2 / 3),
    }
    assert ab["branches"]["b"] == {
        "entered": 2,
        "completed": 2,
        "skipped": 1,
        "failed": 0,
        "waiting": 0,
        "sent": 1,
        "delivered": 0,
        "opened": 0,
        "clicked": 0,
        "bounced": 1,
        "unsubscribed": 1,
        "goal_reached": 1,
        "goal_share": 0.5,
    }
    assert steps["welcome_a"] == {
        "type": "send_email",
        "name": "Welcome A",
        **VISIT_ZERO,
        "entered": 3,
        "completed": 3,
        "sent": 3,
        "delivered": 2,
        "opened": 2,
        "clicked": 1,
        "bounced": 0,
        "unsubscribed": 1,
        "skipped_reasons": {},
    }
    assert steps["pause"] == {"type": "delay", "name": "", **VISIT_ZERO, "entered": 3, "waiting": 3}
    assert steps["followup"] == {
        "type": "send_email",
        "name": "",
        **VISIT_ZERO,
        **EMAIL_ZERO,
        "skipped_reasons": {},
    }
    assert steps["welcome_b"] == {
        "type": "send_email",
        "name": "",
        **VISIT_ZERO,
        "entered": 2,
        "completed": 1,
        "skipped": 1,
        "sent": 1,
        "delivered": 0,
        "opened": 0,
        "clicked": 0,
        "bounced": 1,
        "unsubscribed": 1,
        "skipped_reasons": {"unsubscribed": 1},
    }

    assert second["executions"]["COMPLETED"] == 5 and second["executions"]["WAITING"] == 0
    steps = second["steps"]
    assert steps["pause"] == {
        "type": "delay",
        "name": "",
        **VISIT_ZERO,
        "entered": 3,
        "completed": 3,
    }
    assert steps["followup"] == {
        "type": "send_email",
        "name": "",
        **VISIT_ZERO,
        "entered": 3,
        "completed": 2,
        "skipped": 1,
        **EMAIL_ZERO,
        "sent": 2,
        "unsubscribed": 1,  # a1's, the last mail a1 had before unsubscribing
        "skipped_reasons": {"unsubscribed": 1},
    }
    assert steps["welcome_a"]["unsubscribed"] == 1  # still only a3's: a1 had mail since
    a = steps["ab"]["branches"]["a"]
    assert (a["entered"], a["completed"], a["waiting"], a["skipped"]) == (3, 3, 0, 1)
    assert (a["sent"], a["delivered"], a["opened"], a["clicked"], a["unsubscribed"]) == (
        5,
        2,
        2,
        1,
        2,
    )

    assert without_goal["goal"] is None
    for branch in without_goal["steps"]["ab"]["branches"].values():
        assert branch["goal_reached"] is None and branch["goal_share"] is None


def test_the_period_is_the_runs_started_in_it(track, workflow):
    day = datetime(2030, 1, 7, tzinfo=UTC)  # T0's day
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track, email="early@example.com")
        traveller.move_to(day + timedelta(days=3, microseconds=-1))
        track_ok(track, email="late@example.com")
        traveller.move_to(day + timedelta(days=3))
        track_ok(track, email="after@example.com")
        drain()

    reply = workflow_stats(workflow=workflow, start=day, end=day + timedelta(days=3), goal=None)
    assert reply["from"] == "2030-01-07T00:00:00+00:00"
    assert reply["to"] == "2030-01-10T00:00:00+00:00"
    assert sum(reply["executions"].values()) == 2  # [from, to): the run at `to` is not in it
    assert reply["started_per_day"] == [
        {"date": "2030-01-07", "started": 1},
        {"date": "2030-01-08", "started": 0},
        {"date": "2030-01-09", "started": 1},
    ]
    assert reply["steps"]["ab"]["entered"] == 2

    later = workflow_stats(
        workflow=workflow, start=T0 + timedelta(hours=1), end=T0 + timedelta(days=4), goal=None
    )
    assert later["steps"]["ab"]["entered"] == 2  # late and after
    assert [d["date"] for d in later["started_per_day"]] == [
        "2030-01-07",
        "2030-01-08",
        "2030-01-09",
        "2030-01-10",
        "2030-01-11",
    ]

    nothing = workflow_stats(
        workflow=workflow, start=T0 - timedelta(days=9), end=T0 - timedelta(days=8), goal=GOAL
    )
    assert set(nothing["executions"].values()) == {0}
    assert nothing["steps"]["ab"]["branches"]["a"] == {
        **VISIT_ZERO,
        **EMAIL_ZERO,
        "goal_reached": 0,
        "goal_share": None,
    }
    assert nothing["steps"]["welcome_b"]["skipped_reasons"] == {}


def test_it_counts_failures_and_groups_skips_by_their_reason(track, workflow):
    send = STEP_TYPES["send_email"]
    real_run = type(send).run
    outcomes = iter(["fail", "cap", "cap", "real"])

    def run(ctx):
        # A send refused by a frequency cap, as the send-policy step writes it: a short
        # `reason` beside the full text.
        what = next(outcomes)
        if what == "fail":
            raise StepFailed("provider refused the message: 550")
        if what == "cap":
            from workflows_app.steps.base import Outcome

            return Outcome(
                kind="next",
                skipped=True,
                output={
                    "skipped": f"{ctx.contact.email} had 3 in 7 days",
                    "reason": "frequency cap",
                },
            )
        return real_run(send, ctx)

    people = contacts_by_branch(workflow, a=0, b=4)
    with mock.patch.object(send, "run", run):
        for contact in people["b"]:
            track_ok(track, email=contact.email)
            drain()

    reply = workflow_stats(
        workflow=workflow,
        start=timezone.now() - timedelta(hours=1),
        end=timezone.now() + timedelta(hours=1),
        goal=None,
    )
    assert reply["executions"]["FAILED"] == 1 and reply["executions"]["COMPLETED"] == 3
    welcome_b = reply["steps"]["welcome_b"]
    assert (welcome_b["entered"], welcome_b["failed"], welcome_b["skipped"]) == (4, 1, 2)
    assert (welcome_b["completed"], welcome_b["sent"]) == (1, 1)
    assert welcome_b["skipped_reasons"] == {"frequency cap": 2}
    b = reply["steps"]["ab"]["branches"]["b"]
    assert (b["entered"], b["completed"], b["failed"], b["skipped"], b["sent"]) == (4, 3, 1, 2, 1)


def test_it_answers_in_a_few_queries_whatever_the_size(
    track, workflow, django_assert_max_num_queries
):
    people = contacts_by_branch(workflow, a=6, b=6)
    for contact in people["a"] + people["b"]:
        track_ok(track, email=contact.email)
    drain()
    start, end = timezone.now() - timedelta(hours=1), timezone.now() + timedelta(hours=1)
    # steps, executions by status and day, visits, waiting, email sends, skips, split branches,
    # emails after the split
    with django_assert_max_num_queries(8):
        reply = workflow_stats(workflow=workflow, start=start, end=end, goal=GOAL)
    assert reply["steps"]["ab"]["entered"] == 12


def test_it_leaves_out_other_workflows_runs(track, template, workflow, make_workflow):
    other = make_workflow(STEPS, TRANSITIONS, name="Other", trigger="user.other")
    track_ok(track, event="user.other")
    drain()
    now = timezone.now()
    mine = workflow_stats(
        workflow=workflow, start=now - timedelta(hours=1), end=now + timedelta(hours=1), goal=None
    )
    theirs = workflow_stats(
        workflow=other, start=now - timedelta(hours=1), end=now + timedelta(hours=1), goal=None
    )
    assert sum(mine["executions"].values()) == 0 and mine["steps"]["ab"]["entered"] == 0
    assert sum(theirs["executions"].values()) == 1 and theirs["steps"]["ab"]["entered"] == 1
    assert Execution.objects.count() == 1 and Message.objects.count() == 1


# --- the period and goal as the endpoints take them -----------------------------------------

NOW = datetime(2030, 3, 15, 12, 30, tzinfo=UTC)


def test_the_default_period_is_the_last_30_days():
    query = stats_query({}, now=NOW)
    assert (query.start, query.end, query.goal) == (NOW - timedelta(days=30), NOW, None)
    assert stats_query({"to": "2030-03-01T00:00:00Z"}, now=NOW).start == datetime(
        2030, 1, 30, tzinfo=UTC
    )


def test_a_date_is_a_whole_day_and_a_time_without_offset_is_in_time_zone(settings):
    query = stats_query({"from": "2030-01-01", "to": "2030-01-31"}, now=NOW)
    assert query.start == datetime(2030, 1, 1, tzinfo=UTC)
    assert query.end == datetime(2030, 2, 1, tzinfo=UTC)  # all of the 31st
    query = stats_query({"from": "2030-01-01T10:00", "to": "2030-01-02T10:00:00+02:00"}, now=NOW)
    assert query.start == datetime(2030, 1, 1, 10, tzinfo=UTC)
    assert query.end == datetime(2030, 1, 2, 8, tzinfo=UTC)
    # Offsets PostgreSQL would refuse (it takes at most 15:59) are read as the moment they name.
    query = stats_query({"from": "2030-01-01T00:00:00+23:59", "to": "2030-01-02"}, now=NOW)
    assert query.start == datetime(2029, 12, 31, 0, 1, tzinfo=UTC)
    settings.TIME_ZONE = "Europe/Paris"
    with timezone.override("Europe/Paris"):
        query = stats_query({"from": "2030-01-01", "to": "2030-01-01"}, now=NOW)
        assert query.start == datetime(2029, 12, 31, 23, tzinfo=UTC)
        assert query.end - query.start == timedelta(days=1)


def test_the_days_follow_time_zone(track, workflow):
    with time_machine.travel(datetime(2030, 1, 7, 23, 30, tzinfo=UTC), tick=False):
        track_ok(track)  # 00:30 on the 8th in Paris
    with timezone.override("Europe/Paris"):
        query = stats_query({"from": "2030-01-07", "to": "2030-01-08"}, now=NOW)
        reply = workflow_stats(workflow=workflow, start=query.start, end=query.end, goal=None)
    assert reply["started_per_day"] == [
        {"date": "2030-01-07", "started": 0},
        {"date": "2030-01-08", "started": 1},
    ]


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"from": "yesterday"}, "from", "ISO 8601"),
        ({"to": "2030-13-01"}, "to", "ISO 8601"),
        ({"to": "2030-02-30"}, "to", "ISO 8601"),
        ({"from": "2030-01-01T25:00"}, "from", "ISO 8601"),
        ({"from": "x" * 10_000}, "from", "ISO 8601"),
        ({"to": "9999-12-31"}, "to", "ISO 8601"),
        ({"to": "0001-01-02"}, "to", "Out of range"),
        ({"from": "0999-12-31T23:00+02:00", "to": "1000-01-02"}, "from", "Out of range"),
        ({"from": "8999-12-31", "to": "9000-01-01T00:00Z"}, "to", "Out of range"),
        ({"from": "2030-03-01", "to": "2030-02-01"}, "from", "before `to`"),
        ({"from": "2030-03-01T00:00Z", "to": "2030-03-01T00:00Z"}, "from", "before `to`"),
        ({"from": "2030-04-01"}, "from", "before `to`"),  # after now, the default `to`
        ({"from": "2029-01-01", "to": "2030-01-03"}, "from", "At most 366 days"),
        ({"goal": "x" * 256}, "goal", "at most 255"),
        ({"goal": "order\x00placed"}, "goal", "NUL"),
        # Offsets Python takes but that leave datetime's years once in UTC.
        ({"from": "9999-12-31T23:59:59-23:59"}, "from", "Out of range"),
        ({"to": "9999-12-31T23:59:59-23:59"}, "to", "Out of range"),
        ({"from": "0001-01-01T00:00:00+23:59"}, "from", "Out of range"),
        ({"to": "0001-01-01T00:00:00+23:59"}, "to", "Out of range"),
        ({"to": "2030-01-01T00:00:00+24:00"}, "to", "ISO 8601"),
    ],
)
def test_bad_input_names_its_field(params, field, message):
    with pytest.raises(StatsInputError) as caught:
        stats_query(params, now=NOW)
    assert caught.value.field == field
    assert message in caught.value.message


def test_366_days_and_a_goal_are_fine():
    query = stats_query(
        {"from": "2029-01-01", "to": "2030-01-01T00:00:00Z", "goal": " email.opened "}, now=NOW
    )
    assert query.end - query.start == timedelta(days=365)
    assert query.goal == "email.open"  # the older name means the current one
    assert stats_query({"goal": ""}, now=NOW).goal is None
    assert stats_query({"from": "2029-01-01", "to": "2030-01-01"}, now=NOW).end == datetime(
        2030, 1, 2, tzinfo=UTC
    )
    assert date(2030, 1, 2) - date(2029, 1, 1) == timedelta(days=366)


HOSTILE_MOMENTS = [
    ("from", "9999-12-31T23:59:59-23:59"),
    ("to", "9999-12-31T23:59:59-23:59"),
    ("from", "0001-01-01T00:00:00+23:59"),
    ("to", "0001-01-01T00:00:00+23:59"),
]


@pytest.mark.parametrize(("field", "value"), HOSTILE_MOMENTS)
def test_both_endpoints_answer_400_naming_the_field_to_a_moment_past_the_years(
    workflow, secret_key, admin_client, field, value
):
    api = Client().get(
        f"/v1/workflows/{workflow.pk}/stats",
        {field: value},
        HTTP_AUTHORIZATION=f"Bearer {secret_key}",
    )
    assert api.status_code == 400
    error = api.json()["error"]
    assert set(error["fields"]) == {field} and "Out of range" in error["fields"][field]

    url = reverse("admin:workflows_app_workflow_canvas_stats", args=[workflow.pk])
    canvas = admin_client.get(url, {field: value})
    assert canvas.status_code == 400
    assert canvas.json()["field"] == field and "Out of range" in canvas.json()["message"]


def test_both_endpoints_read_an_offset_postgresql_refuses_as_its_moment(
    workflow, secret_key, admin_client
):
    period = {"from": "2030-01-01T00:00:00-23:59", "to": "2030-01-05T00:00:00+16:00"}
    api = Client().get(
        f"/v1/workflows/{workflow.pk}/stats", period, HTTP_AUTHORIZATION=f"Bearer {secret_key}"
    )
    assert api.status_code == 200, api.content
    assert api.json()["data"]["from"] == "2030-01-01T23:59:00+00:00"
    assert api.json()["data"]["to"] == "2030-01-04T08:00:00+00:00"
    url = reverse("admin:workflows_app_workflow_canvas_stats", args=[workflow.pk])
    canvas = admin_client.get(url, period)
    assert canvas.status_code == 200 and canvas.json()["from"] == "2030-01-01T23:59:00+00:00"
