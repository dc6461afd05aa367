"""The task broker: Q_BROKER_URL switches django-q2 from the database to Redis, refuses what is
not a Redis URL, and on Redis a task is pushed only once the work it names is committed."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import redis
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.tasks import async_task

from config import broker
from config.broker import enqueue
from tests.e2e.redis_server import redis_url  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parent.parent
LIST_KEY = "django_q:lifecycle:q"  # django-q2's Redis list for the cluster named "lifecycle"


def broker_settings(url: str | None) -> subprocess.CompletedProcess:
    """Loads the settings in a fresh interpreter with Q_BROKER_URL set (or unset) and prints
    the broker part of Q_CLUSTER and the broker django-q2 would use."""
    # No database is needed to choose the broker; django-q2's database broker opens the default
    # connection, so it is a throwaway SQLite file rather than a PostgreSQL database that may
    # not exist (the test run's own is created by pytest under another name).
    env = {k: v for k, v in os.environ.items() if k not in ("Q_BROKER_URL", "DATABASE_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="true",
        SQLITE_PATH=os.path.join(tempfile.mkdtemp(), "db.sqlite3"),
    )
    if url is not None:
        env["Q_BROKER_URL"] = url
    code = (
        "import django; django.setup()\n"
        "from django.conf import settings\n"
        "from django_q.brokers import get_broker\n"
        "q, broker = settings.Q_CLUSTER, get_broker()\n"
        "print(q.get('orm'), type(broker).__name__)\n"
        "pool = getattr(broker.connection, 'connection_pool', None)\n"
        "kw = pool.connection_kwargs if pool else {}\n"
        "print(*(kw.get(k) for k in ('host', 'port', 'db', 'password')))\n"
        "print(kw.get('socket_connect_timeout'), kw.get('socket_timeout'))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_it_uses_the_database_broker_by_default():
    result = broker_settings(None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "default ORM"


@pytest.mark.parametrize(
    ("url", "connection"),
    [
        ("redis://127.0.0.1:6379/0", "127.0.0.1 6379 0 None"),
        ("rediss://:s3cret@cache.internal:6380/2", "cache.internal 6380 2 s3cret"),
        ("redis://h", "h None None None"),  # redis-py's defaults: 6379, database 0
    ],
)
def test_a_redis_url_switches_django_q_to_redis(url, connection):
    result = broker_settings(url)
    assert result.returncode == 0, result.stderr
    broker, kwargs, timeouts = result.stdout.splitlines()
    assert broker == "None Redis"  # no "orm" key left
    assert kwargs == connection
    assert timeouts == "5.0 10.0"  # a silent Redis never hangs a process for ever


def test_a_redis_url_may_set_its_own_timeouts():
    result = broker_settings("redis://h:6379/0?socket_timeout=2.5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2] == "5.0 2.5"


@pytest.mark.parametrize(
    "url",
    [
        "http://:s3cret@127.0.0.1:6379",
        "localhost:6379",
        "redis://:s3cret@host:port/0",
        "redis://",
        "postgres://127.0.0.1/lifecycle",
    ],
)
def test_a_url_that_is_not_redis_stops_the_start_up(url):
    result = broker_settings(url)
    assert result.returncode != 0
    assert "ImproperlyConfigured: Q_BROKER_URL must be a Redis URL" in result.stderr
    assert "s3cret" not in result.stderr  # a password in the value is never repeated


def test_server_side_cursors_can_be_turned_off_for_a_pooler():
    code = (
        "import django; django.setup()\n"
        "from django.conf import settings\n"
        "print(settings.DATABASES['default']['DISABLE_SERVER_SIDE_CURSORS'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_DISABLE_SERVER_SIDE_CURSORS"}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="true")
    env.setdefault("DATABASE_URL", "postgres://u@127.0.0.1:5432/db")
    for value, expected in ((None, "False"), ("true", "True")):
        if value is not None:
            env["DATABASE_DISABLE_SERVER_SIDE_CURSORS"] = value
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert result.stdout.strip() == expected, result.stderr


# --- Enqueueing, on each broker -----------------------------------------------------------------


@pytest.fixture
def on_redis(redis_url, settings, monkeypatch):  # noqa: F811 - the fixture imported above
    """This process's django-q2 on a real Redis, as Q_BROKER_URL makes it at start-up."""
    settings.Q_CLUSTER = {
        **{k: v for k, v in settings.Q_CLUSTER.items() if k != "orm"},
        "redis": redis_url,
    }
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", redis_url)
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(broker, "_broker", None)  # the process's broker, made again on Redis
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.mark.django_db
def test_on_the_database_a_task_commits_with_the_work(settings, monkeypatch):
    monkeypatch.setattr(Conf, "SYNC", False)
    with transaction.atomic():
        enqueue("math.floor", 1.5)
        assert OrmQ.objects.count() == 1  # in this very transaction
        transaction.set_rollback(True)
    assert OrmQ.objects.count() == 0  # and gone with it


