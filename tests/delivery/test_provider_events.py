"""Provider tracking webhooks (anymail; Postmark's format here) -> ledger, contact, workflows."""

import base64
import json

import pytest
from django.test import Client

from contacts_app.models import Contact, Event
from contacts_app.services import contact_upsert
from templates_app.models import Message, Template
from tests.conftest import drain
from workflows_app.models import Execution

SECRET = "hooks:s3cret"


@pytest.fixture
def webhook(settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}
    auth = "Basic " + base64.b64encode(SECRET.encode()).decode()

    def post(payload, *, authorization=auth):
        return Client().post(
            "/anymail/postmark/tracking/",
            json.dumps(payload),
            content_type="application/json",
            HTTP_AUTHORIZATION=authorization,
        )

    return post


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


def test_it_refuses_calls_without_the_webhook_secret(webhook, sent):
    response = webhook(
        {"RecordType": "Open", "MessageID": "pm-1", "Recipient": "ann@example.com"},
        authorization="Basic " + base64.b64encode(b"hooks:wrong").decode(),
    )
    assert response.status_code == 400
    assert Message.objects.get().status == Message.SENT
    assert not Event.objects.exists()


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
    assert names == ["email.delivered", "email.delivered", "email.opened"]
    assert Event.objects.filter(name="email.opened").get().data["message_id"] == sent.pk


@pytest.mark.parametrize(
    "payload",
    [
        {
            "RecordType": "Bounce",
            "Type": "HardBounce",
            "TypeCode": 1,
            "MessageID": "pm-1",
            "Email": "ann@example.com",
            "BouncedAt": "2026-11-25T10:00:00Z",
            "Description": "No such user",
        },
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
    assert Event.objects.get().name in ("email.bounced", "email.complained")


def test_a_wait_for_event_step_can_wait_for_email_opened(webhook, sent, track, make_workflow):
    make_workflow(
        [
            {"key": "wait", "type": "wait_for_event", "config": {"event": "email.opened"}},
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
