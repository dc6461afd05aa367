"""POST /v1/send on real processes: gunicorn records the send, the qcluster worker delivers it
to a real SMTP server, exactly once per recipient."""

import time
from collections import Counter

import pytest
import requests

from contacts_app.models import Contact
from templates_app.models import Message
from tests.e2e.conftest import Received

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def ledger() -> str:
    counts = Counter(Message.objects.values_list("status", flat=True))
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no messages"


def test_a_send_to_two_recipients_reaches_the_smtp_server_once_each(make_stack, smtp, api_key):
    stack = make_stack()
    stack.start_web()
    stack.start_worker()
    stack.start_clock()

    response = requests.post(
        f"{stack.web_url}/v1/send",
        json={
            "to": [{"name": "Ann", "email": "ann@example.com"}, "bob@example.com"],
            "subject": "Order {{ order }} for {{ name | default: email }}",
            "body": "# Thanks\n\nYour order **{{ order }}** is on its way.",
            "type": "markdown",
            "data": {"order": "A-1"},
            "headers": {"X-Order": "A-1"},
        },
        headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": "order-A-1"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    emails = response.json()["data"]["emails"]
    assert [e["contact"]["email"] for e in emails] == ["ann@example.com", "bob@example.com"]
    assert all(e["email"] for e in emails)

    stack.wait_until(
        lambda: smtp.count() >= 2,
        timeout=60,
        what="both emails at the SMTP server",
        describe=ledger,
    )
    # A duplicate (a second task, the sweep) would arrive within a few clock sweeps.
    time.sleep(3)
    assert smtp.counts() == Counter(
        {
            Received("ann@example.com", "Order A-1 for Ann"): 1,
            Received("bob@example.com", "Order A-1 for bob@example.com"): 1,
        }
    )
    stack.wait_until(
        lambda: set(Message.objects.values_list("status", flat=True)) == {Message.SENT},
        timeout=10,
        what="both messages recorded as sent",
        describe=ledger,
    )
    assert Contact.objects.get(email="ann@example.com").data == {"order": "A-1", "name": "Ann"}

    # The same Idempotency-Key again sends nothing.
    again = requests.post(
        f"{stack.web_url}/v1/send",
        json={"to": "ann@example.com", "subject": "x", "body": "y"},
        headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": "order-A-1"},
        timeout=30,
    )
    assert again.status_code == 409, again.text
    time.sleep(1)
    assert smtp.count() == 2 and Message.objects.count() == 2
