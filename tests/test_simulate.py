"""The dry run (workflows_app.simulate): the real step code in virtual time, with every side
effect recorded instead of made. Each step type's behaviour, branches, waits with events at
offsets and timeouts, exit, failure, made-up and stored contacts, templates rendered with
contact and event data, the send policy; and that it touches nothing: no row, no email to a
real SMTP server, no request to a real HTTP server."""

import email
import json
import math
import socket
from datetime import UTC, datetime, timedelta

import pytest
from aiosmtpd.controller import Controller
from django.apps import apps
from standardwebhooks.webhooks import Webhook as Verifier

from contacts_app.models import Contact
from contacts_app.services import contact_upsert
from templates_app.models import Template
from tests.conftest import chain, drain
from tests.flow import track_ok
from workflows_app.engine import graph_for
from workflows_app.models import Execution
from workflows_app.simulate import (
    MAX_EVENTS,
    SimulationInvalid,
    simulation_parse,
    workflow_simulate,
)
from workflows_app.steps.split import split_choose, split_point

DAY = 86400.0
T0 = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)


def simulate(workflow, body, now=T0):
    return workflow_simulate(workflow=workflow, request=simulation_parse(body), now=now)


def made_up(data=None, **extra):
    return {"contact": {"data": data or {}, **extra}}


def steps_of(result):
    return [(p["step"], p["branch"], p["at"]) for p in result["path"]]


@pytest.fixture
def onboarding(make_workflow, template):
    """welcome (email) -> pause (2 days) -> activated (wait 3 days) -> event: is_pro (condition)
    -> yes: notify (webhook) -> tag (update) -> done (exit); timeout: reminder (email)."""
    Template.objects.create(
        name="Reminder",
        type=Template.TRANSACTIONAL,
        subject="Still there, {{ firstName }}? ({{ event.orderId }})",
        html="<p>{{ email }} / {{ event.source | default: 'none' }}</p>",
    )
    steps = [
        {"key": "welcome", "type": "send_email", "config": {"template": "Welcome"}},
        {"key": "pause", "type": "delay", "config": {"amount": 2, "unit": "days"}},
        {
            "key": "activated",
            "type": "wait_for_event",
            "config": {"event": "user.activated", "timeout": {"amount": 3, "unit": "days"}},
        },
        {
            "key": "is_pro",
            "type": "condition",
            "config": {"field": "event.plan", "operator": "equals", "value": "pro"},
        },
        {
            "key": "notify",
            "type": "webhook",
            "config": {
                "url": "https://hooks.example.com/pro",
                "headers": {"X-Plan": "{{ event.plan }}"},
                "body": {"who": "{{ email }}", "order": "{{ event.orderId }}"},
            },
        },
        {"key": "tag", "type": "update_contact", "config": {"set": {"stage": "pro"}}},
        {"key": "done", "type": "exit", "config": {"reason": "activated pro"}},
        {"key": "reminder", "type": "send_email", "config": {"template": "Reminder"}},
    ]
    transitions = [
        {"from": "trigger", "to": "welcome"},
        {"from": "welcome", "to": "pause"},
        {"from": "pause", "to": "activated"},
        {"from": "activated", "branch": "event", "to": "is_pro"},
        {"from": "activated", "branch": "timeout", "to": "reminder"},
        {"from": "is_pro", "branch": "yes", "to": "notify"},
        {"from": "notify", "to": "tag"},
        {"from": "tag", "to": "done"},
    ]
    return make_workflow(steps, transitions, trigger="user.signup", enabled=False)


# --- The path in virtual time -----------------------------------------------------------------


