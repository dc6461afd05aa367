"""The `smtp` provider against a real local SMTP server (aiosmtpd)."""

import email
import socket

import pytest
from aiosmtpd.controller import Controller

from contacts_app.services import contact_upsert
from templates_app.models import Message, Template
from templates_app.services import SendPermanentError, SendTransientError, message_send


class Inbox:
    def __init__(self):
        self.messages = []
        self.reply = None  # e.g. "451 try later" to refuse

    async def handle_DATA(self, server, session, envelope):
        if self.reply:
            return self.reply
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp(settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_PROVIDER_IDEMPOTENT = False
    yield inbox
    controller.stop()


@pytest.fixture
def contact(db):
    return contact_upsert(email="ann@example.com", data={"firstName": "Ann"})[0]


def test_it_delivers_marketing_mail_with_unsubscribe_headers(smtp, contact):
    template = Template.objects.create(
        name="M", subject="Hi {{ firstName }}", html="<p>Hello {{ firstName }}</p>"
    )
    message_send(idempotency_key="k1", template=template, contact=contact)
    [received] = smtp.messages
    assert received["Subject"] == "Hi Ann"
    assert received["To"] == "ann@example.com"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/unsubscribe/" in received["List-Unsubscribe"]
    parts = {part.get_content_type() for part in received.walk()}
    assert {"text/plain", "text/html"} <= parts
    assert Message.objects.get().status == Message.SENT


def test_a_4xx_reply_is_transient_and_a_5xx_permanent(smtp, contact):
    template = Template.objects.create(name="T", type="transactional", subject="s", html="<p>x</p>")
    smtp.reply = "451 4.3.0 try again later"
    with pytest.raises(SendTransientError):
        message_send(idempotency_key="k1", template=template, contact=contact)
    assert not Message.objects.exists()
    smtp.reply = "550 5.7.1 relaying denied"
    with pytest.raises(SendPermanentError, match="relaying denied"):
        message_send(idempotency_key="k1", template=template, contact=contact)
    assert Message.objects.get().status == Message.FAILED
    smtp.reply = None
    # The failed key stays failed: a permanent refusal is not retried by another visit.
    assert not message_send(idempotency_key="k1", template=template, contact=contact).sent_now
    assert smtp.messages == []
