import json
import os

import pytest
from django.db import connection
from django.test import Client

from contacts_app.models import ApiKey
from contacts_app.services import apikey_create, key_cache
from templates_app.models import Template
from workflows_app import engine
from workflows_app.services import workflow_create


def pytest_collection_modifyitems(config, items):
    # The suite's promise is PostgreSQL; refuse to pass quietly on anything else.
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        raise pytest.UsageError("Set DATABASE_URL to a PostgreSQL database (make test does this).")


@pytest.fixture(autouse=True)
def _loopback_webhooks(settings):
    # Webhook tests talk to a real HTTP server on loopback; every other private range stays
    # refused, and SSRF tests turn loopback off again.
    settings.WEBHOOK_ALLOW_LOOPBACK = True


@pytest.fixture(autouse=True)
def _fresh_caches():
    key_cache.forget()
    engine._graphs.clear()
    yield


@pytest.fixture
def secret_key(db):
    key, raw = apikey_create(name="backend", kind=ApiKey.SECRET)
    return raw


@pytest.fixture
def public_key(db):
    key, raw = apikey_create(name="browser", kind=ApiKey.PUBLIC)
    return raw


class TrackClient:
    def __init__(self, raw_key):
        self.client = Client()
        self.key = raw_key

    def post(self, body=None, *, key=None, raw=None, content_type="application/json", **headers):
        data = raw if raw is not None else json.dumps(body)
        auth = {"HTTP_AUTHORIZATION": f"Bearer {key or self.key}"} if (key or self.key) else {}
        extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
        return self.client.post("/v1/track", data=data, content_type=content_type, **auth, **extra)


@pytest.fixture
def track(secret_key):
    return TrackClient(secret_key)


@pytest.fixture
def template(db):
    return Template.objects.create(
        name="Welcome",
        type=Template.MARKETING,
        subject="Welcome, {{ firstName | default: 'there' }}",
        html="<p>Hi {{ firstName }}!</p><a href='{{ unsubscribeUrl }}'>Unsubscribe</a>",
    )


@pytest.fixture
def make_workflow(db):
    def make(steps, transitions, *, trigger="user.signup", name=None, enabled=True, reentry=False):
        return workflow_create(
            name=name or f"wf-{trigger}-{len(steps)}",
            trigger_event=trigger,
            enabled=enabled,
            allow_reentry=reentry,
            graph={"steps": steps, "transitions": transitions},
        )

    return make


def chain(*steps, trigger_to=None):
    """Transitions for a straight line of steps: trigger -> s1 -> s2 ..."""
    keys = [s["key"] for s in steps]
    transitions = [{"from": "trigger", "to": trigger_to or keys[0]}]
    transitions += [{"from": a, "to": b} for a, b in zip(keys, keys[1:], strict=False)]
    return list(steps), transitions


def drain(now=None, rounds=50):
    """Runs the clock and a worker in this process until nothing is due (one loop at a time)."""
    from django.utils import timezone

    total = 0
    for _ in range(rounds):
        ids = engine.executions_claim_due(now=now or timezone.now(), limit=1000)
        if not ids:
            return total
        engine.executions_advance(ids)
        total += len(ids)
    raise AssertionError("work still due after many rounds")


@pytest.fixture
def pg_only():
    assert connection.vendor == "postgresql"