def test_it_follows_the_event_branch_at_the_events_offset(onboarding):
    result = simulate(
        onboarding,
        {
            **made_up({"firstName": "Ann"}, email="ann@example.com"),
            "trigger": {"data": {"orderId": "A-1"}},
            "events": [{"name": "user.activated", "after": 2.5 * DAY, "data": {"plan": "pro"}}],
        },
    )
    assert steps_of(result) == [
        ("welcome", "next", 0),
        ("pause", "next", 0),
        ("activated", "event", 2 * DAY),
        ("is_pro", "yes", 2.5 * DAY),
        ("notify", "next", 2.5 * DAY),
        ("tag", "next", 2.5 * DAY),
        ("done", None, 2.5 * DAY),
    ]
    assert result["status"] == Execution.EXITED
    assert result["exit_reason"] == "activated pro"
    assert result["path"][3]["at_time"] == (T0 + timedelta(days=2.5)).isoformat()
    pause = result["path"][1]["detail"]
    assert pause["wake_at"] == (T0 + timedelta(days=2)).isoformat()
    wait = result["path"][2]["detail"]
    assert wait["event"] == "user.activated"
    assert wait["timeout_at"] == (T0 + timedelta(days=5)).isoformat()
    assert wait["received"] == {
        "name": "user.activated",
        "after": 2.5 * DAY,
        "data": {"plan": "pro"},
    }
    # The resuming event's data joins the context (top level and under its name), as the
    # engine merges it; the trigger's data is there from the start.
    assert result["context"] == {
        "orderId": "A-1",
        "plan": "pro",
        "user.activated": {"plan": "pro"},
    }
    # The Update Contact changed only the dry run's contact.
    assert result["contact"]["data"]["stage"] == "pro"
    assert result["path"][5]["detail"]["set"] == {"stage": "pro"}


def test_it_takes_the_timeout_when_the_event_comes_too_late_or_too_early(onboarding):
    result = simulate(
        onboarding,
        {
            **made_up({"firstName": "Ann"}),
            "trigger": {"data": {"orderId": "A-2"}},
            "events": [
                # Before the wait began (it begins after the 2-day delay): does not count.
                {"name": "user.activated", "after": DAY, "data": {"plan": "pro"}},
                # After the timeout (2 + 3 days): too late.
                {"name": "user.activated", "after": 5 * DAY + 1, "data": {"plan": "pro"}},
            ],
        },
    )
    assert steps_of(result) == [
        ("welcome", "next", 0),
        ("pause", "next", 0),
        ("activated", "timeout", 2 * DAY),
        ("reminder", "next", 5 * DAY),
    ]
    assert result["status"] == Execution.COMPLETED
    reminder = result["emails"][1]
    assert reminder["subject"] == "Still there, Ann? (A-2)"
    assert reminder["at"] == 5 * DAY


def test_an_event_at_the_very_end_of_the_timeout_still_counts(onboarding):
    result = simulate(
        onboarding,
        {**made_up(), "events": [{"name": "user.activated", "after": 5 * DAY, "data": {}}]},
    )
    assert result["path"][2]["branch"] == "event"
    # plan is missing: the condition says no, and a `no` with no transition completes the run.
    assert result["path"][3]["branch"] == "no"
    assert result["status"] == Execution.COMPLETED


def test_each_event_resumes_one_wait_only(make_workflow):
    wait = {"event": "clicked", "timeout": {"amount": 1, "unit": "hours"}}
    workflow = make_workflow(
        [
            {"key": "first", "type": "wait_for_event", "config": wait},
            {"key": "second", "type": "wait_for_event", "config": wait},
        ],
        [
            {"from": "trigger", "to": "first"},
            {"from": "first", "branch": "event", "to": "second"},
        ],
    )
    one = simulate(workflow, {**made_up(), "events": [{"name": "clicked", "after": 60}]})
    assert steps_of(one) == [("first", "event", 0), ("second", "timeout", 60)]
    two = simulate(
        workflow,
        {
            **made_up(),
            "events": [{"name": "clicked", "after": 60}, {"name": "clicked", "after": 60}],
        },
    )
    assert steps_of(two) == [("first", "event", 0), ("second", "event", 60)]
    assert one["events"] == [{"name": "clicked", "after": 60, "resumed": "first"}]
    assert [e["resumed"] for e in two["events"]] == ["first", "second"]


def test_a_wait_without_timeout_or_event_is_still_waiting(make_workflow):
    workflow = make_workflow(
        *chain({"key": "w", "type": "wait_for_event", "config": {"event": "paid"}})
    )
    result = simulate(workflow, {**made_up(), "events": [{"name": "other", "after": 5}]})
    assert result["status"] == Execution.WAITING
    assert result["waiting"] == {"event": "paid", "wake_at": None}
    assert "no listed event" in result["horizon"]
    assert result["path"][0]["branch"] is None


