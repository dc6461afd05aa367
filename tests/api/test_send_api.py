"""POST /v1/send: rows queued in the request, delivered once by the task, per-recipient refusals,
Markdown, headers and attachments on the sent message, idempotency, the sweep of lost tasks,
and every refusal (which records nothing)."""

import base64
import json
import os
import time
from datetime import timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from unittest import mock

import pytest
import time_machine
from django.test import Client
from django.utils import timezone
from django_q.models import OrmQ

from contacts_app.models import Contact, Event, IdempotencyKey
from contacts_app.services import contact_upsert
from templates_app import sending, tasks
from templates_app.models import Message, SendAttachments, Template
from workflows_app.clock import clock_sweep

pytestmark = pytest.mark.django_db


@pytest.fixture
def send(secret_key, django_capture_on_commit_callbacks):
    def post(body=None, *, key=secret_key, raw=None, content_type="application/json", **headers):
        extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
        if key:
            extra["HTTP_AUTHORIZATION"] = f"Bearer {key}"
        data = raw if raw is not None else json.dumps(body)
        with django_capture_on_commit_callbacks(execute=True):
            return Client().post("/v1/send", data=data, content_type=content_type, **extra)

    return post


def queued_task_ids():
    """The message ids of every delivery task waiting in django-q's queue."""
    ids = []
    for task in OrmQ.objects.all():
        payload = task.task
        assert payload["func"] == "templates_app.tasks.deliver_messages"
        ids.extend(payload["args"][0])
    return ids


def message_ids(response):
    return [int(e["email"]) for e in response.json()["data"]["emails"] if e["email"]]


def parsed(outgoing):
    return message_from_bytes(outgoing.message().as_bytes(), policy=default_policy)


DIRECT = {
    "to": [{"name": "Ann", "email": "Ann@Example.com"}, "bob@example.com"],
    "subject": "Hello {{ name | default: 'you' }}",
    "body": "<p>Order {{ order }} for {{ email }}</p>",
    "data": {"order": "A-1"},
}


def test_it_queues_a_row_per_recipient_and_sends_nothing_in_the_request(send, mailoutbox):
    response = send(DIRECT)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["success"] is True and body["data"]["timestamp"]
    emails = body["data"]["emails"]
    assert [e["contact"]["email"] for e in emails] == ["ann@example.com", "bob@example.com"]
    assert all("error" not in e for e in emails)
    ids = message_ids(response)
    rows = Message.objects.filter(pk__in=ids)
    assert {(m.status, m.source, m.email_type) for m in rows} == {
        (Message.QUEUED, Message.API, Template.TRANSACTIONAL)
    }
    ann = Contact.objects.get(email="ann@example.com")
    assert str(ann.pk) == emails[0]["contact"]["id"]
    assert ann.data == {"order": "A-1", "name": "Ann"} and ann.subscribed is False
    assert Contact.objects.get(email="bob@example.com").data == {"order": "A-1"}
    # Rendered for each recipient when queued; nothing sent yet, one task enqueued after commit.
    first = Message.objects.get(pk=ids[0])
    assert first.subject == "Hello Ann"
    assert first.html == "<p>Order A-1 for ann@example.com</p>"
    assert mailoutbox == []
    assert sorted(queued_task_ids()) == sorted(ids)

    assert tasks.deliver_messages(ids) == 2
    assert sorted(m.to[0] for m in mailoutbox) == ["ann@example.com", "bob@example.com"]
    assert set(Message.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"sent"}
    assert Event.objects.filter(name="email.sent").count() == 2
    # A second run of the task (a redelivered or duplicate task) sends nothing.
    assert tasks.deliver_messages(ids) == 0
    assert len(mailoutbox) == 2


def test_a_row_claimed_by_another_task_is_not_sent_again(send, mailoutbox):
    response = send({"to": "ann@example.com", "subject": "Hi", "body": "<p>x</p>"})
    (message_id,) = message_ids(response)
    # Another task holds it (QUEUED -> SENDING already taken): this one does nothing.
    Message.objects.filter(pk=message_id).update(status=Message.SENDING)
    assert sending.message_deliver_queued(message_id=message_id) is None
    assert mailoutbox == []
    Message.objects.filter(pk=message_id).update(status=Message.QUEUED)
    assert sending.message_deliver_queued(message_id=message_id).status == Message.SENT
    assert sending.message_deliver_queued(message_id=message_id) is None
    assert len(mailoutbox) == 1


