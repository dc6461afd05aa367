"""Email end to end, on real processes: /v1/track -> workflow -> a real SMTP server, one-click
unsubscribe from the received email, and a worker killed between the provider's acceptance
and the ledger update."""

from __future__ import annotations

import asyncio
import email
import os
import signal
from email.policy import default as default_policy
from urllib.parse import urlsplit

import pytest
import requests
from aiosmtpd.controller import Controller

from contacts_app.models import Contact
from templates_app.models import Message, Template
from tests.e2e.conftest import Received, SmtpSink, free_port
from workflows_app.models import Execution, StepRun
from workflows_app.services import workflow_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class CapturingSink(SmtpSink):
    """Keeps every message whole, and may run a hook after a message arrived but before the
    server answers 250 (the moment a provider has the email and the sender does not know)."""

    def __init__(self):
        super().__init__()
        self.messages: list[email.message.EmailMessage] = []
        self.on_data = None

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        with self.lock:
            self.messages.append(message)
            self.received.append(Received(envelope.rcpt_tos[0].lower(), str(message["Subject"])))
        if self.on_data:
            self.on_data()
            await asyncio.sleep(2)  # the sender is dead by now; do not answer it
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp():
    sink = CapturingSink()
    sink.port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def marketing_then_receipt():
    Template.objects.create(
        name="Welcome",
        subject="Welcome, {{ firstName }}",
        html="<p>Hi {{ firstName }}</p><a href='{{ unsubscribeUrl }}'>Unsubscribe</a>",
    )
    Template.objects.create(name="Tips", subject="Tips for you", html="<p>Tips</p>")
    Template.objects.create(
        name="Receipt", type=Template.TRANSACTIONAL, subject="Your receipt", html="<p>Thanks</p>"
    )
    steps = [
        {"key": "welcome", "type": "send_email", "config": {"template": "Welcome"}},
        {"key": "pause", "type": "delay", "config": {"amount": 2, "unit": "seconds"}},
        {"key": "tips", "type": "send_email", "config": {"template": "Tips"}},
        {"key": "receipt", "type": "send_email", "config": {"template": "Receipt"}},
    ]
    keys = [s["key"] for s in steps]
    transitions = [{"from": "trigger", "to": keys[0]}] + [
        {"from": a, "to": b} for a, b in zip(keys, keys[1:], strict=False)
    ]
    workflow_create(
        name="Welcome series",
        trigger_event="user.signup",
        enabled=True,
        graph={"steps": steps, "transitions": transitions},
    )


def test_one_click_unsubscribe_from_a_received_email_stops_the_next_marketing_email(
    make_stack, api_key, smtp
):
    marketing_then_receipt()
    stack = make_stack()
    stack.start_web()
    stack.start_clock()
    stack.start_worker()
    stack.track(api_key, "user.signup", "Ann@Example.com", {"firstName": "Ann"})
    stack.wait_until(lambda: smtp.count() >= 1, timeout=30, what="the welcome email")

    [welcome] = smtp.messages
    assert welcome["Subject"] == "Welcome, Ann"
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = welcome["List-Unsubscribe"].strip("<>")
    # What a mail client's one-click does (RFC 8058): a POST with this exact body.
    response = requests.post(
        stack.web_url + urlsplit(link).path,
        data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert response.status_code == 200
    assert Contact.objects.get(email="ann@example.com").subscribed is False

    stack.wait_until(
        lambda: Execution.objects.filter(status=Execution.COMPLETED).exists(),
        timeout=30,
        what="the run to complete",
    )
    assert smtp.subjects_for("ann@example.com") == ["Welcome, Ann", "Your receipt"]
    tips = StepRun.objects.get(step_key="tips")
    assert tips.status == StepRun.SKIPPED
    assert tips.output == {"skipped": "skipped: unsubscribed"}
    assert Message.objects.filter(subject="Tips for you").count() == 0


def test_a_worker_killed_after_the_provider_accepted_does_not_send_again(make_stack, api_key, smtp):
    Template.objects.create(
        name="Once", type=Template.TRANSACTIONAL, subject="Only once", html="<p>x</p>"
    )
    steps = [
        {"key": "once", "type": "send_email", "config": {"template": "Once"}},
        {"key": "tag", "type": "update_contact", "config": {"set": {"done": True}}},
    ]
    workflow_create(
        name="Once",
        trigger_event="user.signup",
        enabled=True,
        graph={
            "steps": steps,
            "transitions": [{"from": "trigger", "to": "once"}, {"from": "once", "to": "tag"}],
        },
    )
    stack = make_stack(ENGINE_LEASE_SECONDS="3")
    stack.start_web()
    stack.start_clock()
    stack.start_worker()

    def kill_the_worker():
        # The SMTP server has the message; the worker is waiting for "250" and dies now.
        stack.expected_dead.add("qcluster")
        os.killpg(stack.procs["qcluster"].pid, signal.SIGKILL)
        smtp.on_data = None

    smtp.on_data = kill_the_worker
    stack.track(api_key, "user.signup", "bob@example.com")
    stack.wait_until(lambda: smtp.count() >= 1, timeout=30, what="the email at the SMTP server")
    stack.procs["qcluster"].wait(timeout=10)
    assert Message.objects.get().status == Message.SENDING  # the ledger never heard back

    stack.start_worker()
    stack.wait_until(
        lambda: Execution.objects.filter(status=Execution.COMPLETED).exists(),
        timeout=60,
        what="the recovered run to complete",
    )
    assert smtp.count() == 1  # at most once: never a second copy
    message = Message.objects.get()
    assert message.status == Message.UNKNOWN
    assert "not sent again" in message.error
    assert Contact.objects.get().data["done"] is True