def test_it_stops_at_the_horizon_of_a_year(make_workflow):
    long = {"amount": 300, "unit": "days"}
    workflow = make_workflow(
        *chain(
            {"key": "a", "type": "delay", "config": long},
            {"key": "b", "type": "delay", "config": long},
            {"key": "c", "type": "exit", "config": {}},
        )
    )
    result = simulate(workflow, made_up())
    assert result["status"] == Execution.WAITING
    assert [p["step"] for p in result["path"]] == ["a", "b"]
    assert result["waiting"]["wake_at"] == (T0 + timedelta(days=600)).isoformat()
    assert "horizon" in result["horizon"]


# --- Each step type's detail --------------------------------------------------------------


def test_a_condition_shows_the_values_it_compared(make_workflow):
    workflow = make_workflow(
        [
            {
                "key": "big",
                "type": "condition",
                "config": {"field": "event.total", "operator": "greaterThan", "value": 100},
            },
            {
                "key": "tier",
                "type": "condition",
                "config": {
                    "mode": "multi",
                    "field": "contact.plan",
                    "branches": [
                        {"id": "free", "name": "Free", "operator": "equals", "value": "free"},
                        {"id": "pro", "name": "Pro", "operator": "equals", "value": "pro"},
                    ],
                },
            },
        ],
        [{"from": "trigger", "to": "big"}, {"from": "big", "branch": "yes", "to": "tier"}],
    )
    result = simulate(workflow, {**made_up({"plan": "pro"}), "trigger": {"data": {"total": 250}}})
    big, tier = (p["detail"] for p in result["path"])
    assert big == {
        "field": "event.total",
        "operator": "greaterThan",
        "expected": 100,
        "actual": 250,
        "present": True,
        "result": True,
        "branch": "yes",
    }
    assert tier["actual"] == "pro" and tier["branch"] == "pro"
    assert [(b["id"], b["result"]) for b in tier["branches"]] == [("free", False), ("pro", True)]
    assert result["path"][1]["branch"] == "pro"

    missing = simulate(workflow, made_up())
    assert missing["path"][0]["detail"]["present"] is False
    assert missing["path"][0]["branch"] == "no"


def test_a_split_takes_the_branch_a_real_run_would(db, make_workflow):
    branches = [{"id": "a", "weight": 50}, {"id": "b", "weight": 50}]
    workflow = make_workflow(
        [{"key": "ab", "type": "split", "config": {"branches": branches}}],
        [{"from": "trigger", "to": "ab"}],
    )
    contacts = [contact_upsert(email=f"c{i}@example.com")[0] for i in range(24)]
    seen = set()
    for contact in contacts:
        result = simulate(workflow, {"contact": {"email": contact.email}})
        [visit] = result["path"]
        config = next(iter(graph_for(workflow).steps.values())).config
        expected = split_choose(config.branches, split_point(contact.pk, workflow.pk, "ab"))
        assert visit["branch"] == expected
        assert visit["detail"]["weights"] == {"a": 50, "b": 50}
        seen.add(visit["branch"])
    assert seen == {"a", "b"}  # 24 contacts (random ids) over 50/50: both, but for 1 in 8 million
    # A made-up contact has no key: its address decides, the same every time.
    runs = {
        simulate(workflow, made_up(email="x@example.com"))["path"][0]["branch"] for _ in range(3)
    }
    assert len(runs) == 1


def test_the_webhook_request_is_recorded_signed_and_the_run_goes_on(onboarding):
    result = simulate(
        onboarding,
        {
            **made_up({"firstName": "Ann"}, email="ann@example.com"),
            "trigger": {"data": {"orderId": "A-9"}},
            "events": [{"name": "user.activated", "after": 2 * DAY, "data": {"plan": "pro"}}],
        },
        now=datetime.now(UTC) - timedelta(days=2),  # so the signature's time is now
    )
    [hook] = result["webhooks"]
    assert hook["step"] == "notify"
    assert hook["method"] == "POST"
    assert hook["url"] == "https://hooks.example.com/pro"
    assert hook["body"] == {"who": "ann@example.com", "order": "A-9"}
    assert hook["headers"]["X-Plan"] == "pro"
    assert hook["headers"]["Content-Type"] == "application/json"
    # Signed as the real request would be: a Standard Webhooks verifier with the workflow's
    # secret accepts the body the receiver would get.
    sent = json.dumps(hook["body"], separators=(",", ":"))
    assert Verifier(onboarding.signing_secret).verify(sent, hook["headers"]) == hook["body"]
    # The step followed its success path with no reply: nothing joined the context.
    assert "notify" not in result["context"]
    assert [p["step"] for p in result["path"]][-2:] == ["tag", "done"]