def test_a_marketing_template_is_refused_for_an_unsubscribed_recipient_only(
    send, template, mailoutbox
):
    contact_upsert(email="ann@example.com", subscribed=True)
    contact_upsert(email="bob@example.com", subscribed=False)
    response = send(
        {
            "to": ["ann@example.com", "bob@example.com", "new@example.com"],
            "template": template.pk,
            "data": {"firstName": "Pat"},
        }
    )
    assert response.status_code == 200, response.content
    ann, bob, new = response.json()["data"]["emails"]
    assert ann["email"] and "error" not in ann
    assert bob["email"] is None and bob["error"]["code"] == "unsubscribed"
    assert "bob@example.com" in bob["error"]["message"]
    # A new contact is unsubscribed unless `subscribed: true` (Plunk's default for /v1/send).
    assert new["email"] is None and new["error"]["code"] == "unsubscribed"
    assert Message.objects.count() == 1
    tasks.deliver_messages(message_ids(response))
    (sent,) = mailoutbox
    assert sent.to == ["ann@example.com"] and sent.subject == "Welcome, Pat"
    assert sent.extra_headers["List-Unsubscribe"].startswith("<http")
    assert sent.tags == ["marketing"]
    assert sent.metadata["message_token"] == Message.objects.get().token


def test_subscribed_true_subscribes_new_contacts_but_leaves_existing_ones(send, template):
    contact_upsert(email="old@example.com", subscribed=False)
    response = send(
        {"to": ["old@example.com", "new@example.com"], "template": template.pk, "subscribed": True}
    )
    old, new = response.json()["data"]["emails"]
    assert old["error"]["code"] == "unsubscribed" and new["email"]
    assert Contact.objects.get(email="new@example.com").subscribed is True
    assert Contact.objects.get(email="old@example.com").subscribed is False


def test_a_transactional_template_goes_to_unsubscribed_contacts(send, mailoutbox):
    receipt = Template.objects.create(
        name="Receipt",
        type=Template.TRANSACTIONAL,
        subject="Receipt {{ event.order }}",
        html="<p>{{ order }}</p>",
        from_email="Shop <shop@example.com>",
        reply_to="help@example.com",
    )
    contact_upsert(email="ann@example.com", subscribed=False)
    response = send({"to": "ann@example.com", "template": str(receipt.pk), "data": {"order": 7}})
    assert response.status_code == 200, response.content
    tasks.deliver_messages(message_ids(response))
    (sent,) = mailoutbox
    assert sent.subject == "Receipt 7" and sent.from_email == "Shop <shop@example.com>"
    assert sent.reply_to == ["help@example.com"] and "List-Unsubscribe" not in sent.extra_headers


def test_markdown_is_rendered_after_liquid(send, mailoutbox):
    response = send(
        {
            "to": "ann@example.com",
            "subject": "Hi",
            "type": "markdown",
            "body": "# Hi {{ who }}\n\nYour order is **{{ order }}**.",
            "data": {"who": "<Ann>", "order": "A-1"},
        }
    )
    assert response.status_code == 200, response.content
    tasks.deliver_messages(message_ids(response))
    (sent,) = mailoutbox
    html = sent.alternatives[0].content
    assert "<h1>Hi &lt;Ann&gt;</h1>" in html
    assert "<strong>A-1</strong>" in html
    assert "Your order is A-1." in sent.body  # the text part, from the HTML


def test_headers_attachments_sender_and_reply_to_reach_the_message(send, mailoutbox):
    pdf = b"%PDF-1.4 not really"
    logo = b"\x89PNG\r\n\x1a\n"
    response = send(
        {
            "to": "ann@example.com",
            "subject": "Files",
            "body": "<p>See <img src='cid:logo1'></p>",
            "from": {"name": "Shop Team", "email": "team@shop.example"},
            "reply": "help@shop.example",
            "headers": {"X-Order": "A-1", "X-Campaign": "spring"},
            "attachments": [
                {
                    "filename": "a.pdf",
                    "content": base64.b64encode(pdf).decode(),
                    "contentType": "application/pdf",
                },
                {
                    "filename": "logo.png",
                    "content": base64.b64encode(logo).decode(),
                    "contentType": "image/png",
                    "disposition": "inline",
                    "contentId": "logo1",
                },
            ],
        }
    )
    assert response.status_code == 200, response.content
    (message_id,) = message_ids(response)
    assert tasks.deliver_messages([message_id]) == 1
    message = parsed(mailoutbox[0])
    assert message["X-Order"] == "A-1" and message["X-Campaign"] == "spring"
    assert message["Reply-To"] == "help@shop.example"
    assert message["From"].addresses[0].display_name == "Shop Team"
    assert message["From"].addresses[0].addr_spec == "team@shop.example"
    parts = {part.get_filename(): part for part in message.iter_attachments()}
    assert parts["a.pdf"].get_content() == pdf
    assert parts["a.pdf"].get_content_disposition() == "attachment"
    assert parts["logo.png"].get_content() == logo
    assert parts["logo.png"].get_content_disposition() == "inline"
    assert parts["logo.png"]["Content-ID"] == "<logo1>"
    # Sent: the content is dropped from the ledger, its name and size stay.
    stored = Message.objects.get(pk=message_id).attachments
    assert [(a["filename"], a["size"], "content" in a) for a in stored] == [
        ("a.pdf", len(pdf), False),
        ("logo.png", len(logo), False),
    ]


