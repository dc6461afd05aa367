"""The `smtp` provider against a real local SMTP server (aiosmtpd)."""

import contextlib
import email
import re
import socket
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from django.core import mail
from django.test import Client

from contacts_app.models import Contact
from contacts_app.services import contact_upsert
from templates_app.models import Message, Template
from templates_app.services import SendPermanentError, SendTransientError, message_send


class Inbox:
    def __init__(self):
        self.messages = []
        self.raw = []  # the bytes as the server received them
        self.reply = None  # e.g. "451 try later" to refuse

    async def handle_DATA(self, server, session, envelope):
        if self.reply:
            return self.reply
        self.raw.append(envelope.original_content)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


# What EMAIL_PROVIDER=smtp configures (config/settings.py): the product's backend, with its
# deadline and its raw List-Unsubscribe header, not Django's stock one.
SMTP_BACKEND = "templates_app.backends.SMTPBackend"


@pytest.fixture
def smtp(settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = SMTP_BACKEND
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


# The header line exactly as Gmail and Yahoo want it: raw, never an RFC 2047 encoded-word,
# the whole <URL> on one line.
ONE_CLICK = re.compile(rb"List-Unsubscribe: <(https://[^<>\s]+/unsubscribe/[^<>\s]+)>")


def header_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def one_click_url(lines: list[bytes]) -> str:
    [index] = [i for i, line in enumerate(lines) if line.lower().startswith(b"list-unsubscribe:")]
    line = lines[index]
    assert b"=?" not in line
    match = ONE_CLICK.fullmatch(line)
    assert match, line
    assert not lines[index + 1][:1].isspace()  # not folded onto a continuation line
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in lines
    assert len(line) > 78  # long enough that default folding would have encoded it
    return match.group(1).decode()


def assert_one_click_unsubscribes(url: str) -> None:
    assert Contact.objects.get().subscribed is True
    # What a mailbox provider does (RFC 8058): a POST with this body, no cookie, no CSRF token.
    response = Client(enforce_csrf_checks=True).post(
        urlsplit(url).path, {"List-Unsubscribe": "One-Click"}
    )
    assert response.status_code == 200
    assert Contact.objects.get().subscribed is False


@pytest.fixture
def marketing(db, settings):
    settings.PUBLIC_URL = "https://lifecycle.example.com"
    return Template.objects.create(name="M", subject="News", html="<p>Hello</p>")


def test_list_unsubscribe_reaches_the_smtp_server_raw_and_unsubscribes_in_one_click(
    smtp, contact, marketing
):
    from django.core.mail import get_connection

    from templates_app.backends import SMTPBackend

    assert type(get_connection()) is SMTPBackend  # the backend the smtp provider uses
    message_send(idempotency_key="k1", template=marketing, contact=contact)
    [raw] = smtp.raw
    assert_one_click_unsubscribes(one_click_url(header_lines(raw)))


def test_list_unsubscribe_is_raw_in_console_output_too(settings, contact, marketing, capsys):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    settings.EMAIL_PROVIDER_IDEMPOTENT = False
    message_send(idempotency_key="k1", template=marketing, contact=contact)
    printed = capsys.readouterr().out
    lines = printed.split("\n\n", 1)[0].encode().split(b"\n")
    assert_one_click_unsubscribes(one_click_url(lines))


def test_list_unsubscribe_goes_to_an_api_provider_as_it_is(settings, contact, marketing):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    settings.EMAIL_PROVIDER_IDEMPOTENT = False
    message_send(idempotency_key="k1", template=marketing, contact=contact)
    headers = mail.outbox[0].anymail_test_params["extra_headers"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = re.fullmatch(r"<(https://[^<>\s]+/unsubscribe/[^<>\s]+)>", headers["List-Unsubscribe"])
    assert match
    assert_one_click_unsubscribes(match.group(1))


def test_several_list_unsubscribe_entries_fold_only_between_entries():
    import email.policy

    from templates_app.backends import LedgerEmail

    long_url = "https://lifecycle.example.com/unsubscribe/" + "a" * 90
    message = LedgerEmail(
        subject="s",
        body="b",
        from_email="a@example.com",
        to=["b@example.com"],
        headers={"List-Unsubscribe": f"<mailto:u@example.com>, <{long_url}>, <https://x.test/u>"},
    )
    lines = header_lines(message.message(policy=email.policy.SMTP).as_bytes())
    start = next(i for i, line in enumerate(lines) if line.startswith(b"List-Unsubscribe:"))
    assert lines[start : start + 3] == [
        b"List-Unsubscribe: <mailto:u@example.com>,",
        f" <{long_url}>,".encode(),
        b" <https://x.test/u>",
    ]


def test_a_send_interrupted_after_the_data_went_out_is_unknown_never_repeated(
    smtp, contact, settings
):
    # The server takes the message, then answers too late: it may well deliver it. Retrying
    # would send it twice, so the ledger says "unknown" and nothing is sent again.
    import asyncio

    async def slow_reply(server, session, envelope):
        smtp.raw.append(envelope.original_content)
        await asyncio.sleep(2)
        return "250 OK"

    smtp.handle_DATA = slow_reply
    settings.EMAIL_TIMEOUT = 1
    template = Template.objects.create(name="T", type=Template.TRANSACTIONAL, subject="s", html="x")
    result = message_send(idempotency_key="k1", template=template, contact=contact)
    assert result.message.status == Message.UNKNOWN
    assert "not sent again" in result.message.error
    again = message_send(idempotency_key="k1", template=template, contact=contact)
    assert again.sent_now is False and again.message.status == Message.UNKNOWN
    assert len(smtp.raw) == 1


def test_a_server_that_can_not_be_reached_is_retried(contact, settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there
    settings.EMAIL_BACKEND = SMTP_BACKEND
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    template = Template.objects.create(name="T", type=Template.TRANSACTIONAL, subject="s", html="x")
    with pytest.raises(SendTransientError):
        message_send(idempotency_key="k1", template=template, contact=contact)
    assert not Message.objects.exists()  # the key is free for the retry


class DrippingSmtp:
    """A raw SMTP server that answers every command at once except one, which it answers a
    byte at a time (each byte well within the socket timeout): only a deadline on the whole
    phase stops a client waiting on it."""

    def __init__(self, slow: str):
        import threading

        self.slow = slow  # "greeting" or "data"
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received_data = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def drip(self, conn, line: bytes):
        import time

        for byte in line:
            conn.sendall(bytes([byte]))
            time.sleep(0.3)

    def serve(self):
        # The client gives up and closes the connection mid-drip: what the test wants.
        with contextlib.suppress(OSError):
            self._serve()

    def _serve(self):
        conn, _ = self.server.accept()
        with conn:
            reader = conn.makefile("rb")
            greeting = b"220 slow.example ESMTP\r\n"
            self.drip(conn, greeting) if self.slow == "greeting" else conn.sendall(greeting)
            while line := reader.readline():
                command = line.strip().upper()
                if command.startswith((b"EHLO", b"HELO")):
                    conn.sendall(b"250 slow.example\r\n")
                elif command == b"DATA":
                    conn.sendall(b"354 go on\r\n")
                    while reader.readline() not in (b".\r\n", b""):
                        pass
                    self.received_data += 1
                    self.drip(conn, b"250 2.0.0 queued as 12345678\r\n")
                elif command == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")

    def close(self):
        self.server.close()


@pytest.mark.parametrize("slow", ["greeting", "data"])
def test_a_server_answering_a_byte_at_a_time_holds_a_send_for_the_timeout_only(
    contact, settings, slow
):
    import time

    server = DrippingSmtp(slow)
    settings.EMAIL_BACKEND = SMTP_BACKEND
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", server.port, 1
    settings.EMAIL_PROVIDER_IDEMPOTENT = False
    template = Template.objects.create(name="T", type=Template.TRANSACTIONAL, subject="s", html="x")
    started = time.monotonic()
    try:
        if slow == "greeting":  # nothing was sent: safe to retry
            with pytest.raises(SendTransientError):
                message_send(idempotency_key="k1", template=template, contact=contact)
            assert not Message.objects.exists()
        else:  # the data went out: it may be delivered, so it is never sent again
            result = message_send(idempotency_key="k1", template=template, contact=contact)
            assert result.message.status == Message.UNKNOWN
            assert server.received_data == 1
    finally:
        server.close()
    assert time.monotonic() - started < 5  # the drip alone would take 7 s or more
