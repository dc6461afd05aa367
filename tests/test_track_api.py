"""POST /v1/track: every rule of issue 2, on PostgreSQL.

Behaviour tests run against both implementations of workflows_app.track.track(): the
one-statement PostgreSQL path and the ORM path (the one SQLite uses), through the `path` fixture.
Concurrency and database-outage tests live in test_track_concurrency.py.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.test import Client, override_settings
from django.utils import timezone

from contacts_app.models import ApiKey, Contact, Event, IdempotencyKey
from contacts_app.services import apikey_create, apikey_lookup, apikey_revoke
from templates_app.models import Message
from tests.conftest import TrackClient, chain, drain
from workflows_app import api as track_api
from workflows_app import track as track_mod
from workflows_app.models import Execution, StepRun
from workflows_app.services import workflow_create

# --- helpers ------------------------------------------------------------------------------------

EXIT = {"key": "done", "type": "exit", "config": {"reason": "finished"}}
WAIT_STEPS = [
    {
        "key": "wait",
        "type": "wait_for_event",
        "config": {"event": "user.activated", "timeout": {"amount": 3, "unit": "days"}},
    },
    {"key": "tag", "type": "update_contact", "config": {"set": {"stage": "active"}}},
]
WAIT_TRANSITIONS = [
    {"from": "trigger", "to": "wait"},
    {"from": "wait", "branch": "event", "to": "tag"},
]


def exit_workflow(name, trigger="user.signup", *, enabled=True, reentry=False):
    """A workflow whose run ends at once (Exit step) when a worker picks it up."""
    steps, transitions = chain(dict(EXIT))
    return workflow_create(
        name=name,
        trigger_event=trigger,
        enabled=enabled,
        allow_reentry=reentry,
        graph={"steps": steps, "transitions": transitions},
    )


def wait_workflow(name="Activation", trigger="user.signup"):
    """trigger -> wait for user.activated (3 days) -[event]-> set stage=active."""
    return workflow_create(
        name=name,
        trigger_event=trigger,
        enabled=True,
        graph={"steps": WAIT_STEPS, "transitions": WAIT_TRANSITIONS},
    )


def counts():
    return {
        "contacts": Contact.objects.count(),
        "events": Event.objects.count(),
        "executions": Execution.objects.count(),
    }


NOTHING = {"contacts": 0, "events": 0, "executions": 0}


def assert_error(response, status, code, field=None):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"success", "error", "timestamp"}
    assert body["success"] is False
    error = body["error"]
    assert error["code"] == code
    assert error["statusCode"] == status
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "statusCode", "fields", "errors"}
    if field is not None:
        assert field in error["fields"], error
        assert field in {e["field"] for e in error["errors"]}, error
        assert isinstance(error["fields"][field], str) and error["fields"][field]
    assert b"Traceback" not in response.content
    return error


def ok(response):
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["success"] is True
    assert set(body["data"]) == {"contact", "event", "timestamp"}
    return body["data"]


@pytest.fixture(params=[True, False], ids=["one_statement", "orm"])
def path(request, monkeypatch):
    """Makes /v1/track use one implementation of track() and proves that only it ran."""
    fast = request.param
    calls = {"fast": 0, "orm": 0}

    def spy(name, original):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        track_mod, "_track_one_statement", spy("fast", track_mod._track_one_statement)
    )
    monkeypatch.setattr(track_mod, "_track_orm", spy("orm", track_mod._track_orm))
    monkeypatch.setattr(track_api, "track", functools.partial(track_mod.track, fast=fast))
    yield fast
    used, unused = ("fast", "orm") if fast else ("orm", "fast")
    assert calls[unused] == 0, f"the {unused} path ran"
    assert calls[used] > 0, f"the {used} path never ran"


@pytest.fixture
def key_info(secret_key):
    return apikey_lookup(secret_key)[1]


def service_track(key, body, *, fast, now=None, idempotency_key=None):
    return track_mod.track(
        key=key,
        payload=track_mod.track_parse(body),
        now=now,
        idempotency_key=idempotency_key,
        fast=fast,
    )


# --- the contact, the event and the reply ------------------------------------------------------


def test_it_replies_with_contact_event_and_timestamp(track, path):
    before = timezone.now()
    data = ok(track.post({"event": "user.signup", "email": "ann@example.com"}))
    contact = Contact.objects.get()
    event = Event.objects.get()
    assert data["contact"] == str(contact.pk)
    assert data["event"] == str(event.pk)
    stamp = datetime.fromisoformat(data["timestamp"])
    assert stamp.tzinfo is not None
    assert stamp == event.created_at
    assert before <= stamp <= timezone.now()
    assert event.contact_id == contact.pk and event.name == "user.signup"


def test_it_creates_a_new_contact_subscribed_with_a_lower_case_email(track, path):
    ok(track.post({"event": "user.signup", "email": "  Ann.Smith@Example.COM "}))
    contact = Contact.objects.get()
    assert contact.email == "ann.smith@example.com"
    assert contact.subscribed is True
    assert contact.data == {}


def test_it_creates_a_new_contact_unsubscribed_when_told(track, path):
    ok(track.post({"event": "user.signup", "email": "ann@example.com", "subscribed": False}))
    assert Contact.objects.get().subscribed is False


def test_it_matches_the_email_case_insensitively(track, path):
    first = ok(track.post({"event": "a", "email": "Ann@Example.com"}))
    second = ok(track.post({"event": "b", "email": "ANN@EXAMPLE.COM"}))
    third = ok(track.post({"event": "c", "email": "ann@example.com"}))
    assert first["contact"] == second["contact"] == third["contact"]
    assert Contact.objects.get().email == "ann@example.com"
    assert Event.objects.filter(contact_id=first["contact"]).count() == 3


def test_it_changes_subscribed_only_when_given(track, path):
    email = "ann@example.com"
    ok(track.post({"event": "a", "email": email, "subscribed": False}))
    ok(track.post({"event": "b", "email": email}))
    assert Contact.objects.get().subscribed is False
    ok(track.post({"event": "c", "email": email, "subscribed": None}))
    assert Contact.objects.get().subscribed is False
    ok(track.post({"event": "d", "email": email, "subscribed": True}))
    assert Contact.objects.get().subscribed is True
    ok(track.post({"event": "e", "email": email}))
    assert Contact.objects.get().subscribed is True


def test_it_merges_persistent_data_keys_shallowly(track, path):
    email = "ann@example.com"
    ok(track.post({"event": "a", "email": email, "data": {"plan": "free", "n": 1, "x": {"a": 1}}}))
    ok(track.post({"event": "b", "email": email, "data": {"plan": "pro", "x": {"b": 2}}}))
    ok(track.post({"event": "c", "email": email, "data": {}}))
    ok(track.post({"event": "d", "email": email}))
    assert Contact.objects.get().data == {"plan": "pro", "n": 1, "x": {"b": 2}}
    assert Event.objects.get(name="b").data == {"plan": "pro", "x": {"b": 2}}


def test_it_keeps_non_persistent_values_off_the_contact(track, path):
    exit_workflow("Onboarding")
    body = {
        "event": "user.signup",
        "email": "ann@example.com",
        "data": {
            "plan": "pro",
            "coupon": {"value": "WELCOME10", "persistent": False},
            "seats": {"value": 5, "persistent": True},
            "cart": {"value": {"items": [1, 2]}, "persistent": False},
        },
    }
    ok(track.post(body))
    unwrapped = {"plan": "pro", "coupon": "WELCOME10", "seats": 5, "cart": {"items": [1, 2]}}
    assert Contact.objects.get().data == {"plan": "pro", "seats": 5}
    assert Event.objects.get().data == unwrapped
    assert Execution.objects.get().context == unwrapped


def test_it_stores_lookalike_objects_that_are_not_the_wrapped_form_as_they_are(track, path):
    value = {"value": 1, "persistent": "no"}
    extra = {"value": 1, "persistent": False, "other": 2}
    ok(track.post({"event": "a", "email": "ann@example.com", "data": {"v": value, "w": extra}}))
    assert Contact.objects.get().data == {"v": value, "w": extra}


def test_it_does_not_overwrite_contact_data_with_non_persistent_values(track, path):
    email = "ann@example.com"
    ok(track.post({"event": "a", "email": email, "data": {"plan": "free"}}))
    ok(
        track.post(
            {
                "event": "b",
                "email": email,
                "data": {"plan": {"value": "trial", "persistent": False}},
            }
        )
    )
    assert Contact.objects.get().data == {"plan": "free"}
    assert Event.objects.get(name="b").data == {"plan": "trial"}


def test_it_accepts_a_public_key(db, path):
    _, raw = apikey_create(name="browser", kind=ApiKey.PUBLIC)
    ok(TrackClient(raw).post({"event": "a", "email": "ann@example.com"}))
    assert Event.objects.count() == 1


def test_it_keeps_unicode_in_event_names_and_data(track, path):
    body = {
        "event": "commande.passée",
        "email": "ann@example.com",
        "data": {"名前": "Zoë 🎉", "escaped": "a\\u0000b"},
    }
    ok(track.post(body))
    event = Event.objects.get()
    assert event.name == "commande.passée"
    assert event.data == body["data"]
    assert Contact.objects.get().data == body["data"]


def test_it_accepts_an_event_name_of_255_characters_and_data_8_levels_deep(track, path):
    deep = 1
    for _ in range(8):
        deep = {"a": deep}
    name = "e" * 255
    ok(track.post({"event": name, "email": "ann@example.com", "data": deep}))
    assert Event.objects.get().name == name
    assert Event.objects.get().data == deep


# --- starting executions ------------------------------------------------------------------------


def test_it_starts_every_enabled_workflow_with_this_trigger_and_no_other(track, path):
    first = exit_workflow("First")
    second = exit_workflow("Second")
    exit_workflow("Disabled", enabled=False)
    exit_workflow("Other trigger", trigger="user.login")
    data = ok(track.post({"event": "user.signup", "email": "ann@example.com", "data": {"a": 1}}))
    runs = Execution.objects.order_by("workflow__name")
    assert [r.workflow_id for r in runs] == [first.pk, second.pk]
    stamp = datetime.fromisoformat(data["timestamp"])
    for run in runs:
        assert run.status == Execution.RUNNING
        assert str(run.contact_id) == data["contact"]
        assert str(run.trigger_id) == data["event"]
        assert run.context == {"a": 1}
        assert run.current_step_id is None and run.pending_branch == ""
        # The run is its own outbox: due now, so the clock hands it to a worker.
        assert run.wake_at == stamp


def test_it_hands_work_to_the_clock_and_sends_nothing_in_the_request(track, template, path):
    steps, transitions = chain(
        {"key": "welcome", "type": "send_email", "config": {"template": "Welcome"}}
    )
    workflow_create(
        name="Welcome",
        trigger_event="user.signup",
        enabled=True,
        graph={"steps": steps, "transitions": transitions},
    )
    ok(track.post({"event": "user.signup", "email": "ann@example.com"}))
    assert mail.outbox == [] and Message.objects.count() == 0
    assert StepRun.objects.count() == 0
    assert drain() == 1
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ann@example.com"]


def test_it_enters_a_workflow_without_reentry_at_most_once_ever(track, path):
    workflow = exit_workflow("Once")
    body = {"event": "user.signup", "email": "ann@example.com"}
    ok(track.post(body))
    ok(track.post(body))  # while the first run is active
    assert Execution.objects.count() == 1
    drain()
    assert Execution.objects.get().status == Execution.EXITED
    ok(track.post(body))  # after the first run ended
    ok(track.post({**body, "email": "ANN@example.com"}))
    assert Execution.objects.filter(workflow=workflow).count() == 1
    assert Event.objects.count() == 4
    ok(track.post({**body, "email": "bob@example.com"}))  # another contact still enters
    assert Execution.objects.count() == 2


def test_it_reenters_after_the_previous_run_ended_but_never_runs_two_at_once(track, path):
    workflow = exit_workflow("Again", reentry=True)
    body = {"event": "user.signup", "email": "ann@example.com"}
    ok(track.post(body))
    ok(track.post(body))
    assert Execution.objects.count() == 1
    drain()
    ok(track.post(body))
    ok(track.post(body))
    runs = Execution.objects.filter(workflow=workflow)
    assert runs.count() == 2
    assert sorted(runs.values_list("status", flat=True)) == [Execution.EXITED, Execution.RUNNING]
    drain()
    ok(track.post(body))
    assert runs.count() == 3
    assert runs.filter(status__in=Execution.ACTIVE).count() == 1


def test_it_does_not_start_a_second_run_while_one_waits_even_with_reentry(track, path):
    workflow_create(
        name="Waiter",
        trigger_event="user.signup",
        enabled=True,
        allow_reentry=True,
        graph={"steps": WAIT_STEPS, "transitions": WAIT_TRANSITIONS},
    )
    body = {"event": "user.signup", "email": "ann@example.com"}
    ok(track.post(body))
    drain()
    assert Execution.objects.get().status == Execution.WAITING
    ok(track.post(body))
    assert Execution.objects.count() == 1


# --- resuming waiting executions ----------------------------------------------------------------


def _waiting_run(track, email="ann@example.com"):
    ok(track.post({"event": "user.signup", "email": email}))
    drain()
    run = Execution.objects.get(contact__email=email)
    assert run.status == Execution.WAITING and run.waiting_for == "user.activated"
    return run


def test_it_resumes_the_contacts_run_waiting_for_this_event(track, path):
    wait_workflow()
    run = _waiting_run(track)
    data = ok(
        track.post(
            {
                "event": "user.activated",
                "email": "Ann@example.com",
                "data": {"plan": "pro", "tmp": {"value": 1, "persistent": False}},
            }
        )
    )
    resumed = Execution.objects.get(pk=run.pk)
    assert resumed.status == Execution.RUNNING
    assert resumed.pending_branch == "event"
    assert resumed.waiting_for == ""
    assert resumed.wake_at == datetime.fromisoformat(data["timestamp"])
    assert resumed.version > run.version
    # Plunk's resume: the event's data merged in at the top, and kept under its name.
    event_data = {"plan": "pro", "tmp": 1}
    assert resumed.context == {**run.context, **event_data, "user.activated": event_data}
    drain()
    finished = Execution.objects.get(pk=run.pk)
    assert finished.status == Execution.COMPLETED, finished.error
    assert StepRun.objects.get(execution=run, step_key="wait").branch == "event"
    assert Contact.objects.get().data == {"plan": "pro", "stage": "active"}


def test_it_does_not_resume_other_contacts_or_runs_waiting_for_other_events(track, path):
    wait_workflow()
    ann = _waiting_run(track, "ann@example.com")
    bob = _waiting_run(track, "bob@example.com")
    ok(track.post({"event": "user.deactivated", "email": "ann@example.com"}))
    ok(track.post({"event": "user.activated", "email": "carol@example.com"}))
    assert set(Execution.objects.values_list("status", flat=True)) == {Execution.WAITING}
    ok(track.post({"event": "user.activated", "email": "bob@example.com"}))
    assert Execution.objects.get(pk=bob.pk).status == Execution.RUNNING
    unchanged = Execution.objects.get(pk=ann.pk)
    assert unchanged.status == Execution.WAITING
    assert unchanged.version == ann.version and unchanged.context == ann.context


@pytest.mark.parametrize("fast", [True, False], ids=["one_statement", "orm"])
def test_it_does_not_resume_a_wait_that_began_after_the_event(track, key_info, fast):
    wait_workflow()
    run = _waiting_run(track)
    earlier = run.wait_started_at - timedelta(seconds=1)
    result = service_track(
        key_info, {"event": "user.activated", "email": "ann@example.com"}, fast=fast, now=earlier
    )
    assert result.resumed == 0
    assert Execution.objects.get(pk=run.pk).status == Execution.WAITING
    result = service_track(
        key_info,
        {"event": "user.activated", "email": "ann@example.com"},
        fast=fast,
        now=run.wait_started_at,
    )
    assert result.resumed == 1
    assert Execution.objects.get(pk=run.pk).status == Execution.RUNNING


@pytest.mark.parametrize("fast", [True, False], ids=["one_statement", "orm"])
def test_it_reports_how_many_runs_it_started_and_resumed(track, key_info, fast):
    wait_workflow()
    exit_workflow("On activation", trigger="user.activated")
    _waiting_run(track)
    result = service_track(
        key_info, {"event": "user.activated", "email": "ann@example.com"}, fast=fast
    )
    assert (result.started, result.resumed) == (1, 1)
    assert Execution.objects.filter(status=Execution.RUNNING).count() == 2


# --- Idempotency-Key ----------------------------------------------------------------------------

T0 = datetime(2031, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_it_refuses_a_repeated_idempotency_key_within_24_hours(track, path):
    exit_workflow("Onboarding")
    body = {"event": "user.signup", "email": "ann@example.com", "data": {"plan": "free"}}
    with time_machine.travel(T0, tick=False) as traveller:
        ok(track.post(body, idempotency_key="order-1"))
        before = counts()
        traveller.move_to(T0 + timedelta(hours=23, minutes=59))
        repeat = {**body, "subscribed": False, "data": {"plan": "pro"}}
        error = assert_error(
            track.post(repeat, idempotency_key="order-1"), 409, "duplicate_request"
        )
        assert "Idempotency-Key" in error["message"]
        assert counts() == before
        contact = Contact.objects.get()
        assert contact.data == {"plan": "free"} and contact.subscribed is True
        ok(track.post(body, idempotency_key="order-2"))
        assert Event.objects.count() == 2


def test_it_accepts_an_idempotency_key_again_after_24_hours(track, path):
    body = {"event": "user.signup", "email": "ann@example.com"}
    with time_machine.travel(T0, tick=False) as traveller:
        ok(track.post(body, idempotency_key="k"))
        traveller.move_to(T0 + timedelta(hours=24, seconds=1))
        ok(track.post(body, idempotency_key="k"))
        assert Event.objects.count() == 2
        traveller.move_to(T0 + timedelta(hours=25))
        assert_error(track.post(body, idempotency_key="k"), 409, "duplicate_request")
        assert Event.objects.count() == 2
    assert IdempotencyKey.objects.count() == 1


def test_it_scopes_idempotency_keys_per_api_key(track, path):
    _, other = apikey_create(name="other")
    body = {"event": "user.signup", "email": "ann@example.com"}
    ok(track.post(body, idempotency_key="same"))
    ok(TrackClient(other).post(body, idempotency_key="same"))
    assert Event.objects.count() == 2
    assert_error(TrackClient(other).post(body, idempotency_key="same"), 409, "duplicate_request")


def test_it_does_not_burn_an_idempotency_key_on_a_rejected_request(track, path):
    assert_error(
        track.post({"event": "", "email": "ann@example.com"}, idempotency_key="k"),
        400,
        "validation_error",
        "event",
    )
    ok(track.post({"event": "a", "email": "ann@example.com"}, idempotency_key="k"))


@pytest.mark.parametrize("value", ["", "x" * 256], ids=["empty", "256_chars"])
def test_it_rejects_an_invalid_idempotency_key_header(track, value):
    response = track.post({"event": "a", "email": "ann@example.com"}, idempotency_key=value)
    assert_error(response, 400, "validation_error", "Idempotency-Key")
    assert counts() == NOTHING
    assert IdempotencyKey.objects.count() == 0


def test_it_accepts_an_idempotency_key_of_255_characters(track, path):
    ok(track.post({"event": "a", "email": "ann@example.com"}, idempotency_key="x" * 255))
    assert IdempotencyKey.objects.get().key == "x" * 255


# --- bad input ----------------------------------------------------------------------------------

VALID = {"event": "user.signup", "email": "ann@example.com"}


def _deep(levels):
    value = 1
    for _ in range(levels):
        value = {"a": value}
    return value


BAD_BODIES = [
    ("missing_email", {"event": "user.signup"}, "email"),
    ("empty_email", {**VALID, "email": "  "}, "email"),
    ("invalid_email", {**VALID, "email": "not-an-email"}, "email"),
    ("email_not_string", {**VALID, "email": ["ann@example.com"]}, "email"),
    ("email_too_long", {**VALID, "email": "a" * 250 + "@example.com"}, "email"),
    ("missing_event", {"email": "ann@example.com"}, "event"),
    ("empty_event", {**VALID, "event": ""}, "event"),
    ("blank_event", {**VALID, "event": "   "}, "event"),
    ("event_not_string", {**VALID, "event": 42}, "event"),
    ("event_256_chars", {**VALID, "event": "e" * 256}, "event"),
    ("subscribed_string", {**VALID, "subscribed": "yes"}, "subscribed"),
    ("subscribed_int", {**VALID, "subscribed": 1}, "subscribed"),
    ("data_list", {**VALID, "data": [1, 2]}, "data"),
    ("data_string", {**VALID, "data": "plan=pro"}, "data"),
    ("data_too_deep", {**VALID, "data": _deep(9)}, "data"),
    ("data_too_deep_lists", {**VALID, "data": {"a": [[[[[[[[1]]]]]]]]}}, "data"),
    ("data_too_large", {**VALID, "data": {"blob": "x" * (64 * 1024)}}, "data"),
    # PostgreSQL refuses NUL and lone surrogates in text and jsonb: a 400, never a 500.
    ("event_with_nul", {**VALID, "event": "user\u0000signup"}, "event"),
    ("event_with_lone_surrogate", {**VALID, "event": "user\ud800"}, "event"),
    ("email_with_nul", {**VALID, "email": "ann\u0000@example.com"}, "email"),
    ("email_with_lone_surrogate", {**VALID, "email": "ann@exa\ud800mple.com"}, "email"),
    ("data_value_with_nul", {**VALID, "data": {"x": ["a\u0000b"]}}, "data"),
    ("data_key_with_nul", {**VALID, "data": {"x\u0000": 1}}, "data"),
    ("data_with_lone_surrogate", {**VALID, "data": {"x": {"y": "\udc00"}}}, "data"),
]


@pytest.mark.parametrize(
    ("body", "field"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
def test_it_rejects_an_invalid_field_and_writes_nothing(track, body, field):
    exit_workflow("Onboarding")
    assert_error(track.post(body), 400, "validation_error", field)
    assert counts() == NOTHING


def test_it_names_every_field_at_fault(track):
    response = track.post({"event": "", "email": "x", "subscribed": "no", "data": []})
    error = assert_error(response, 400, "validation_error")
    assert set(error["fields"]) == {"event", "email", "subscribed", "data"}
    assert counts() == NOTHING


@pytest.mark.parametrize(
    "raw",
    ["{not json", " ", '{"event": "a",', b"\xff\xfe"],
    ids=["garbage", "blank", "truncated", "not_utf8"],
)
def test_it_rejects_invalid_json(track, raw):
    exit_workflow("Onboarding")
    assert_error(track.post(raw=raw), 400, "invalid_json")
    assert counts() == NOTHING


def test_it_rejects_an_empty_json_body(track, secret_key):
    response = track.client.post(
        "/v1/track",
        data="",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret_key}",
        CONTENT_TYPE="application/json",
    )
    assert_error(response, 400, "invalid_json")
    assert counts() == NOTHING


@pytest.mark.parametrize(
    "body", [[VALID], "text", 42, None], ids=["list", "string", "number", "null"]
)
def test_it_rejects_a_body_that_is_not_an_object(track, body):
    assert_error(track.post(body), 400, "invalid_body")
    assert counts() == NOTHING


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_it_rejects_a_wrong_content_type(track, content_type):
    assert_error(
        track.post(raw=json.dumps(VALID), content_type=content_type), 415, "unsupported_media_type"
    )
    assert counts() == NOTHING


def test_it_accepts_json_with_a_charset(track, path):
    ok(track.post(raw=json.dumps(VALID), content_type="application/json; charset=utf-8"))


def test_it_rejects_a_body_over_the_configured_limit_with_413(track):
    body = {**VALID, "data": {"blob": "x" * 2000}}
    with override_settings(TRACK_MAX_BODY_BYTES=1000):
        assert_error(track.post(body), 413, "payload_too_large")
        assert counts() == NOTHING
        ok(track.post({**VALID, "data": {"blob": "x" * 500}}))


# --- keys -----------------------------------------------------------------------------------


def test_it_requires_an_authorization_header(db):
    response = TrackClient(None).post(VALID)
    assert_error(response, 401, "authentication_required")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert counts() == NOTHING


@pytest.mark.parametrize("key", ["sk_" + "x" * 43, "pk_wrong", "x" * 500])
def test_it_refuses_a_wrong_key(track, key):
    response = track.post(VALID, key=key)
    assert_error(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert counts() == NOTHING


@pytest.mark.parametrize("header", ["Token {key}", "Basic {key}", "Bearer", "Bearer   ", "{key}"])
def test_it_refuses_a_malformed_authorization_header(track, secret_key, header):
    response = track.client.post(
        "/v1/track",
        data=json.dumps(VALID),
        content_type="application/json",
        HTTP_AUTHORIZATION=header.format(key=secret_key),
    )
    assert_error(response, 401, "authentication_required")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert counts() == NOTHING


def test_it_refuses_a_revoked_key(db):
    key, raw = apikey_create(name="old")
    apikey_revoke(key=key)
    assert_error(TrackClient(raw).post(VALID), 401, "authentication_failed")
    assert counts() == NOTHING


def test_it_sees_a_revocation_while_the_key_is_still_cached(track, path):
    exit_workflow("Onboarding")
    ok(track.post(VALID))
    before = counts()
    ApiKey.objects.update(revoked_at=timezone.now())  # behind the cache's back
    other = {"event": "user.signup", "email": "bob@example.com", "data": {"a": 1}}
    assert_error(track.post(other), 401, "authentication_failed")
    assert counts() == before
    assert_error(track.post(other, idempotency_key="k"), 401, "authentication_failed")
    assert counts() == before
    assert IdempotencyKey.objects.count() == 0


def test_it_rate_limits_per_key_with_retry_after(db, path):
    limited, raw = apikey_create(name="limited", rate_limit_per_minute=2)
    _, free = apikey_create(name="free")
    client = TrackClient(raw)
    with time_machine.travel(T0 + timedelta(seconds=10), tick=False) as traveller:
        ok(client.post(VALID))
        ok(client.post(VALID))
        response = client.post({**VALID, "email": "bob@example.com"})
        assert_error(response, 429, "rate_limited")
        assert response["Retry-After"] == "50"
        assert Event.objects.count() == 2 and Contact.objects.count() == 1
        ok(TrackClient(free).post(VALID))  # other keys are not limited
        traveller.move_to(T0 + timedelta(seconds=59))
        response = client.post(VALID)
        assert response.status_code == 429 and response["Retry-After"] == "1"
        traveller.move_to(T0 + timedelta(minutes=1))
        ok(client.post(VALID))
        assert Event.objects.count() == 4


def test_it_does_not_rate_limit_by_default(track, path):
    for _ in range(30):
        ok(track.post(VALID))
    assert Event.objects.count() == 30


# --- cost of the hot path -----------------------------------------------------------------------


def test_it_records_a_valid_event_in_one_query(
    transactional_db, track, django_assert_num_queries, pg_only
):
    # transactional_db: autocommit, as the view runs in production. Inside a caller's
    # transaction the statement gets a savepoint, so that a refusal leaves the caller's
    # transaction usable (test_api_hardening.py).
    exit_workflow("First")
    exit_workflow("Second")
    wait_workflow(trigger="user.login")
    ok(track.post(VALID))  # warms the key cache and the last-used write
    with django_assert_num_queries(1):
        ok(track.post({**VALID, "email": "bob@example.com", "data": {"a": 1}}))
    with django_assert_num_queries(1):
        ok(track.post({**VALID, "event": "user.login"}, idempotency_key="k"))
    assert Execution.objects.count() == 5


def test_it_rejects_a_bad_body_without_a_query(track, django_assert_num_queries):
    ok(track.post(VALID))
    before = counts()
    with django_assert_num_queries(0):
        assert_error(track.post({**VALID, "email": "nope"}), 400, "validation_error", "email")
    with django_assert_num_queries(0):
        assert_error(track.post(raw="{"), 400, "invalid_json")
    with django_assert_num_queries(0):
        assert_error(track.post(raw="{}", content_type="text/plain"), 415, "unsupported_media_type")
    assert counts() == before


def test_it_rejects_a_bad_key_with_at_most_one_query(
    track, django_assert_max_num_queries, django_assert_num_queries
):
    with django_assert_max_num_queries(1):
        assert_error(track.post(VALID, key="sk_unknown"), 401, "authentication_failed")
    with django_assert_max_num_queries(1):
        assert_error(track.post(VALID, key="sk_unknown"), 401, "authentication_failed")
    with django_assert_num_queries(0):
        assert_error(TrackClient(None).post(VALID), 401, "authentication_required")
    with django_assert_num_queries(0):
        assert_error(track.post(VALID, key="x" * 500), 401, "authentication_failed")
    assert counts() == NOTHING


# --- The secret-key API --------------------------------------------------------------------------


def test_a_secret_key_reads_a_contact_by_email_or_id(track, secret_key):
    created = track.post({"event": "e", "email": "Ann@Example.com", "data": {"plan": "pro"}})
    contact_id = created.json()["data"]["contact"]
    client = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret_key}"}
    by_email = client.get("/v1/contacts/ANN@example.com", **auth)
    by_id = client.get(f"/v1/contacts/{contact_id}", **auth)
    assert by_email.status_code == by_id.status_code == 200
    assert by_email.json() == by_id.json()
    assert by_email.json()["data"]["data"] == {"plan": "pro"}
    missing = client.get("/v1/contacts/nobody@example.com", **auth)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_a_public_key_gets_403_on_a_secret_endpoint(track, public_key):
    track.post({"event": "e", "email": "ann@example.com"})
    response = Client().get(
        "/v1/contacts/ann@example.com", HTTP_AUTHORIZATION=f"Bearer {public_key}"
    )
    assert response.status_code == 403
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "permission_denied"
    assert "secret key" in body["error"]["message"]


def test_an_unknown_api_path_answers_json_404(secret_key):
    response = Client().get("/v1/nothing-here", HTTP_AUTHORIZATION=f"Bearer {secret_key}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