def test_emails_are_rendered_with_contact_and_event_data(onboarding):
    result = simulate(onboarding, {**made_up({"firstName": "Zoë"}, email="zoe@example.com")})
    welcome = result["emails"][0]
    assert welcome["step"] == "welcome"
    assert welcome["to"] == "zoe@example.com"
    assert welcome["subject"] == "Welcome, Zoë"
    assert "<p>Hi Zoë!</p>" in welcome["html"]
    assert "/unsubscribe/" in welcome["html"]  # the marketing link, as in a real send
    assert "Hi Zoë!" in welcome["text"]
    assert welcome["type"] == Template.MARKETING
    assert welcome["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert welcome["headers"]["List-Unsubscribe"].startswith("<http")
    assert result["emails"][1]["headers"] == {}  # transactional: none
    assert result["path"][0]["detail"]["email"] == 0
    reminder = result["emails"][1]
    assert reminder["html"] == "<p>zoe@example.com / none</p>"


def test_marketing_mail_is_skipped_for_an_unsubscribed_contact(onboarding):
    result = simulate(onboarding, made_up({"firstName": "Ann"}, subscribed=False))
    welcome = result["path"][0]
    assert welcome["skipped"] is True
    assert welcome["detail"] == {"skipped": True, "reason": "skipped: unsubscribed"}
    # The transactional reminder still goes (timeout branch): only it is in the list.
    assert [e["step"] for e in result["emails"]] == ["reminder"]
    assert result["status"] == Execution.COMPLETED


def test_a_fixed_recipient_gets_the_mail_even_from_an_unsubscribed_contact(make_workflow, template):
    workflow = make_workflow(
        *chain(
            {
                "key": "team",
                "type": "send_email",
                "config": {
                    "template": "Welcome",
                    "recipient": {"type": "CUSTOM", "customEmail": "team@example.com"},
                },
            }
        )
    )
    result = simulate(workflow, made_up({"firstName": "Ann"}, subscribed=False))
    [email] = result["emails"]
    assert email["to"] == "team@example.com"
    assert email["subject"] == "Welcome, Ann"


def test_update_contact_changes_what_later_steps_see(make_workflow):
    Template.objects.create(
        name="Stage", type=Template.TRANSACTIONAL, subject="{{ stage }}", html="x"
    )
    workflow = make_workflow(
        *chain(
            {
                "key": "tag",
                "type": "update_contact",
                "config": {"set": {"stage": "gold"}, "unset": ["old"], "subscribed": False},
            },
            {"key": "mail", "type": "send_email", "config": {"template": "Stage"}},
        )
    )
    result = simulate(workflow, made_up({"old": 1, "keep": 2}))
    assert result["contact"] == {
        "email": "someone@example.com",
        "subscribed": False,
        "data": {"keep": 2, "stage": "gold"},
    }
    assert result["path"][0]["detail"]["event"] == "contact.unsubscribed"
    assert result["emails"][0]["subject"] == "gold"


# --- Failure and exit ---------------------------------------------------------------------


def test_a_failing_step_fails_the_run_with_the_engines_message(make_workflow):
    Template.objects.create(
        name="Broken", type=Template.TRANSACTIONAL, subject="Hi", html="{{ 1 | divided_by: 0 }}"
    )
    workflow = make_workflow(
        *chain(
            {
                "key": "mail",
                "type": "send_email",
                "name": "Send it",
                "config": {"template": "Broken"},
            },
            {"key": "after", "type": "exit", "config": {}},
        )
    )
    result = simulate(workflow, made_up())
    assert result["status"] == Execution.FAILED
    assert result["error"].startswith("Step 'Send it' failed: template 'Broken'")
    assert [p["step"] for p in result["path"]] == ["mail"]
    assert result["path"][0]["detail"]["error"]
    assert result["emails"] == []


def test_a_webhook_url_that_renders_wrong_fails_the_run(make_workflow):
    workflow = make_workflow(
        *chain({"key": "hook", "type": "webhook", "config": {"url": "https://{{ host }}/x"}})
    )
    result = simulate(workflow, made_up())
    assert result["status"] == Execution.FAILED
    assert "rendered URL" in result["error"]
    assert result["webhooks"] == []


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.5/hook", "http://[::ffff:192.168.1.1]/hook", "http://169.254.169.254/x"],
)
def test_a_webhook_to_an_address_the_guard_refuses_fails_as_it_would_for_real(
    make_workflow, settings, url
):
    workflow = make_workflow(*chain({"key": "hook", "type": "webhook", "config": {"url": url}}))
    result = simulate(workflow, made_up())
    assert result["status"] == Execution.FAILED
    assert "private or reserved address" in result["error"]
    assert result["webhooks"] == []
    # Allowed by the setting: recorded, as the real call would be made.
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    allowed = simulate(workflow, made_up())
    assert allowed["status"] == Execution.COMPLETED and allowed["webhooks"][0]["url"] == url