def test_the_sender_name_alone_keeps_the_default_address(send, mailoutbox, settings):
    settings.DEFAULT_FROM_EMAIL = "Lifecycle <hello@example.com>"
    response = send({"to": "a@example.com", "subject": "s", "body": "b", "name": "Ann's shop"})
    tasks.deliver_messages(message_ids(response))
    assert mailoutbox[0].from_email == '"Ann\'s shop" <hello@example.com>'


def test_data_follows_the_contact_data_rules_and_reaches_liquid(send):
    contact_upsert(email="ann@example.com", data={"plan": "free", "city": "Oslo"})
    response = send(
        {
            "to": "ann@example.com",
            "subject": "{{ plan }} {{ temp }}",
            "body": "<p>{{ event.temp }}</p>",
            "data": {
                "plan": "pro",
                "city": None,
                "note": "",
                "temp": {"value": 1, "persistent": False},
            },
        }
    )
    assert response.status_code == 200, response.content
    assert Contact.objects.get().data == {"plan": "pro"}
    message = Message.objects.get()
    assert message.subject == "pro 1" and message.html == "<p>1</p>"


def test_an_idempotency_key_repeat_is_a_409_and_records_nothing(send, secret_key):
    first = send(DIRECT, **{"Idempotency-Key": "order-1"})
    assert first.status_code == 200
    keys = sorted(Message.objects.values_list("idempotency_key", flat=True))
    claim = IdempotencyKey.objects.get(key="order-1")
    assert all(k.startswith(f"api-send:{claim.pk}:") for k in keys)
    assert [k.rsplit(":", 1)[1] for k in keys] == ["0", "1"]
    again = send(DIRECT, **{"Idempotency-Key": "order-1"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "duplicate_request"
    assert Message.objects.count() == 2 and len(queued_task_ids()) == 2
    # Another key, or none, is a new send; without one each row has a fresh unique key.
    assert send(DIRECT, **{"Idempotency-Key": "order-2"}).status_code == 200
    assert send(DIRECT).status_code == 200
    assert Message.objects.count() == 6


def test_an_idempotency_key_is_free_again_after_the_window(send, settings):
    assert send(DIRECT, **{"Idempotency-Key": "k"}).status_code == 200
    later = timezone.now() + timedelta(seconds=settings.IDEMPOTENCY_WINDOW_SECONDS + 5)
    with time_machine.travel(later, tick=False):
        assert send(DIRECT, **{"Idempotency-Key": "k"}).status_code == 200
    assert Message.objects.count() == 4  # new ledger keys: derived from the new claim


def test_a_refused_request_does_not_use_up_its_idempotency_key(send):
    bad = send({**DIRECT, "subject": "{% if %}"}, **{"Idempotency-Key": "k1"})
    assert bad.status_code == 400
    assert send(DIRECT, **{"Idempotency-Key": "k1"}).status_code == 200


def test_an_invalid_idempotency_key_is_a_400(send):
    response = send(DIRECT, **{"Idempotency-Key": "x" * 256})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["fields"]
    assert Message.objects.count() == 0


def direct(**extra):
    return {"to": "a@example.com", "subject": "s", "body": "b", **extra}


def _attachment(**overrides):
    return {"filename": "a.txt", "content": "aGk=", "contentType": "text/plain", **overrides}


BAD_BODIES = [
    ({"subject": "s", "body": "b"}, "to"),
    ({"to": [], "subject": "s", "body": "b"}, "to"),
    ({"to": ["a@example.com"] * 101, "subject": "s", "body": "b"}, "to"),
    ({"to": "not-an-email", "subject": "s", "body": "b"}, "to"),
    ({"to": {"name": "Ann"}, "subject": "s", "body": "b"}, "to.email"),
    (direct(to=["a@example.com", "b@example.com", {"email": "x@"}]), "to.2.email"),
    ({"to": [5], "subject": "s", "body": "b"}, "to.0"),
    (direct(to=[{"email": "a@example.com", "name": "A\nB"}]), "to.0.name"),
    ({"to": "a@example.com"}, "template"),
    ({"to": "a@example.com", "template": 999999}, "template"),
    ({"to": "a@example.com", "template": "abc"}, "template"),
    ({"to": "a@example.com", "template": True}, "template"),
    ({"to": "a@example.com", "subject": "s"}, "body"),
    ({"to": "a@example.com", "body": "b"}, "subject"),
    ({"to": "a@example.com", "subject": "a\r\nBcc: x@example.com", "body": "b"}, "subject"),
    ({"to": "a@example.com", "subject": "s" * 999, "body": "b"}, "subject"),
    ({"to": "a@example.com", "subject": "", "body": "b"}, "subject"),
    ({"to": "a@example.com", "subject": "s", "body": ""}, "body"),
    ({"to": "a@example.com", "subject": "s", "body": "x" * 1_000_001}, "body"),
    ({"to": "a@example.com", "subject": "s", "body": "{% for %}"}, "body"),
    ({"to": "a@example.com", "subject": "{{ a | }}", "body": "b"}, "subject"),
    (direct(type="pdf"), "type"),
    (direct(data=[1]), "data"),
    (direct(data={"a": "\u0000"}), "data"),
    (direct(subscribed="yes"), "subscribed"),
    (direct(**{"from": "nope"}), "from"),
    (direct(**{"from": {"email": "x"}}), "from.email"),
    (direct(reply="nope"), "reply"),
    (direct(name="a\nb"), "name"),
    (direct(headers=[]), "headers"),
    (direct(headers={"X-Foo": "a\r\nb"}), "headers.X-Foo"),
    (direct(headers={"X-Foo": 1}), "headers.X-Foo"),
    (direct(headers={"X-Foo": "x" * 999}), "headers.X-Foo"),
    (direct(headers={"From": "x@example.com"}), "headers.From"),
    (direct(headers={"content-type": "text/plain"}), "headers.content-type"),
    (direct(headers={"List-Unsubscribe": "<x>"}), "headers.List-Unsubscribe"),
    (direct(headers={"MIME-Version": "1.0"}), "headers.MIME-Version"),
    (direct(headers={"Bad Name": "x"}), "headers.Bad Name"),
    (direct(attachments={}), "attachments"),
    (direct(attachments=[_attachment()] * 11), "attachments"),
    (direct(attachments=[_attachment(content="%%%")]), "attachments.0.content"),
    (direct(attachments=[_attachment(content="aGk")]), "attachments.0.content"),
    (direct(attachments=[_attachment(), _attachment(content=None)]), "attachments.1.content"),
    (direct(attachments=[_attachment(filename="")]), "attachments.0.filename"),
    (direct(attachments=[_attachment(contentType="pdf")]), "attachments.0.contentType"),
    (direct(attachments=[_attachment(disposition="inline")]), "attachments.0.contentId"),
    (direct(attachments=[_attachment(disposition="x")]), "attachments.0.disposition"),
    (direct(attachments=[_attachment(contentId="<a b>")]), "attachments.0.contentId"),
    (direct(attachments=["x"]), "attachments.0"),
    (direct(attachments=[_attachment(contentType="multipart/mixed")]), "attachments.0.contentType"),
    (direct(name='"' * 200, **{"from": "a" * 60 + "@" + "b" * 60 + ".example"}), "name"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_input_is_a_400_naming_the_field_and_records_nothing(send, body, field):
    response = send(body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["fields"], error["fields"]
    assert field in {e["field"] for e in error["errors"]}
    assert Contact.objects.count() == 0 and Message.objects.count() == 0
    assert OrmQ.objects.count() == 0


def test_a_template_together_with_a_body_is_a_400_naming_body(send, template):
    response = send({"to": "a@example.com", "template": template.pk, "body": "<p>x</p>"})
    assert response.status_code == 400
    assert "body" in response.json()["error"]["fields"]


def test_attachments_over_the_total_limit_are_refused(send, monkeypatch):
    monkeypatch.setattr(sending, "MAX_ATTACHMENT_BYTES", 10)
    files = [_attachment(content=base64.b64encode(b"123456").decode())] * 2
    response = send({"to": "a@example.com", "subject": "s", "body": "b", "attachments": files})
    assert response.status_code == 400
    assert "attachments" in response.json()["error"]["fields"]
    assert Message.objects.count() == 0


def test_a_render_error_at_send_time_is_a_400_and_records_nothing(send):
    response = send(
        {
            "to": ["a@example.com", "b@example.com"],
            "subject": "s",
            "body": "{{ x | divided_by: 0 }}",
        }
    )
    assert response.status_code == 400, response.content
    assert "body" in response.json()["error"]["fields"]
    assert Contact.objects.count() == 0 and Message.objects.count() == 0


def test_a_rendered_subject_too_long_is_a_400(send):
    response = send(
        {"to": "a@example.com", "subject": "{{ x }}", "body": "b", "data": {"x": "y" * 1000}}
    )
    assert response.status_code == 400
    assert "subject" in response.json()["error"]["fields"]
    assert Message.objects.count() == 0


def test_contact_data_past_the_cap_is_a_400_naming_data(send, settings):
    settings.CONTACT_MAX_DATA_BYTES = 50
    response = send({"to": "a@example.com", "subject": "s", "body": "b", "data": {"x": "y" * 60}})
    assert response.status_code == 400
    assert "data" in response.json()["error"]["fields"]
    assert Contact.objects.count() == 0 and Message.objects.count() == 0


def test_a_body_that_is_not_an_object_or_not_json_is_a_400(send):
    assert send([1, 2]).json()["error"]["code"] == "invalid_body"
    response = send(raw="{nope")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    assert send(raw='{"to": NaN}').status_code == 400


def test_a_body_over_the_request_limit_is_a_413(send, monkeypatch):
    monkeypatch.setattr(sending, "MAX_REQUEST_BYTES", 1000)
    response = send({**DIRECT, "body": "x" * 2000})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert Message.objects.count() == 0


def test_a_body_that_is_not_json_is_a_415(send):
    response = send(raw="to=a@example.com", content_type="text/plain")
    assert response.status_code == 415
    assert Message.objects.count() == 0


def test_a_missing_or_wrong_key_is_a_401(send):
    assert send(DIRECT, key=None).status_code == 401
    wrong = send(DIRECT, key="sk_nope")
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "authentication_failed"
    assert Contact.objects.count() == 0 and Message.objects.count() == 0


def test_a_public_key_is_a_403(send, public_key):
    response = send(DIRECT, key=public_key)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert Contact.objects.count() == 0 and Message.objects.count() == 0


def test_only_post_is_allowed(secret_key):
    response = Client().get("/v1/send", HTTP_AUTHORIZATION=f"Bearer {secret_key}")
    assert response.status_code == 405


# --- Lost tasks, dead workers, provider failures ---------------------------------------------


def test_the_sweep_enqueues_rows_whose_task_was_lost_once_per_retry_interval(send, mailoutbox):
    response = send(DIRECT)
    ids = message_ids(response)
    OrmQ.objects.all().delete()  # the task was lost
    assert sending.messages_sweep() == 0  # too recent: its task may still be on its way
    later = timezone.now() + timedelta(seconds=sending.QUEUED_RETRY_SECONDS + 1)
    assert sending.messages_sweep(now=later) == 2
    assert sorted(queued_task_ids()) == sorted(ids)
    assert sending.messages_sweep(now=later) == 0  # touched: not enqueued again at once
    tasks.deliver_messages(queued_task_ids())
    assert len(mailoutbox) == 2
    much_later = later + timedelta(seconds=sending.QUEUED_RETRY_SECONDS + 1)
    assert sending.messages_sweep(now=much_later) == 0  # sent rows are not queued


def test_the_clock_sweep_runs_the_send_sweep(send):
    send(DIRECT)
    OrmQ.objects.all().delete()
    clock_sweep(now=timezone.now() + timedelta(seconds=sending.QUEUED_RETRY_SECONDS + 1))
    assert len(queued_task_ids()) == 2


def test_a_row_left_sending_by_a_dead_worker_becomes_unknown_and_is_not_resent(
    send, mailoutbox, settings
):
    settings.EMAIL_PROVIDER_IDEMPOTENT = False
    (message_id,) = message_ids(send({"to": "a@example.com", "subject": "s", "body": "b"}))
    Message.objects.filter(pk=message_id).update(status=Message.SENDING)  # worker died mid-send
    later = timezone.now() + timedelta(seconds=sending.sending_stuck_seconds() + 1)
    sending.messages_sweep(now=later)
    message = Message.objects.get(pk=message_id)
    assert message.status == Message.UNKNOWN and "not sent again" in message.error
    assert tasks.deliver_messages([message_id]) == 0
    assert mailoutbox == []


def test_a_row_left_sending_is_sent_again_to_an_idempotent_provider(send, mailoutbox, settings):
    settings.EMAIL_PROVIDER_IDEMPOTENT = True
    (message_id,) = message_ids(send({"to": "a@example.com", "subject": "s", "body": "b"}))
    OrmQ.objects.all().delete()
    Message.objects.filter(pk=message_id).update(status=Message.SENDING, attempts=1)
    later = timezone.now() + timedelta(seconds=sending.sending_stuck_seconds() + 1)
    assert sending.messages_sweep(now=later) == 1
    assert tasks.deliver_messages(queued_task_ids()) == 1
    assert Message.objects.get(pk=message_id).status == Message.SENT


def test_a_transient_provider_failure_requeues_the_row_until_its_last_attempt(send, mailoutbox):
    (message_id,) = message_ids(send({"to": "a@example.com", "subject": "s", "body": "b"}))
    broken = mock.Mock()
    broken.open.side_effect = ConnectionRefusedError("no server")
    with mock.patch("templates_app.services.get_connection", return_value=broken):
        for attempt in range(1, Message.API_MAX_ATTEMPTS + 1):
            assert tasks.deliver_messages([message_id]) == 0
            message = Message.objects.get(pk=message_id)
            assert message.attempts == attempt and "no server" in message.error
            expected = Message.QUEUED if attempt < Message.API_MAX_ATTEMPTS else Message.FAILED
            assert message.status == expected
    assert mailoutbox == []


def test_a_recipient_who_unsubscribes_before_delivery_gets_no_marketing_mail(
    send, template, mailoutbox
):
    response = send({"to": "a@example.com", "template": template.pk, "subscribed": True})
    Contact.objects.filter(email="a@example.com").update(subscribed=False)
    assert tasks.deliver_messages(message_ids(response)) == 0
    assert mailoutbox == [] and Message.objects.get().status == Message.FAILED


# --- Large bodies: attachments up to the limit -----------------------------------------------


def _big_send(size: int) -> bytes:
    content = base64.b64encode(b"\0" * size).decode()
    files = [_attachment(filename="big.bin", content=content, contentType="application/zip")]
    return json.dumps(direct(attachments=files)).encode()


def test_attachments_up_to_the_limit_are_accepted_and_sent(send, mailoutbox):
    size = sending.MAX_ATTACHMENT_BYTES - 1000  # a body far past DATA_UPLOAD_MAX_MEMORY_SIZE
    response = send(raw=_big_send(size))
    assert response.status_code == 200, response.content[:500]
    assert tasks.deliver_messages(message_ids(response)) == 1
    (part,) = parsed(mailoutbox[0]).iter_attachments()
    assert len(part.get_content()) == size


@pytest.mark.django_db(transaction=True)
def test_a_large_chunked_send_is_read_whole(secret_key):
    """Through the WSGI application: a chunked body (no Content-Length) past
    DATA_UPLOAD_MAX_MEMORY_SIZE gets /v1/send's own limit (config/wsgi.py)."""
    from config.wsgi import application
    from tests.test_wsgi_chunked import call

    raw = _big_send(4 * 1024 * 1024)
    status, body = call(
        application,
        path="/v1/send",
        body=raw,
        headers={"HTTP_AUTHORIZATION": f"Bearer {secret_key}"},
    )
    assert status == 200, body[:500]
    assert Message.objects.get().attachments[0]["size"] == 4 * 1024 * 1024
    assert len(queued_task_ids()) == 1


def test_an_unknown_api_send_can_be_resent_with_its_headers_and_attachments(
    send, mailoutbox, admin_user
):
    from templates_app.services import message_resend

    response = send(
        direct(headers={"X-Order": "A-1"}, attachments=[_attachment()], reply="r@example.com")
    )
    (message_id,) = message_ids(response)
    Message.objects.filter(pk=message_id).update(status=Message.UNKNOWN)
    new = message_resend(message=Message.objects.get(pk=message_id), user=admin_user)
    assert new.status == Message.SENT and new.source == Message.API and new.template is None
    message = parsed(mailoutbox[0])
    assert message["X-Order"] == "A-1" and message["Reply-To"] == "r@example.com"
    assert [p.get_filename() for p in message.iter_attachments()] == ["a.txt"]


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_sends_with_one_idempotency_key_record_one(secret_key, pg_only):
    import threading

    from django.db import connection

    from contacts_app.models import ApiKey

    key_id = ApiKey.objects.get().pk
    request = sending.SendRequest(
        recipients=[sending.Recipient("a@example.com"), sending.Recipient("b@example.com")],
        subject="s",
        body="b",
    )
    barrier = threading.Barrier(4)
    results = []

    def one():
        try:
            barrier.wait()
            sending.send_create(api_key_id=key_id, request=request, idempotency_key="same")
            results.append("sent")
        except sending.DuplicateSend:
            results.append("duplicate")
        finally:
            connection.close()

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["duplicate"] * 3 + ["sent"]
    assert Message.objects.count() == 2


# --- Attachments: stored once per request ------------------------------------------------------


def _stored_attachment_bytes() -> int:
    """What the ledger holds for attachments: every row's list and every shared content row."""
    rows = sum(len(json.dumps(a)) for a in Message.objects.values_list("attachments", flat=True))
    shared = sum(
        len(json.dumps(i)) for i in SendAttachments.objects.values_list("items", flat=True)
    )
    return rows + shared


def test_attachments_are_stored_once_per_request_and_reach_every_recipient(
    send, mailoutbox, admin_user
):
    from templates_app.services import message_resend

    data = os.urandom(1024 * 1024)
    encoded = base64.b64encode(data).decode()
    recipients = [f"r{n:02}@example.com" for n in range(20)]
    file = _attachment(filename="report.bin", content=encoded, contentType="application/zip")
    response = send({"to": recipients, "subject": "s", "body": "b", "attachments": [file]})
    assert response.status_code == 200, response.content[:500]
    ids = message_ids(response)
    assert len(ids) == 20
    # One copy of the content for the 20 rows (not 20 copies); each row lists name and size.
    (shared,) = SendAttachments.objects.all()
    assert set(Message.objects.values_list("attachment_content", flat=True)) == {shared.pk}
    assert len(encoded) < _stored_attachment_bytes() < 1.1 * len(encoded)
    assert Message.objects.get(pk=ids[0]).attachments == [
        {
            "filename": "report.bin",
            "contentType": "application/zip",
            "disposition": "attachment",
            "contentId": "",
            "size": len(data),
        }
    ]
    # Queued rows still need it: the sweep keeps it.
    assert sending.attachments_prune() == 0

    # 19 delivered, each with the attachment; one failed before it could be sent.
    assert tasks.deliver_messages(ids[:-1]) == 19
    Message.objects.filter(pk=ids[-1]).update(status=Message.FAILED, error="refused")
    assert len(mailoutbox) == 19
    for outgoing in mailoutbox:
        (part,) = parsed(outgoing).iter_attachments()
        assert part.get_filename() == "report.bin" and part.get_content() == data
    sending.messages_sweep()
    assert SendAttachments.objects.filter(pk=shared.pk).exists()  # the failed row may be resent

    new = message_resend(message=Message.objects.get(pk=ids[-1]), user=admin_user)
    assert new.status == Message.SENT and new.attachment_content_id == shared.pk
    (part,) = parsed(mailoutbox[-1]).iter_attachments()
    assert mailoutbox[-1].to == [recipients[-1]] and part.get_content() == data

    # Everything that points at it is sent (the failed row was resent): the sweep deletes it.
    sending.messages_sweep()
    assert SendAttachments.objects.count() == 0
    assert set(Message.objects.values_list("attachment_content", flat=True)) == {None}
    assert Message.objects.get(pk=ids[0]).attachments[0]["size"] == len(data)
    assert _stored_attachment_bytes() < 21 * 200  # names and sizes only


def test_the_sweep_keeps_the_content_of_an_unknown_row_until_it_is_resent(send, admin_user):
    from templates_app.services import message_resend

    response = send(direct(attachments=[_attachment()]))
    (message_id,) = message_ids(response)
    Message.objects.filter(pk=message_id).update(status=Message.UNKNOWN)
    assert sending.attachments_prune() == 0
    message_resend(message=Message.objects.get(pk=message_id), user=admin_user)
    assert sending.attachments_prune() == 1


def test_a_send_refused_for_every_recipient_stores_no_attachment(send, template):
    files = [_attachment()]
    response = send({"to": "a@example.com", "template": template.pk, "attachments": files})
    assert response.json()["data"]["emails"][0]["error"]["code"] == "unsubscribed"
    assert SendAttachments.objects.count() == 0 and Message.objects.count() == 0


def test_a_row_whose_attachment_content_is_gone_fails_instead_of_going_without(send, mailoutbox):
    (message_id,) = message_ids(send(direct(attachments=[_attachment()])))
    SendAttachments.objects.all().delete()
    assert tasks.deliver_messages([message_id]) == 0
    message = Message.objects.get(pk=message_id)
    assert message.status == Message.FAILED and "no longer stored" in message.error
    assert mailoutbox == []


def test_an_email_that_can_not_be_built_fails_its_row_and_is_never_left_sending(
    send, mailoutbox, settings
):
    """A bad value that got past validation (an older row, a bug) raises while the email is
    built: the row is failed with the reason, not left `sending` (then `unknown`: "may have
    been delivered")."""
    settings.EMAIL_PROVIDER_IDEMPOTENT = False
    (message_id,) = message_ids(send(direct()))
    bad = {**_attachment(filename="a\x0bb.txt"), "size": 2, "disposition": "attachment"}
    Message.objects.filter(pk=message_id).update(attachments=[bad])
    assert tasks.deliver_messages([message_id]) == 0
    message = Message.objects.get(pk=message_id)
    assert message.status == Message.FAILED, message.error
    assert "could not be built" in message.error
    later = timezone.now() + timedelta(seconds=sending.sending_stuck_seconds() + 1)
    sending.messages_sweep(now=later)
    assert Message.objects.get(pk=message_id).status == Message.FAILED
    assert mailoutbox == []


def test_the_message_admin_shows_attachment_names_and_sizes_not_their_content(send, admin_client):
    secret = base64.b64encode(b"top secret content here").decode()
    response = send(direct(attachments=[_attachment(filename="plan.txt", content=secret)]))
    (message_id,) = message_ids(response)
    # A row recorded before the content was shared holds it itself: not shown either.
    legacy = Message.objects.create(
        idempotency_key="legacy",
        contact=Contact.objects.get(),
        to_email="a@example.com",
        from_email="x@example.com",
        subject="s",
        source=Message.API,
        attachments=[{**_attachment(filename="old.txt", content=secret), "size": 23}],
    )
    for pk, name in ((message_id, "plan.txt"), (legacy.pk, "old.txt")):
        page = admin_client.get(f"/admin/templates_app/message/{pk}/change/")
        assert page.status_code == 200
        html = page.content.decode()
        assert f"{name} (text/plain, 23" in html  # name, type and size (23 bytes)
        assert secret not in html


# --- Header-breaking characters --------------------------------------------------------------

LINE_BREAKING = ["\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\x01"]


def _breaking(field, c):
    """A body whose `field` holds the character `c`."""
    if field == "subject":
        return direct(subject=f"s{c}x")
    if field == "name":
        return direct(name=f"Shop{c}Bcc")
    if field == "from.name":
        return direct(**{"from": {"name": f"a{c}b", "email": "s@example.com"}})
    if field == "to.1.name":
        return direct(to=["b@example.com", {"email": "a@example.com", "name": f"a{c}"}])
    if field == "headers.X-Note":
        return direct(headers={"X-Note": f"a{c}Bcc: x@example.com"})
    attribute = field.rsplit(".", 1)[1]
    value = {"filename": f"a{c}b.txt", "contentType": f"text/pl{c}ain", "contentId": f"a{c}b"}
    return direct(attachments=[_attachment(**{attribute: value[attribute]})])


@pytest.mark.parametrize("char", LINE_BREAKING)
@pytest.mark.parametrize(
    "field",
    [
        "subject",
        "name",
        "from.name",
        "to.1.name",
        "headers.X-Note",
        "attachments.0.filename",
        "attachments.0.contentType",
        "attachments.0.contentId",
    ],
)
def test_a_value_python_would_break_into_lines_is_a_400(send, field, char):
    response = send(_breaking(field, char))
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert Contact.objects.count() == 0 and Message.objects.count() == 0


@pytest.mark.parametrize("char", ["\x0b", "\x1c"])
def test_an_address_with_a_control_character_is_a_400(send, char):
    for body, field in (
        (direct(to=f'"a{char}b"@example.com'), "to"),
        (direct(reply=f'"a{char}b"@example.com'), "reply"),
        (direct(**{"from": f'"a{char}b"@example.com'}), "from"),
    ):
        response = send(body)
        assert response.status_code == 400, response.content
        assert field in response.json()["error"]["fields"]
    assert Contact.objects.count() == 0 and Message.objects.count() == 0


def test_a_tab_in_a_header_value_is_fine(send, mailoutbox):
    response = send(direct(headers={"X-Note": "a\tb"}, subject="s\tt"))
    assert response.status_code == 200, response.content
    assert tasks.deliver_messages(message_ids(response)) == 1


@pytest.mark.parametrize(
    "name",
    [
        "X-SMTPAPI",
        "x-smtpapi",
        "X-Mailgun-Variables",
        "X-SES-CONFIGURATION-SET",
        "X-PM-Message-Stream",
        "X-MC-Template",
        "X-MSYS-API",
        "X-Postmark-Server-Token",
        "X-Resend-Anything",
    ],
)
def test_provider_control_headers_are_refused(send, name):
    response = send(direct(headers={"X-Order": "1", name: "{}"}))
    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["fields"]) == [f"headers.{name}"]
    assert Message.objects.count() == 0


# --- One render deadline per request, contacts locked in order ----------------------------------

# About 0.2-0.3 s to render: well within a 1 s limit once, far past it ten times.
SLOW_BODY = (
    "{% for i in (1..9000) %}{{ i | append: 'abc' | upcase | downcase | append: 'x' }}{% endfor %}"
)


def test_one_render_deadline_bounds_the_whole_request(send, settings):
    settings.TEMPLATE_RENDER_TIMEOUT_SECONDS = 1
    assert send(direct(body=SLOW_BODY)).status_code == 200  # one render fits in the limit
    Message.objects.all().delete()
    Contact.objects.all().delete()
    recipients = [f"r{n}@example.com" for n in range(10)]
    started = time.monotonic()
    response = send({"to": recipients, "subject": "s", "body": SLOW_BODY})
    assert response.status_code == 400, response.content[:300]
    assert "longer than 1 s" in response.json()["error"]["fields"]["body"]
    assert time.monotonic() - started < 3  # stopped at the deadline, not after ten renders
    assert Contact.objects.count() == 0 and Message.objects.count() == 0


def test_the_render_deadline_of_a_template_send_names_template(send, settings):
    settings.TEMPLATE_RENDER_TIMEOUT_SECONDS = 1
    slow = Template.objects.create(
        name="Slow", type=Template.TRANSACTIONAL, subject="s", html=SLOW_BODY, text="t"
    )
    recipients = [f"r{n}@example.com" for n in range(10)]
    response = send({"to": recipients, "template": slow.pk})
    assert response.status_code == 400, response.content[:300]
    assert "template" in response.json()["error"]["fields"]
    assert Message.objects.count() == 0


def test_contacts_are_locked_in_order_of_email_and_answered_in_the_request_order(send):
    from contacts_app.services import contact_upsert as real_upsert

    with mock.patch("templates_app.sending.contact_upsert", wraps=real_upsert) as upsert:
        response = send(
            {
                "to": [
                    "c@example.com",
                    {"email": "a@example.com", "name": "First"},
                    "b@example.com",
                    {"email": "a@example.com", "name": "Second"},
                ],
                "subject": "Hi {{ name }}",
                "body": "b",
            }
        )
    assert response.status_code == 200, response.content
    assert [c.kwargs["email"] for c in upsert.call_args_list] == [
        "a@example.com",
        "a@example.com",
        "b@example.com",
        "c@example.com",
    ]
    emails = response.json()["data"]["emails"]
    assert [e["contact"]["email"] for e in emails] == [
        "c@example.com",
        "a@example.com",
        "b@example.com",
        "a@example.com",
    ]
    messages = [Message.objects.get(pk=pk) for pk in message_ids(response)]
    assert [m.to_email for m in messages] == [e["contact"]["email"] for e in emails]
    assert [m.idempotency_key.rsplit(":", 1)[1] for m in messages] == ["0", "1", "2", "3"]
    # A recipient listed twice is rendered as after its own upsert, as before.
    assert [m.subject for m in messages] == ["Hi", "Hi First", "Hi", "Hi Second"]
