"""Provider tracking webhooks (anymail; Postmark's and Mailgun's formats) -> ledger, contact,
workflows. Only the configured provider's endpoint exists, and only with its secrets."""

import base64
import hashlib
import hmac
import json

import pytest
from django.core import mail
from django.test import Client

from contacts_app.models import Contact, Event
from contacts_app.services import contact_upsert
from templates_app.checks import check_tracking_webhook_secrets
from templates_app.models import Message, Template
from templates_app.services import message_send
from tests.conftest import drain
from workflows_app.models import Execution

SECRET = "hooks:s3cret"
AUTH = "Basic " + base64.b64encode(SECRET.encode()).decode()

BOUNCE = {
    "RecordType": "Bounce",
    "Type": "HardBounce",
    "TypeCode": 1,
    "MessageID": "pm-1",
    "Email": "ann@example.com",
    "BouncedAt": "2026-11-25T10:00:00Z",
    "Description": "No such user",
}


def post(path, payload, *, authorization=AUTH, **headers):
    extra = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    return Client().post(
        path, json.dumps(payload), content_type="application/json", **extra, **headers
    )


@pytest.fixture
def webhook(settings):
    settings.EMAIL_PROVIDER = "postmark"
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}

    def send(payload, *, authorization=AUTH):
        return post("/anymail/postmark/tracking/", payload, authorization=authorization)

    return send


@pytest.fixture
def sent(db):
    contact, _ = contact_upsert(email="ann@example.com")
    template = Template.objects.create(name="M", subject="Hello", html="<p>x</p>")
    return Message.objects.create(
        idempotency_key="exec-1-run-1",
        contact=contact,
        template=template,
        to_email=contact.email,
        from_email="a@b.c",
        subject="Hello",
        status=Message.SENT,
        provider_message_id="pm-1",
    )


def assert_nothing_changed():
    assert Message.objects.get().status == Message.SENT
    assert Contact.objects.get().subscribed is True
    assert not Event.objects.exists()


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic " + base64.b64encode(b"hooks:wrong").decode(), "Bearer hooks:s3cret"],
)
def test_it_refuses_calls_without_the_right_webhook_secret(webhook, sent, authorization):
    assert webhook(BOUNCE, authorization=authorization).status_code == 400
    assert_nothing_changed()


def test_it_refuses_everything_while_no_secret_is_configured(webhook, sent, settings):
    settings.ANYMAIL = {}
    assert webhook(BOUNCE).status_code == 403
    assert webhook(BOUNCE, authorization=None).status_code == 403
    assert_nothing_changed()


@pytest.mark.parametrize(
    "path",
    [
        "/anymail/mailgun/tracking/",
        "/anymail/sendgrid/tracking/",
        "/anymail/resend/tracking/",
        "/anymail/mailgun/inbound/",
        "/anymail/mandrill/",
        "/anymail/nosuch/tracking/",
    ],
)
def test_only_the_configured_providers_tracking_endpoint_exists(webhook, sent, path):
    assert post(path, BOUNCE).status_code == 404
    assert_nothing_changed()


def test_with_a_non_anymail_provider_no_tracking_endpoint_exists(settings, sent):
    settings.EMAIL_PROVIDER = "smtp"
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}
    assert post("/anymail/postmark/tracking/", BOUNCE).status_code == 404
    assert_nothing_changed()


def test_a_row_id_in_the_metadata_finds_nothing(webhook, sent):
    forged = {**BOUNCE, "MessageID": "not-ours", "Metadata": {"message_id": str(sent.pk)}}
    assert webhook(forged).status_code == 200
    assert_nothing_changed()


def test_an_event_before_the_provider_id_was_recorded_is_matched_by_the_token(webhook, sent):
    Message.objects.update(provider_message_id="")
    event = {**BOUNCE, "MessageID": "pm-new", "Metadata": {"message_token": sent.token}}
    assert webhook(event).status_code == 200
    assert Message.objects.get().status == Message.BOUNCED
    assert Contact.objects.get().subscribed is False


def test_messages_carry_an_unguessable_token_to_the_provider_never_the_row_id(settings, db):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    settings.EMAIL_PROVIDER_IDEMPOTENT = False
    contact, _ = contact_upsert(email="ann@example.com")
    template = Template.objects.create(name="T", type="transactional", subject="s", html="x")
    first = message_send(idempotency_key="k1", template=template, contact=contact).message
    second = message_send(idempotency_key="k2", template=template, contact=contact).message
    assert first.token != second.token and len(first.token) >= 32
    metadata = [m.anymail_test_params["metadata"] for m in mail.outbox]
    assert metadata == [
        {"message_token": first.token, "idempotency_key": "k1"},
        {"message_token": second.token, "idempotency_key": "k2"},
    ]