def test_loopback_follows_its_own_setting(make_workflow, settings):
    workflow = make_workflow(
        *chain({"key": "hook", "type": "webhook", "config": {"url": "http://127.0.0.1:9/h"}})
    )
    settings.WEBHOOK_ALLOW_LOOPBACK = False
    assert simulate(workflow, made_up())["status"] == Execution.FAILED
    settings.WEBHOOK_ALLOW_LOOPBACK = True  # as the tests' real receivers need
    assert simulate(workflow, made_up())["status"] == Execution.COMPLETED


# --- Stored contacts ----------------------------------------------------------------------


def test_a_stored_contact_is_used_and_left_as_it_was(onboarding):
    ann, _ = contact_upsert(email="ann@example.com", data={"firstName": "Ann", "plan": "free"})
    result = simulate(
        onboarding,
        {
            "contact": {"email": "ANN@example.com"},
            "events": [{"name": "user.activated", "after": 3 * DAY, "data": {"plan": "pro"}}],
        },
    )
    assert result["emails"][0]["subject"] == "Welcome, Ann"
    assert result["emails"][0]["to"] == "ann@example.com"
    assert result["webhooks"][0]["body"]["who"] == "ann@example.com"
    # The event wrote plan=pro into the dry run's contact, as /v1/track would, then the step
    # set stage; the stored contact is untouched.
    assert result["contact"]["data"] == {"firstName": "Ann", "plan": "pro", "stage": "pro"}
    ann.refresh_from_db()
    assert ann.data == {"firstName": "Ann", "plan": "free"}


def test_an_unknown_contact_is_refused(onboarding):
    with pytest.raises(SimulationInvalid) as refused:
        simulate(onboarding, {"contact": {"email": "nobody@example.com"}})
    assert "contact.email" in refused.value.fields


# --- The send policy ----------------------------------------------------------------------


def test_quiet_hours_move_a_marketing_send_to_the_window(onboarding, settings):
    settings.QUIET_HOURS = "21:00-08:00"
    settings.DEFAULT_TIMEZONE = "UTC"
    night = datetime(2030, 1, 7, 23, 30, tzinfo=UTC)
    result = simulate(onboarding, made_up({"firstName": "Ann"}), now=night)
    welcome = result["path"][0]
    [held] = welcome["detail"]["held"]
    assert held["reason"] == "quiet hours"
    assert held["until"] == datetime(2030, 1, 8, 8, 0, tzinfo=UTC).isoformat()
    assert result["emails"][0]["at_time"] == held["until"]
    # Time went on from the opening: the 2-day delay ends two days after 08:00.
    assert (
        result["path"][1]["detail"]["wake_at"]
        == datetime(2030, 1, 10, 8, 0, tzinfo=UTC).isoformat()
    )
    # In the contact's own zone (data key `timezone`), 23:30 UTC is 15:30: no hold.
    west = simulate(onboarding, made_up({"timezone": "America/Los_Angeles"}), now=night)
    assert "held" not in west["path"][0]["detail"]


def test_a_send_over_the_frequency_cap_is_skipped(make_workflow, template, settings):
    settings.MARKETING_FREQUENCY_CAP = "1/1d"
    workflow = make_workflow(
        *chain(
            {"key": "one", "type": "send_email", "config": {"template": "Welcome"}},
            {"key": "two", "type": "send_email", "config": {"template": "Welcome"}},
            {"key": "wait", "type": "delay", "config": {"amount": 1, "unit": "days"}},
            {"key": "three", "type": "send_email", "config": {"template": "Welcome"}},
        )
    )
    result = simulate(workflow, made_up({"firstName": "Ann"}))
    assert [e["step"] for e in result["emails"]] == ["one", "three"]
    two = result["path"][1]
    assert two["skipped"] is True
    assert two["detail"]["reason"].startswith("frequency cap")
    assert result["status"] == Execution.COMPLETED
    # The workflow's own setting wins: "none" lifts the cap for its sends.
    workflow.frequency_cap = "none"
    workflow.save(update_fields=["frequency_cap"])
    uncapped = simulate(workflow, made_up({"firstName": "Ann"}))
    assert [e["step"] for e in uncapped["emails"]] == ["one", "two", "three"]


