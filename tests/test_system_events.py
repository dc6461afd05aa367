"""System events with Plunk's names and data (issue 9, item 5): `contact.subscribed` /
`contact.unsubscribed` on every real change of subscription, by every path; the provider
events renamed (`email.delivery`, `email.open`, `email.click`, `email.bounce`,
`email.complaint`), `email.sent`, `email.received`; all recorded like tracked events (they start
and resume workflows); /v1/track refuses the reserved names; the migration renames what existing
workflows refer to."""

from __future__ import annotations

import base64
import functools
import importlib
import json
from urllib.parse import urlsplit

import pytest
from django.apps import apps as global_apps
from django.contrib.auth.models import User
from django.core import mail
from django.db import IntegrityError, connection, transaction
from django.test import Client

from contacts_app.models import ApiKey, Contact, Event
from contacts_app.services import (
    apikey_create,
    contact_set_subscribed,
    contact_update_data,
    contact_upsert,
    manage_url,
    unsubscribe_url,
)
from templates_app.models import Message, Template
from templates_app.services import message_send
from tests.conftest import TrackClient, chain, drain
from tests.test_track_concurrency import fire
from workflows_app import api as track_api
from workflows_app import engine
from workflows_app import track as track_mod
from workflows_app.models import Execution, Step, Workflow
from workflows_app.services import workflow_create

ANN = "ann@example.com"
SECRET = "hooks:s3cret"
AUTH = "Basic " + base64.b64encode(SECRET.encode()).decode()
EXIT = {"key": "done", "type": "exit", "config": {"reason": "seen"}}


def exit_workflow(trigger: str, name: str | None = None) -> Workflow:
    steps, transitions = chain(dict(EXIT))
    return workflow_create(
        name=name or f"On {trigger}",
        trigger_event=trigger,
        enabled=True,
        allow_reentry=True,
        graph={"steps": steps, "transitions": transitions},
    )


def waiting_workflow(event: str) -> Workflow:
    """user.signup -> wait for `event` (3 days) -[event]-> exit."""
    return workflow_create(
        name=f"Waits for {event}",
        trigger_event="user.signup",
        enabled=True,
        graph={
            "steps": [
                {
                    "key": "wait",
                    "type": "wait_for_event",
                    "config": {"event": event, "timeout": {"amount": 3, "unit": "days"}},
                },
                dict(EXIT),
            ],
            "transitions": [
                {"from": "trigger", "to": "wait"},
                {"from": "wait", "branch": "event", "to": "done"},
            ],
        },
    )


def names(contact_email: str = ANN) -> list[str]:
    return list(
        Event.objects.filter(contact__email=contact_email)
        .order_by("created_at", "name")
        .values_list("name", flat=True)
    )


def contact_events(contact_email: str = ANN) -> list[str]:
    return [n for n in names(contact_email) if n.startswith("contact.")]


def post_json(path, payload, *, authorization=AUTH):
    extra = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    return Client().post(path, json.dumps(payload), content_type="application/json", **extra)


@pytest.fixture
def postmark(settings):
    settings.EMAIL_PROVIDER = "postmark"
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}


@pytest.fixture
def admin(db):
    user = User.objects.create_superuser("root", "root@example.com", "pw-not-used-here")
    client = Client()
    client.force_login(user)
    return client


# --- contact.subscribed / contact.unsubscribed, path by path ------------------------------------


def _track(fast: bool, request, contact, subscribed: bool):
    request.getfixturevalue("monkeypatch").setattr(
        track_api, "track", functools.partial(track_mod.track, fast=fast)
    )
    client = request.getfixturevalue("track")
    response = client.post({"event": "user.ping", "email": contact.email, "subscribed": subscribed})
    assert response.status_code == 200, response.content


def _unsubscribe_page(request, contact, subscribed: bool):
    data = {"action": "resubscribe"} if subscribed else {}
    response = Client().post(urlsplit(unsubscribe_url(contact)).path, data)
    assert response.status_code == 200


def _manage_page(request, contact, subscribed: bool):
    action = "subscribe" if subscribed else "unsubscribe"
    response = Client().post(urlsplit(manage_url(contact)).path, {"action": action})
    assert response.status_code == 200