def test_delivered_then_opened_moves_the_message_forward_and_records_events(webhook, sent):
    assert (
        webhook(
            {
                "RecordType": "Delivery",
                "MessageID": "pm-1",
                "Recipient": "ann@example.com",
                "DeliveredAt": "2026-11-25T10:00:00Z",
            }
        ).status_code
        == 200
    )
    assert Message.objects.get().status == Message.DELIVERED
    webhook(
        {
            "RecordType": "Open",
            "MessageID": "pm-1",
            "Recipient": "ann@example.com",
            "ReceivedAt": "2026-11-25T10:05:00Z",
        }
    )
    # A late delivery report does not move an opened message back.
    webhook(
        {
            "RecordType": "Delivery",
            "MessageID": "pm-1",
            "Recipient": "ann@example.com",
            "DeliveredAt": "2026-11-25T10:00:00Z",
        }
    )
    assert Message.objects.get().status == Message.OPENED
    names = sorted(Event.objects.values_list("name", flat=True))
    assert names == ["email.delivery", "email.delivery", "email.open"]
    opened = Event.objects.filter(name="email.open").get().data
    assert opened["emailId"] == str(sent.pk) and opened["messageId"] == "pm-1"
    assert opened["subject"] == "Hello" and opened["openedAt"].startswith("2026-11-25T10:05")


@pytest.mark.parametrize(
    "payload",
    [
        BOUNCE,
        {
            "RecordType": "SpamComplaint",
            "Type": "SpamComplaint",
            "TypeCode": 512,
            "MessageID": "pm-1",
            "Email": "ann@example.com",
            "BouncedAt": "2026-11-25T10:00:00Z",
        },
    ],
)
def test_a_hard_bounce_or_complaint_unsubscribes_the_contact(webhook, sent, payload):
    assert webhook(payload).status_code == 200
    assert Contact.objects.get().subscribed is False
    assert Message.objects.get().status in (Message.BOUNCED, Message.COMPLAINED)
    names = set(Event.objects.values_list("name", flat=True))
    assert names in (
        {"email.bounce", "contact.unsubscribed"},
        {"email.complaint", "contact.unsubscribed"},
    )


def test_a_wait_for_event_step_can_wait_for_email_open(webhook, sent, track, make_workflow):
    make_workflow(
        [
            {"key": "wait", "type": "wait_for_event", "config": {"event": "email.open"}},
            {"key": "tag", "type": "update_contact", "config": {"set": {"engaged": True}}},
        ],
        [{"from": "trigger", "to": "wait"}, {"from": "wait", "branch": "event", "to": "tag"}],
        trigger="user.signup",
    )
    track.post({"event": "user.signup", "email": "ann@example.com"})
    drain()
    assert Execution.objects.get().status == Execution.WAITING
    webhook(
        {
            "RecordType": "Open",
            "MessageID": "pm-1",
            "Recipient": "ann@example.com",
            "ReceivedAt": "2026-11-26T10:05:00Z",
        }
    )
    drain()
    execution = Execution.objects.get()
    assert execution.status == Execution.COMPLETED
    assert Contact.objects.get().data["engaged"] is True


# --- A provider that signs its webhooks (Mailgun) ---------------------------------------------

SIGNING_KEY = "mailgun-signing-key"


@pytest.fixture
def mailgun(settings, sent):
    # Mailgun's send API answers "<id>"; its events carry the id without the brackets.
    Message.objects.update(provider_message_id="<pm-1@mg.example>")
    settings.EMAIL_PROVIDER = "mailgun"
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET, "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}

    def send(*, key=SIGNING_KEY, authorization=AUTH):
        timestamp, token = "1764064800", "a" * 50
        signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256)
        payload = {
            "signature": {
                "timestamp": timestamp,
                "token": token,
                "signature": signature.hexdigest(),
            },
            "event-data": {
                "event": "failed",
                "severity": "permanent",
                "timestamp": 1764064800.0,
                "id": "evt-1",
                "recipient": "ann@example.com",
                "message": {"headers": {"message-id": "pm-1@mg.example"}},
                "delivery-status": {"description": "No such user", "code": 550},
            },
        }
        return post("/anymail/mailgun/tracking/", payload, authorization=authorization)

    return send


def test_a_signed_provider_checks_the_signature_and_basic_auth_when_set(mailgun, sent):
    assert mailgun(key="forged").status_code == 400
    assert mailgun(authorization=None).status_code == 400  # basic auth is set, so it counts
    assert_nothing_changed()
    assert mailgun().status_code == 200
    assert Message.objects.get().status == Message.BOUNCED
    assert Contact.objects.get().subscribed is False


def test_a_signed_provider_needs_basic_auth_too(mailgun, sent, settings):
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}
    assert mailgun(authorization=None).status_code == 403  # no basic auth secret configured
    assert_nothing_changed()


def test_a_signed_provider_without_its_signing_key_refuses_everything(mailgun, sent, settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}
    assert mailgun().status_code == 403
    assert_nothing_changed()


# --- The system check ---------------------------------------------------------------------------


def test_the_system_check_warns_while_tracking_has_no_secret(settings):
    settings.EMAIL_PROVIDER = "postmark"
    settings.ANYMAIL = {}
    [warning] = check_tracking_webhook_secrets(None)
    assert warning.id == "templates_app.W001"
    assert "ANYMAIL_WEBHOOK_SECRET is not set" in warning.msg

    settings.EMAIL_PROVIDER = "mailgun"
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}
    [warning] = check_tracking_webhook_secrets(None)
    assert "ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY is not set" in warning.msg

    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": "k"}
    [warning] = check_tracking_webhook_secrets(None)
    assert "ANYMAIL_WEBHOOK_SECRET is not set" in warning.msg
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET, "MAILGUN_WEBHOOK_SIGNING_KEY": "k"}
    assert check_tracking_webhook_secrets(None) == []
    settings.EMAIL_PROVIDER = "smtp"
    settings.ANYMAIL = {}
    assert check_tracking_webhook_secrets(None) == []
