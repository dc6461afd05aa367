"""The send ledger: at most one email per step visit, whatever fails."""

import json

import pytest
from django.core import mail
from django.test import override_settings

from contacts_app.services import contact_update_data, contact_upsert
from templates_app.models import Message, Template
from templates_app.services import (
    SendPermanentError,
    SendSkipped,
    SendTransientError,
    message_send,
)


@pytest.fixture
def contact(db):
    return contact_upsert(email="ann@example.com", data={"firstName": "Ann"})[0]


@pytest.fixture
def marketing(db):
    return Template.objects.create(name="M", subject="Hi {{ firstName }}", html="<p>x</p>")


@pytest.fixture
def transactional(db):
    return Template.objects.create(
        name="T", type=Template.TRANSACTIONAL, subject="Receipt", html="<p>r</p>"
    )


@pytest.fixture
def anymail_test(settings):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    settings.EMAIL_PROVIDER_IDEMPOTENT = False
    return mail


def test_it_sends_once_per_key(contact, marketing, anymail_test):
    first = message_send(idempotency_key="k1", template=marketing, contact=contact)
    again = message_send(idempotency_key="k1", template=marketing, contact=contact)
    assert first.sent_now and not again.sent_now
    assert len(mail.outbox) == 1
    message = Message.objects.get()
    assert message.status == Message.SENT
    assert message.subject == "Hi Ann"
    assert message.provider_message_id  # the anymail test backend assigns one


def test_marketing_mail_carries_one_click_unsubscribe_headers_tags_and_metadata(
    contact, marketing, anymail_test
):
    message_send(idempotency_key="k1", template=marketing, contact=contact)
    sent = mail.outbox[0]
    assert sent.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert sent.extra_headers["List-Unsubscribe"].startswith("<http")
    assert "/unsubscribe/" in sent.extra_headers["List-Unsubscribe"]
    assert sent.tags == ["marketing"]
    assert sent.metadata["idempotency_key"] == "k1"
    assert sent.anymail_test_params["tags"] == ["marketing"]


def test_transactional_mail_has_no_unsubscribe_header_and_reaches_unsubscribed(
    contact, transactional, anymail_test
):
    contact_update_data(contact=contact, subscribed=False)
    message_send(idempotency_key="k1", template=transactional, contact=contact)
    assert len(mail.outbox) == 1
    assert "List-Unsubscribe" not in mail.outbox[0].extra_headers


def test_marketing_is_skipped_when_unsubscribed_at_the_moment_of_sending(
    contact, marketing, anymail_test
):
    # `contact` is the stale object a worker holds; the database says unsubscribed.
    contact_update_data(contact=contact, subscribed=False)
    assert contact.subscribed is True
    with pytest.raises(SendSkipped):
        message_send(idempotency_key="k1", template=marketing, contact=contact)
    assert not mail.outbox
    assert not Message.objects.exists()


def test_a_send_interrupted_after_the_provider_call_is_not_repeated(
    contact, marketing, anymail_test
):
    # What a worker killed between the provider's acceptance and the ledger update leaves.
    Message.objects.create(
        idempotency_key="k1",
        contact=contact,
        to_email=contact.email,
        from_email="a@b.c",
        subject="s",
        status=Message.SENDING,
    )
    result = message_send(idempotency_key="k1", template=marketing, contact=contact)
    assert not result.sent_now
    assert not mail.outbox
    assert Message.objects.get().status == Message.UNKNOWN


def test_with_an_idempotent_provider_the_interrupted_send_is_retried_with_the_same_key(
    contact, marketing, settings, httpserver
):
    """Resend de-duplicates on the Idempotency-Key header: the retry is safe and closes the
    window. A real local HTTP server stands in for Resend's API."""
    httpserver.expect_request("/emails", method="POST").respond_with_json({"id": "re_123"})
    settings.EMAIL_BACKEND = "templates_app.backends.ResendEmailBackend"
    settings.EMAIL_PROVIDER_IDEMPOTENT = True
    settings.ANYMAIL = {"RESEND_API_KEY": "re_test", "RESEND_API_URL": httpserver.url_for("/")}
    Message.objects.create(
        idempotency_key="exec-1-run-2",
        contact=contact,
        to_email=contact.email,
        from_email="a@b.c",
        subject="s",
        status=Message.SENDING,
    )
    result = message_send(idempotency_key="exec-1-run-2", template=marketing, contact=contact)
    assert result.sent_now
    request, _ = httpserver.log[0]
    assert request.headers["Idempotency-Key"] == "exec-1-run-2"
    assert json.loads(request.data)["to"] == ["ann@example.com"]
    message = Message.objects.get()
    assert (message.status, message.provider_message_id) == (Message.SENT, "re_123")


def test_a_transient_provider_error_frees_the_key_for_a_retry(
    contact, marketing, settings, httpserver
):
    httpserver.expect_oneshot_request("/emails").respond_with_data("busy", status=503)
    httpserver.expect_oneshot_request("/emails").respond_with_json({"id": "re_9"})
    settings.EMAIL_BACKEND = "templates_app.backends.ResendEmailBackend"
    settings.ANYMAIL = {"RESEND_API_KEY": "re_test", "RESEND_API_URL": httpserver.url_for("/")}
    with pytest.raises(SendTransientError):
        message_send(idempotency_key="k1", template=marketing, contact=contact)
    assert not Message.objects.exists()
    assert message_send(idempotency_key="k1", template=marketing, contact=contact).sent_now
    assert Message.objects.get().provider_message_id == "re_9"


def test_a_permanent_provider_error_is_recorded_with_the_providers_words(
    contact, marketing, settings, httpserver
):
    httpserver.expect_request("/emails").respond_with_json(
        {"message": "The from address is not verified"}, status=422
    )
    settings.EMAIL_BACKEND = "templates_app.backends.ResendEmailBackend"
    settings.ANYMAIL = {"RESEND_API_KEY": "re_test", "RESEND_API_URL": httpserver.url_for("/")}
    with pytest.raises(SendPermanentError, match="not verified"):
        message_send(idempotency_key="k1", template=marketing, contact=contact)
    message = Message.objects.get()
    assert message.status == Message.FAILED
    assert "not verified" in message.error


@override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")
def test_the_text_part_and_html_alternative_are_both_sent(contact, marketing):
    message_send(idempotency_key="k1", template=marketing, contact=contact)
    sent = mail.outbox[0]
    assert sent.alternatives[0][1] == "text/html"
    assert sent.body == "x"