# --- Touches nothing ----------------------------------------------------------------------


class SmtpSink:
    """A real SMTP server on a local port that keeps every message it is handed."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []
        self.port = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_sink():
    sink = SmtpSink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        sink.port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    yield sink
    controller.stop()


def _row_counts():
    return {model._meta.label: model.objects.count() for model in apps.get_models()}


def test_the_dry_run_touches_nothing(
    transactional_db, settings, track, make_workflow, template, httpserver, smtp_sink
):
    """Row counts of every model, a real SMTP server and a real HTTP server: nothing. Then the
    same workflow run for real reaches both, so the wiring would have shown a leak."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_sink.port
    httpserver.expect_request("/hook").respond_with_json({"tier": "gold"})
    workflow = make_workflow(
        *chain(
            {"key": "mail", "type": "send_email", "config": {"template": "Welcome"}},
            {"key": "hook", "type": "webhook", "config": {"url": httpserver.url_for("/hook")}},
            {
                "key": "tag",
                "type": "update_contact",
                "config": {"set": {"stage": "x"}, "subscribed": False},
            },
            {"key": "wait", "type": "wait_for_event", "config": {"event": "paid"}},
        ),
        trigger="order.paid",
    )
    track_ok(track, "other.event", email="ann@example.com", data={"firstName": "Ann"})
    before = _row_counts()

    stored = simulate(
        workflow,
        {"contact": {"email": "ann@example.com"}, "events": [{"name": "paid", "after": 10}]},
    )
    invented = simulate(workflow, made_up({"firstName": "Bo"}, email="bo@example.com"))

    for result in (stored, invented):
        assert [e["step"] for e in result["emails"]] == ["mail"]
        assert [w["step"] for w in result["webhooks"]] == ["hook"]
    assert stored["status"] == Execution.COMPLETED
    assert invented["status"] == Execution.WAITING
    assert _row_counts() == before
    assert smtp_sink.messages == []
    assert httpserver.log == []
    assert Contact.objects.get(email="ann@example.com").subscribed is True

    # The control: a real run of the same workflow reaches both servers.
    track_ok(track, "order.paid", email="ann@example.com")
    drain()
    assert len(smtp_sink.messages) == 1
    assert len(httpserver.log) == 1


# --- Bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({}, "contact"),
        ({"contact": "ann@example.com"}, "contact"),
        ({"contact": {"email": "not an address"}}, "contact.email"),
        ({"contact": {"data": []}}, "contact.data"),
        ({"contact": {"data": {}, "subscribed": "yes"}}, "contact.subscribed"),
        ({"contact": {"data": {}, "phone": 1}}, "contact.phone"),
        ({"contact": {"data": {"a": "\x00"}}}, "contact.data"),
        ({**made_up(), "trigger": {"data": 5}}, "trigger.data"),
        ({**made_up(), "trigger": []}, "trigger"),
        ({**made_up(), "events": {}}, "events"),
        ({**made_up(), "events": ["paid"]}, "events.0"),
        ({**made_up(), "events": [{"name": ""}]}, "events.0.name"),
        ({**made_up(), "events": [{"name": "x", "after": -1}]}, "events.0.after"),
        ({**made_up(), "events": [{"name": "x", "after": math.nan}]}, "events.0.after"),
        ({**made_up(), "events": [{"name": "x", "after": math.inf}]}, "events.0.after"),
        ({**made_up(), "events": [{"name": "x", "after": True}]}, "events.0.after"),
        ({**made_up(), "events": [{"name": "x", "after": "10"}]}, "events.0.after"),
        ({**made_up(), "events": [{"name": "x", "after": 1e300}]}, "events.0.after"),
        ({**made_up(), "events": [{"name": "x", "after": 10**400}]}, "events.0.after"),
        ({**made_up(), "events": [{"name": "x", "data": "y"}]}, "events.0.data"),
        ({**made_up(), "events": [{"name": "x", "when": 1}]}, "events.0.when"),
        ({**made_up(), "events": [{"name": "x"}] * (MAX_EVENTS + 1)}, "events"),
        ({**made_up(), "extra": 1}, "extra"),
    ],
)
def test_bad_input_names_the_field(body, field):
    with pytest.raises(SimulationInvalid) as refused:
        simulation_parse(body)
    assert field in refused.value.fields, refused.value.fields


