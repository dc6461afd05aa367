"""A provider's HTTP API is called over one kept-alive connection per thread (no TCP and TLS
handshake per email); SMTP and a connection idle too long or broken by a failed call are not
reused. Against bench/provider.py's Postmark stand-in, a real HTTP/1.1 server on loopback
that counts the connections it accepts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.provider import ProviderStandIn
from contacts_app.services import contact_upsert
from templates_app import services
from templates_app.models import Message, Template
from templates_app.rendering import _html
from templates_app.services import SendTransientError, message_send


@pytest.fixture
def provider(settings) -> Iterator[ProviderStandIn]:
    stand_in = ProviderStandIn().start()
    settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    settings.ANYMAIL = {
        "POSTMARK_API_URL": stand_in.url,
        "POSTMARK_SERVER_TOKEN": stand_in.token,
    }
    yield stand_in
    services._provider_connection_drop(getattr(services._kept, "entry", (None,))[0])
    stand_in.stop()


@pytest.fixture
def receipt(db):
    return Template.objects.create(
        name="Receipt", type=Template.TRANSACTIONAL, subject="Receipt", html="<p>Thanks</p>"
    )


def send(template, n: int) -> Message:
    contact = contact_upsert(email=f"c{n}@example.com")[0]
    return message_send(idempotency_key=f"k-{n}", template=template, contact=contact).message


def test_sends_from_one_thread_share_one_connection(provider, receipt):
    for n in range(3):
        assert send(receipt, n).status == Message.SENT
    assert [a.to for a in provider.accepted()] == [f"c{n}@example.com" for n in range(3)]
    assert provider.connections == 1


def test_a_connection_idle_too_long_is_not_reused(provider, receipt, monkeypatch):
    monkeypatch.setattr(services, "_REUSE_IDLE_SECONDS", 0.0)
    for n in range(3):
        assert send(receipt, n).status == Message.SENT
    assert provider.connections == 3


def test_a_failed_call_drops_the_connection(provider, receipt, monkeypatch):
    handle = provider._handle

    def failing_once(path, token, body):
        if b"c1@example.com" in body:
            return 503, {"ErrorCode": 100, "Message": "Maintenance"}
        return handle(path, token, body)

    monkeypatch.setattr(provider, "_handle", failing_once)
    assert send(receipt, 0).status == Message.SENT
    with pytest.raises(SendTransientError):
        send(receipt, 1)  # a 503: not taken, retried later on a fresh connection
    assert send(receipt, 2).status == Message.SENT
    assert provider.connections == 2
    assert [a.to for a in provider.accepted()] == ["c0@example.com", "c2@example.com"]


def test_a_template_is_parsed_once_per_process(db):
    source = "<p>{{ firstName }} {{ plan }} once</p>"
    before = _html._parsed.cache_info()
    for name in ("Ann", "Bob"):
        assert _html.from_string(source).render(firstName=name, plan="pro") == (
            f"<p>{name} pro once</p>"
        )
    after = _html._parsed.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