@pytest.mark.django_db
def test_on_redis_a_task_is_pushed_once_the_work_is_committed(
    on_redis, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            enqueue("math.floor", 1.5)
            assert on_redis.llen(LIST_KEY) == 0  # a worker could not see the work yet
        assert on_redis.llen(LIST_KEY) == 0
    assert on_redis.llen(LIST_KEY) == 1
    assert OrmQ.objects.count() == 0


@pytest.mark.django_db
def test_on_redis_a_rolled_back_task_is_never_pushed(on_redis, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        enqueue("math.floor", 1.5)
        transaction.set_rollback(True)
    assert callbacks == []
    assert on_redis.llen(LIST_KEY) == 0


@pytest.mark.django_db
def test_the_queue_depth_is_read_from_redis(on_redis):
    for _ in range(3):
        async_task("math.floor", 1.5)
    assert on_redis.llen(LIST_KEY) == 3
    assert broker.queue_depth() == 3


# --- The admin's queued tasks page ---------------------------------------------------------------


@pytest.fixture
def boss(db) -> Client:
    user = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_queued_tasks_page_says_the_queue_is_in_redis_and_its_depth(on_redis, boss):
    OrmQ.objects.create(key="lifecycle", payload="left from the database broker")
    for _ in range(2):
        async_task("math.floor", 1.5)
    page = boss.get("/admin/django_q/ormq/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Tasks are queued in Redis (Q_BROKER_URL), not in the database" in text
    assert "2 task(s) waiting for a worker" in text
    assert "0 Queued tasks" in text or "0 queued tasks" in text.lower()


@pytest.mark.django_db
def test_the_queued_tasks_page_says_so_when_redis_does_not_answer(on_redis, boss, redis_url):  # noqa: F811
    on_redis.shutdown(nosave=True)
    page = boss.get("/admin/django_q/ormq/")
    assert page.status_code == 200
    assert "its depth is unknown: Redis did not answer (ConnectionError)" in page.content.decode()


@pytest.mark.django_db
def test_the_queued_tasks_page_on_the_database_lists_the_rows_without_a_redis_note(boss):
    OrmQ.objects.create(key="lifecycle", payload="opaque")
    text = boss.get("/admin/django_q/ormq/").content.decode()
    assert "Redis" not in text
    assert "1 Queued task" in text or "1 queued task" in text.lower()


@pytest.mark.django_db
def test_the_system_page_and_metrics_show_what_the_database_knows_when_redis_is_down(
    on_redis, boss, settings
):
    on_redis.shutdown(nosave=True)
    page = boss.get("/admin/workflows_app/processheartbeat/")
    assert page.status_code == 200
    assert "unavailable: the task broker did not answer" in page.content.decode()
    settings.METRICS_TOKEN = "t" * 32
    scrape = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {'t' * 32}")
    assert scrape.status_code == 200
    text = scrape.content.decode()
    assert "lifecycle_database_up 1.0" in text  # the database is fine: not blamed
    assert "lifecycle_queue_depth " not in text  # unknown, so not reported as a number
    assert 'lifecycle_executions{status="RUNNING"}' in text