def test_data_nested_deeper_than_track_allows_is_refused(settings):
    deep: dict = {}
    for _ in range(settings.TRACK_MAX_DATA_DEPTH + 1):
        deep = {"a": deep}
    with pytest.raises(SimulationInvalid) as refused:
        simulation_parse(made_up(deep))
    assert "contact.data" in refused.value.fields


# --- Data as /v1/track would write it -----------------------------------------------------


def test_event_data_reaches_the_contact_as_track_would_write_it(make_workflow):
    wait = {"event": "email.open", "timeout": {"amount": 1, "unit": "days"}}
    workflow = make_workflow(
        [
            {"key": "opened", "type": "wait_for_event", "config": wait},
            {"key": "bought", "type": "wait_for_event", "config": {"event": "order.paid"}},
        ],
        [
            {"from": "trigger", "to": "opened"},
            {"from": "opened", "branch": "event", "to": "bought"},
        ],
    )
    result = simulate(
        workflow,
        {
            **made_up({"plan": "free"}),
            "trigger": {"data": {"coupon": {"value": "X1", "persistent": False}, "src": "ad"}},
            "events": [
                # A system event may be listed to resume a wait; it writes no contact data.
                {"name": "email.open", "after": 60, "data": {"subject": "Hi"}},
                {"name": "order.paid", "after": 120, "data": {"plan": "pro", "total": 9}},
            ],
        },
    )
    assert steps_of(result) == [("opened", "event", 0), ("bought", "event", 60)]
    # The trigger's persistent values and the tracked event's data are written; the wrapped
    # non-persistent value and the system event's data are not.
    assert result["contact"]["data"] == {"plan": "pro", "src": "ad", "total": 9}
    assert result["context"]["coupon"] == "X1"
    assert result["context"]["email.open"] == {"subject": "Hi"}


def test_a_graph_that_no_longer_loads_fails_the_dry_run(make_workflow):
    workflow = make_workflow(
        *chain({"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "days"}})
    )
    # A config stored before a rule tightened (written past the services, as a migration might).
    workflow.steps.update(config={"amount": -1, "unit": "days"})
    workflow.refresh_from_db()
    result = simulate(workflow, made_up())
    assert result["status"] == Execution.FAILED
    assert result["error"].startswith("Cannot load the workflow graph")
    assert result["path"] == []


def test_the_engines_guard_on_a_long_pass_applies(make_workflow, settings):
    settings.ENGINE_MAX_STEPS_PER_ADVANCE = 2
    cond = {"field": "data.x", "operator": "exists"}
    workflow = make_workflow(
        [
            {"key": "a", "type": "condition", "config": cond},
            {"key": "b", "type": "condition", "config": cond},
            {"key": "c", "type": "condition", "config": cond},
        ],
        [
            {"from": "trigger", "to": "a"},
            {"from": "a", "branch": "no", "to": "b"},
            {"from": "b", "branch": "no", "to": "c"},
        ],
    )
    result = simulate(workflow, made_up())
    assert result["status"] == Execution.FAILED
    assert "ENGINE_MAX_STEPS_PER_ADVANCE" in result["error"]
    assert [p["step"] for p in result["path"]] == ["a", "b"]


def test_it_stops_at_the_visit_limit(make_workflow, monkeypatch):
    from workflows_app import simulate as module

    monkeypatch.setattr(module, "MAX_VISITS", 2)
    pause = {"amount": 1, "unit": "hours"}
    workflow = make_workflow(
        *chain(
            {"key": "a", "type": "delay", "config": pause},
            {"key": "b", "type": "delay", "config": pause},
            {"key": "c", "type": "delay", "config": pause},
        )
    )
    result = simulate(workflow, made_up())
    assert [p["step"] for p in result["path"]] == ["a", "b"]
    assert result["status"] == Execution.RUNNING
    assert "2 step visits" in result["horizon"]
