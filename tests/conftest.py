import json
import os

import pytest
from django.db import connection
from django.test import Client

from contacts_app.models import ApiKey
from contacts_app.services import apikey_create, key_cache
from templates_app.models import Template
from workflows_app import engine
from workflows_app.models import Execution
from workflows_app.services import workflow_create

# The suite runs on PostgreSQL. `make run` runs on SQLite, so scripts/test.sh first runs, with
# DATABASE_URL unset and TEST_SQLITE_PASS=1, the tests that must hold there too: those marked
# `sqlite` (only there: real processes on a fresh SQLite file), and the engine, step,
# /v1/track and graph-integrity tests of ALSO_ON_SQLITE (on both), except those that ask for
# `pg_only` and /v1/track's PostgreSQL single statement.
ALSO_ON_SQLITE = (
    "tests/test_engine.py",
    "tests/steps/",
    "tests/test_track_api.py",
    "tests/test_graph_integrity.py",  # the graph lock's triggers, raw ORM writes included
)


def _runs_on_sqlite(item) -> bool:
    if item.get_closest_marker("sqlite"):
        return True
    return (
        item.nodeid.startswith(ALSO_ON_SQLITE)
        and "pg_only" not in item.fixturenames
        and "one_statement" not in item.nodeid
    )


def pytest_collection_modifyitems(config, items):
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        keep = [item for item in items if not item.get_closest_marker("sqlite")]
    else:
        keep = [item for item in items if _runs_on_sqlite(item)]
        only_sqlite = all(item.get_closest_marker("sqlite") for item in items)
        # The suite's promise is PostgreSQL; refuse to pass quietly on anything else.
        if url or not (only_sqlite or os.environ.get("TEST_SQLITE_PASS")):
            raise pytest.UsageError(
                "Set DATABASE_URL to a PostgreSQL database (make test does this); only the "
                "tests marked sqlite run without it."
            )
    if len(keep) < len(items):
        kept = set(map(id, keep))
        config.hook.pytest_deselected(items=[item for item in items if id(item) not in kept])
        items[:] = keep


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    # On SQLite, a test database in a file next to SQLITE_PATH's (not Django's default shared
    # in-memory one): concurrent connections then behave as they do under `make run`.
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = f"{database['NAME']}-test"
    elif not database.get("TEST", {}).get("NAME"):
        # One test database per pytest process: two runs against one server (two terminals,
        # or a run beside a benchmark) must not drop each other's database.
        database.setdefault("TEST", {})["NAME"] = f"test_{database['NAME']}_{os.getpid()}"


@pytest.fixture(autouse=True)
def _sqlite_flushable(request):
    """After a transactional test Django empties the database: TRUNCATE on PostgreSQL, DELETE
    on SQLite, which the graph-lock triggers refuse while runs are active. So on SQLite, such
    runs are cancelled just before."""
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or bool(
        marker and marker.kwargs.get("transaction", marker.args[0] if marker.args else False)
    )
    if not transactional or connection.vendor != "sqlite":
        yield
        return
    request.getfixturevalue("_django_db_helper")  # so this teardown runs before the flush
    yield
    Execution.objects.filter(status__in=Execution.ACTIVE).update(status=Execution.CANCELLED)


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
    engine.effects_pool_close()  # its threads' connections would keep the test database open


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