def _update_contact_step(request, contact, subscribed: bool):
    name = f"set subscribed={subscribed}"
    if not Workflow.objects.filter(name=name).exists():
        step = {"key": "sub", "type": "update_contact", "config": {"subscribed": subscribed}}
        steps, transitions = chain(step)
        workflow_create(
            name=name,
            trigger_event=f"user.sub.{subscribed}",
            enabled=True,
            allow_reentry=True,
            graph={"steps": steps, "transitions": transitions},
        )
    client = request.getfixturevalue("track")
    assert (
        client.post({"event": f"user.sub.{subscribed}", "email": contact.email}).status_code == 200
    )
    drain()


def _update_data_orm(request, contact, subscribed: bool):
    # contact_update_data's ORM form (the one SQLite uses); the step above uses PostgreSQL's.
    request.getfixturevalue("monkeypatch").setattr(connection, "vendor", "sqlite")
    contact_update_data(contact=contact, subscribed=subscribed)
    request.getfixturevalue("monkeypatch").undo()


def _upsert(request, contact, subscribed: bool):
    contact_upsert(email=contact.email, subscribed=subscribed)


def _admin_form(request, contact, subscribed: bool):
    admin = request.getfixturevalue("admin")
    form = {"email": contact.email, "data": "{}", "events-TOTAL_FORMS": 0}
    form["events-INITIAL_FORMS"] = 0
    if subscribed:
        form["subscribed"] = "on"
    response = admin.post(f"/admin/contacts_app/contact/{contact.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]


def _bounce(request, contact, subscribed: bool):
    assert not subscribed  # a provider only ever unsubscribes
    request.getfixturevalue("postmark")
    if not Message.objects.filter(provider_message_id="pm-1").exists():
        template = Template.objects.create(name="M", subject="Hello", html="<p>x</p>")
        Message.objects.create(
            idempotency_key="k-1",
            contact=contact,
            template=template,
            to_email=contact.email,
            from_email="Team <team@example.com>",
            subject="Hello",
            status=Message.SENT,
            provider_message_id="pm-1",
        )
    bounce = {
        "RecordType": "Bounce",
        "Type": "HardBounce",
        "TypeCode": 1,
        "MessageID": "pm-1",
        "Email": contact.email,
        "BouncedAt": "2026-11-25T10:00:00Z",
        "Description": "No such user",
    }
    assert post_json("/anymail/postmark/tracking/", bounce).status_code == 200


UNSUBSCRIBING = {
    "track_one_statement": functools.partial(_track, True),
    "track_orm": functools.partial(_track, False),
    "unsubscribe_page": _unsubscribe_page,
    "manage_page": _manage_page,
    "update_contact_step": _update_contact_step,
    "update_data_orm": _update_data_orm,
    "contact_upsert": _upsert,
    "admin_form": _admin_form,
    "bounce": _bounce,
}
RESUBSCRIBING = {k: v for k, v in UNSUBSCRIBING.items() if k != "bounce"}


@pytest.mark.parametrize("via", UNSUBSCRIBING)
def test_an_unsubscribe_starts_and_resumes_workflows_once_by_every_path(request, track, via):
    on_unsubscribe = exit_workflow("contact.unsubscribed")
    waits = waiting_workflow("contact.unsubscribed")
    assert track.post({"event": "user.signup", "email": ANN}).status_code == 200
    drain()
    waiting = Execution.objects.get(workflow=waits)
    assert waiting.status == Execution.WAITING
    contact = Contact.objects.get()

    UNSUBSCRIBING[via](request, contact, False)
    assert Contact.objects.get().subscribed is False
    assert contact_events() == ["contact.unsubscribed"]
    event = Event.objects.get(name="contact.unsubscribed")
    assert event.data == {}
    started = Execution.objects.get(workflow=on_unsubscribe)
    assert started.trigger_id == event.pk
    drain()
    waiting.refresh_from_db()
    assert waiting.status == Execution.EXITED
    assert waiting.step_runs.get(step_key="wait").branch == "event"  # resumed, no timeout

    # Nothing changes the second time: no event, no run.
    UNSUBSCRIBING[via](request, contact, False)
    assert contact_events() == ["contact.unsubscribed"]
    assert Execution.objects.filter(workflow=on_unsubscribe).count() == 1


@pytest.mark.parametrize("via", RESUBSCRIBING)
def test_a_resubscribe_records_contact_subscribed_once_by_every_path(request, track, via):
    on_subscribe = exit_workflow("contact.subscribed")
    contact, _ = contact_upsert(email=ANN, subscribed=False)
    assert contact_events() == []  # a new contact's subscription is no change

    RESUBSCRIBING[via](request, contact, True)
    assert Contact.objects.get().subscribed is True
    assert contact_events() == ["contact.subscribed"]
    assert Execution.objects.filter(workflow=on_subscribe).count() == 1

    RESUBSCRIBING[via](request, contact, True)
    assert contact_events() == ["contact.subscribed"]
    assert Execution.objects.filter(workflow=on_subscribe).count() == 1


@pytest.mark.parametrize("fast", [True, False], ids=["one_statement", "orm"])
def test_track_records_no_event_for_a_new_contact_or_an_unchanged_one(track, monkeypatch, fast):
    monkeypatch.setattr(track_api, "track", functools.partial(track_mod.track, fast=fast))
    exit_workflow("contact.unsubscribed")
    exit_workflow("contact.subscribed")
    track.post({"event": "a", "email": ANN, "subscribed": False})
    track.post({"event": "a", "email": ANN, "subscribed": False})
    track.post({"event": "a", "email": ANN})
    track.post({"event": "a", "email": "bob@example.com", "subscribed": True})
    track.post({"event": "a", "email": "bob@example.com", "subscribed": True})
    assert not Event.objects.filter(name__startswith="contact.").exists()
    assert not Execution.objects.exists()


@pytest.mark.parametrize("fast", [True, False], ids=["one_statement", "orm"])
def test_a_public_keys_ignored_resubscribe_records_nothing(track, monkeypatch, fast):
    monkeypatch.setattr(track_api, "track", functools.partial(track_mod.track, fast=fast))
    _, raw = apikey_create(name="web", kind=ApiKey.PUBLIC)
    public = TrackClient(raw)
    track.post({"event": "a", "email": ANN})
    track.post({"event": "a", "email": ANN, "subscribed": False})
    assert public.post({"event": "a", "email": ANN, "subscribed": True}).status_code == 200
    assert Contact.objects.get().subscribed is False
    assert contact_events() == ["contact.unsubscribed"]


@pytest.mark.parametrize("fast", [True, False], ids=["one_statement", "orm"])
def test_track_reports_the_flips_starts_and_resumes_and_stores_the_tracked_event(
    track, key_info, fast
):
    exit_workflow("contact.unsubscribed")
    exit_workflow("user.ping")
    waiting_workflow("contact.unsubscribed")
    track.post({"event": "user.signup", "email": ANN})
    drain()
    result = track_mod.track(
        key=key_info,
        payload=track_mod.track_parse({"event": "user.ping", "email": ANN, "subscribed": False}),
        fast=fast,
    )
    # The counts are the tracked event's; the flip's start and resume happened too.
    assert (result.started, result.resumed) == (1, 0)
    assert Event.objects.get(pk=result.event_id).name == "user.ping"
    flip = Event.objects.get(name="contact.unsubscribed")
    assert Execution.objects.filter(trigger=flip).count() == 1
    assert Execution.objects.get(workflow__name="Waits for contact.unsubscribed").status == (
        Execution.RUNNING
    )
    assert sorted(names()) == ["contact.unsubscribed", "user.ping", "user.signup"]


@pytest.fixture
def key_info(secret_key):
    from contacts_app.services import apikey_lookup

    return apikey_lookup(secret_key)[1]


def test_contact_set_subscribed_says_whether_it_changed_anything(db):
    contact, _ = contact_upsert(email=ANN)
    assert contact_set_subscribed(contact=contact, subscribed=True) is False
    assert contact_set_subscribed(contact=contact, subscribed=False) is True
    assert contact_set_subscribed(contact=contact, subscribed=False) is False
    assert contact_events() == ["contact.unsubscribed"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fast", [True, False], ids=["one_statement", "orm"])
def test_concurrent_first_calls_record_exactly_the_flip_that_happened(
    secret_key, monkeypatch, fast
):
    """Two first calls for a new address race, one subscribing and one unsubscribing: the one
    that comes second changes the subscription of a contact it could not see when it began.
    Exactly one flip is recorded, towards the state the contact is left in."""
    monkeypatch.setattr(track_api, "track", functools.partial(track_mod.track, fast=fast))
    for round_ in range(6):
        email = f"new{round_}@example.com"
        bodies = [
            {"event": "a", "email": email, "subscribed": True},
            {"event": "a", "email": email, "subscribed": False},
        ]
        results = fire(secret_key, bodies)
        assert sorted(status for status, _ in results) == [200, 200], results
        contact = Contact.objects.get(email=email)
        expected = "contact.subscribed" if contact.subscribed else "contact.unsubscribed"
        assert contact_events(email) == [expected]


# --- Provider events with Plunk's names ----------------------------------------------------------


@pytest.fixture
def sent(db):
    contact, _ = contact_upsert(email=ANN)
    template = Template.objects.create(name="M", subject="Hello", html="<p>x</p>")
    return Message.objects.create(
        idempotency_key="exec-1-run-1",
        contact=contact,
        template=template,
        to_email=contact.email,
        from_email="Team <team@example.com>",
        subject="Hello",
        status=Message.SENT,
        provider_message_id="pm-1",
    )


PROVIDER_EVENTS = {
    "email.delivery": {"RecordType": "Delivery", "DeliveredAt": "2026-11-25T10:00:00Z"},
    "email.open": {"RecordType": "Open", "ReceivedAt": "2026-11-25T10:05:00Z"},
    "email.click": {
        "RecordType": "Click",
        "ReceivedAt": "2026-11-25T10:06:00Z",
        "OriginalLink": "https://example.com/pricing",
    },
    "email.bounce": {
        "RecordType": "Bounce",
        "Type": "HardBounce",
        "TypeCode": 1,
        "BouncedAt": "2026-11-25T10:00:00Z",
        "Description": "No such user",
    },
    "email.complaint": {
        "RecordType": "SpamComplaint",
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "BouncedAt": "2026-11-25T10:00:00Z",
    },
}
AT_FIELD = {
    "email.delivery": "deliveredAt",
    "email.open": "openedAt",
    "email.click": "clickedAt",
    "email.bounce": "bouncedAt",
    "email.complaint": "complainedAt",
}


@pytest.mark.parametrize("name", PROVIDER_EVENTS)
def test_provider_events_have_plunks_names_and_data_and_start_workflows(postmark, sent, name):
    workflow = exit_workflow(name)
    payload = {
        **PROVIDER_EVENTS[name],
        "MessageID": "pm-1",
        "Recipient": ANN,
        "Email": ANN,
    }
    assert post_json("/anymail/postmark/tracking/", payload).status_code == 200
    event = Event.objects.get(name=name)
    assert event.data["subject"] == "Hello"
    assert event.data["messageId"] == "pm-1"
    assert event.data["emailId"] == str(sent.pk)
    assert event.data["templateId"] == str(sent.template_id)
    assert event.data["from"] == "team@example.com" and event.data["fromName"] == "Team"
    assert event.data["sourceType"] == "WORKFLOW"
    assert event.data[AT_FIELD[name]].startswith("2026-11-25T10:0")
    if name == "email.click":
        assert event.data["link"] == "https://example.com/pricing"
    execution = Execution.objects.get(workflow=workflow)
    assert execution.trigger_id == event.pk and execution.context["subject"] == "Hello"
    assert not Event.objects.filter(name__in=["email.opened", "email.delivered"]).exists()


def provider_event(name, message_id="pm-1"):
    payload = {**PROVIDER_EVENTS[name], "MessageID": message_id, "Recipient": ANN, "Email": ANN}
    assert post_json("/anymail/postmark/tracking/", payload).status_code == 200
    return Event.objects.filter(name=name).latest("created_at")


def test_opens_and_clicks_are_counted_per_message_as_plunk_does(postmark, sent):
    other = Message.objects.create(
        idempotency_key="exec-1-run-2",
        contact=sent.contact,
        template=sent.template,
        to_email=sent.to_email,
        from_email=sent.from_email,
        subject="Other",
        status=Message.SENT,
        provider_message_id="pm-2",
    )
    counted = [
        (
            name,
            e.data.get("opens", e.data.get("clicks")),
            e.data.get("isFirstOpen"),
            e.data.get("isFirstClick"),
        )
        for name, e in (
            ("open", provider_event("email.open")),
            ("open", provider_event("email.open")),
            ("click", provider_event("email.click")),  # clicks count apart from opens
            ("other open", provider_event("email.open", "pm-2")),  # per message
            ("open", provider_event("email.open")),
            ("click", provider_event("email.click")),
        )
    ]
    assert counted == [
        ("open", 1, True, None),
        ("open", 2, False, None),
        ("click", 1, None, True),
        ("other open", 1, True, None),
        ("open", 3, False, None),
        ("click", 2, None, False),
    ]
    assert Event.objects.filter(name="email.open", data__emailId=str(other.pk)).count() == 1
    # Deliveries carry no count.
    assert "opens" not in provider_event("email.delivery").data


def test_an_api_sends_events_say_it_is_transactional(postmark, sent):
    Message.objects.filter(pk=sent.pk).update(source=Message.API)
    assert provider_event("email.open").data["sourceType"] == "TRANSACTIONAL"


def test_email_sent_is_recorded_when_the_provider_accepts_a_message(settings, db):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    workflow = exit_workflow("email.sent")
    contact, _ = contact_upsert(email=ANN)
    template = Template.objects.create(
        name="T", type=Template.TRANSACTIONAL, subject="Hi {{ email }}", html="x"
    )
    result = message_send(idempotency_key="k1", template=template, contact=contact)
    assert len(mail.outbox) == 1
    event = Event.objects.get(name="email.sent")
    message = result.message
    assert event.data == {
        "subject": f"Hi {ANN}",
        "from": "hello@example.com",
        "fromName": "Lifecycle",
        "messageId": message.provider_message_id,
        "emailId": str(message.pk),
        "templateId": str(template.pk),
        "sourceType": "WORKFLOW",
        "sentAt": message.sent_at.isoformat(),
    }
    assert Execution.objects.get(workflow=workflow).trigger_id == event.pk
    # Sent again with the same key: the ledger sends nothing, so nothing is recorded.
    message_send(idempotency_key="k1", template=template, contact=contact)
    assert Event.objects.filter(name="email.sent").count() == 1


def test_email_sent_is_not_recorded_for_a_skipped_or_failed_send(settings, db):
    from templates_app.services import SendSkipped

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    contact, _ = contact_upsert(email=ANN, subscribed=False)
    template = Template.objects.create(name="T", type=Template.MARKETING, subject="s", html="x")
    with pytest.raises(SendSkipped):
        message_send(idempotency_key="k1", template=template, contact=contact)
    assert not Event.objects.filter(name="email.sent").exists()


# --- email.received ------------------------------------------------------------------------------

INBOUND = {
    "FromFull": {"Email": "Ann@Example.com", "Name": "Ann"},
    "ToFull": [{"Email": "support@ours.example", "Name": ""}],
    "CcFull": [],
    "BccFull": [],
    "OriginalRecipient": "support@ours.example",
    "Subject": "Help, please",
    "TextBody": "My order did not arrive.",
    "HtmlBody": "<p>My order did not arrive.</p>",
    "Headers": [{"Name": "Message-ID", "Value": "<m-1@example.com>"}],
    "Attachments": [],
}


def test_inbound_mail_from_a_contact_records_email_received_and_starts_workflows(postmark, db):
    workflow = exit_workflow("email.received")
    contact, _ = contact_upsert(email=ANN)
    assert post_json("/anymail/postmark/inbound/", INBOUND).status_code == 200
    event = Event.objects.get(name="email.received")
    assert event.contact_id == contact.pk
    assert event.data["from"] == ANN
    assert event.data["to"] == "support@ours.example"
    assert event.data["subject"] == "Help, please"
    assert event.data["body"] == "My order did not arrive."
    assert Execution.objects.get(workflow=workflow).trigger_id == event.pk


def test_inbound_mail_from_an_unknown_sender_records_nothing_and_creates_no_contact(postmark, db):
    exit_workflow("email.received")
    assert post_json("/anymail/postmark/inbound/", INBOUND).status_code == 200
    assert not Contact.objects.exists()
    assert not Event.objects.exists() and not Execution.objects.exists()


@pytest.mark.parametrize("authorization", [None, "Basic " + base64.b64encode(b"h:x").decode()])
def test_the_inbound_webhook_is_authenticated_like_tracking(postmark, db, authorization):
    contact_upsert(email=ANN)
    assert (
        post_json("/anymail/postmark/inbound/", INBOUND, authorization=authorization).status_code
        == 400
    )
    assert not Event.objects.exists()


def test_the_inbound_webhook_refuses_everything_without_a_secret(postmark, settings, db):
    settings.ANYMAIL = {}
    contact_upsert(email=ANN)
    assert post_json("/anymail/postmark/inbound/", INBOUND).status_code == 403
    assert not Event.objects.exists()


def test_only_the_configured_providers_inbound_endpoint_exists(postmark, db):
    assert post_json("/anymail/mailgun/inbound/", INBOUND).status_code == 404


# --- /v1/track refuses the reserved names --------------------------------------------------------

RESERVED = [
    "email.sent",
    "email.open",
    "email.received",
    "email.anything.else",
    "email.",
    "contact.subscribed",
    "contact.unsubscribed",
    " contact.unsubscribed ",
    "segment.vip.entry",
    "segment.vip.exit",
    "segment.a.b.exit",
]
ALLOWED = ["contact.updated", "segment.vip", "segment.vip.entered", "emails.sent", "user.email.x"]


@pytest.mark.parametrize("fast", [True, False], ids=["one_statement", "orm"])
@pytest.mark.parametrize("name", RESERVED)
def test_track_refuses_reserved_names_and_stores_nothing(track, monkeypatch, fast, name):
    monkeypatch.setattr(track_api, "track", functools.partial(track_mod.track, fast=fast))
    exit_workflow("contact.unsubscribed")
    response = track.post({"event": name, "email": ANN, "subscribed": False})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert "reserved_event" in error["fields"]["event"]
    assert not Contact.objects.exists() and not Event.objects.exists()
    assert not Execution.objects.exists()


@pytest.mark.parametrize("name", ALLOWED)
def test_track_accepts_names_that_only_look_alike(track, name):
    assert track.post({"event": name, "email": ANN}).status_code == 200


# --- The migration ------------------------------------------------------------------------------


def test_the_migration_renames_triggers_waits_and_waiting_runs_even_while_runs_are_active(
    postmark, sent, track
):
    migration = importlib.import_module("workflows_app.migrations.0005_plunk_event_names")
    triggered = exit_workflow("email.opened", name="On open")
    waits = waiting_workflow("email.clicked")
    # The rows as they were before the rename: the services now map old names to new ones, so
    # the old names are written behind their back, before any run holds the graph.
    Workflow.objects.filter(pk=triggered.pk).update(trigger_event="email.opened")
    wait_step = Step.objects.get(workflow=waits, key="wait")
    Step.objects.filter(pk=wait_step.pk).update(
        config={**wait_step.config, "event": "email.clicked"}
    )
    engine._graphs.clear()
    assert track.post({"event": "user.signup", "email": ANN}).status_code == 200
    drain()
    run = Execution.objects.get(workflow=waits)
    # (The engine reads the old name as the new one already; a run waiting from before the
    # upgrade still holds the old one.)
    Execution.objects.filter(pk=run.pk).update(waiting_for="email.clicked")
    run.refresh_from_db()
    assert (run.status, run.waiting_for) == (Execution.WAITING, "email.clicked")
    version = Workflow.objects.get(pk=waits.pk).graph_version
    step = Step.objects.get(workflow=waits, key="wait")
    with pytest.raises(IntegrityError), transaction.atomic():  # the lock holds
        Step.objects.filter(pk=step.pk).update(config={**step.config, "event": "x"})

    with connection.cursor() as cursor:  # as in `migrate`: no foreign-key checks pending
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with connection.schema_editor() as editor:
        migration.forwards(global_apps, editor)

    assert Workflow.objects.get(pk=triggered.pk).trigger_event == "email.open"
    assert Step.objects.get(pk=step.pk).config["event"] == "email.click"
    run.refresh_from_db()
    assert (run.status, run.waiting_for) == (Execution.WAITING, "email.click")
    assert Workflow.objects.get(pk=waits.pk).graph_version > version
    with pytest.raises(IntegrityError), transaction.atomic():  # the lock is back
        Step.objects.filter(pk=step.pk).update(config={**step.config, "event": "y"})

    # The renamed workflows work on the events as they are now recorded.
    click = {**PROVIDER_EVENTS["email.click"], "MessageID": "pm-1", "Recipient": ANN}
    assert post_json("/anymail/postmark/tracking/", click).status_code == 200
    run.refresh_from_db()
    assert run.status == Execution.RUNNING and run.pending_branch == "event"
    opened = {**PROVIDER_EVENTS["email.open"], "MessageID": "pm-1", "Recipient": ANN}
    assert post_json("/anymail/postmark/tracking/", opened).status_code == 200
    assert Execution.objects.filter(workflow=triggered).count() == 1

    with connection.schema_editor() as editor:
        migration.backwards(global_apps, editor)
    assert Workflow.objects.get(pk=triggered.pk).trigger_event == "email.opened"
    assert Step.objects.get(pk=step.pk).config["event"] == "email.clicked"


def test_the_flips_starts_and_resumes_are_the_engines_renamed_whole():
    sql = track_mod._FLIP_START_AND_RESUME
    assert "flip_started AS (" in sql and "flip_resumed AS (" in sql
    import re

    # Nothing of the tracked event's is left: its CTE, its parameters, its member names.
    assert not re.search(r"\be\b|%\(event|\bstarted AS|\bresumed AS", sql)
