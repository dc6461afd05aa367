"""The admin's System page: who may see it, and that its figures and colours are those of the
rows in the database (processes from their heartbeats, the backlog from workflows_app/system.py)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import requests
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ

from contacts_app.models import Contact
from templates_app.models import Message
from tests.canvas_data import staff_user
from tests.conftest import chain
from tests.e2e.conftest import PYTHON, ROOT, free_port
from workflows_app.models import Execution, ProcessHeartbeat

URL = "/admin/workflows_app/processheartbeat/"
GUNICORN = str(ROOT / ".venv" / "bin" / "gunicorn")
NOW = timezone.now().replace(microsecond=0)


def test_the_page_has_a_stable_admin_url():
    assert reverse("admin:workflows_app_processheartbeat_changelist") == URL


def superuser_client() -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "pw-secret-123")
    client = Client()
    client.force_login(user)
    return client


def heartbeat(kind: str, *, silent: float, pid: int = 4242, interval: int = 10):
    return ProcessHeartbeat.objects.create(
        key=uuid.uuid4().hex,
        kind=kind,
        host="box-1",
        pid=pid,
        name="lifecycle" if kind == ProcessHeartbeat.WORKER else "",
        started_at=NOW - timedelta(hours=1),
        last_seen=NOW - timedelta(seconds=silent),
        interval_seconds=interval,
    )


def checks(html: str) -> dict[str, tuple[str, str]]:
    """{check name: (value shown, level)} from the page."""
    rows = re.findall(
        r'<tr data-check="([^"]+)" data-level="(\w+)">.*?<td class="sys-value">([^<]*)</td>',
        html,
        re.S,
    )
    return {name: (value, level) for name, level, value in rows}


def process_levels(html: str) -> dict[int, str]:
    return {
        int(pid): level
        for pid, level in re.findall(r'data-pid="(\d+)"[^>]*data-level="(\w+)"', html)
    }


# --- Who may see it ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_superuser_sees_the_page_linked_from_the_admin_index():
    client = superuser_client()
    index = client.get("/admin/")
    assert f'href="{URL}"' in index.content.decode()
    response = client.get(URL)
    assert response.status_code == 200
    assert "<h1>System</h1>" in response.content.decode()


@pytest.mark.django_db
def test_a_staff_user_with_the_permission_sees_it():
    client = Client()
    client.force_login(staff_user("oncall", "workflows_app.view_system"))
    assert f'href="{URL}"' in client.get("/admin/").content.decode()
    assert client.get(URL).status_code == 200


@pytest.mark.django_db
def test_a_staff_user_without_the_permission_gets_403_and_no_link():
    client = Client()
    client.force_login(
        staff_user("marketer", "workflows_app.view_workflow", "workflows_app.change_workflow")
    )
    assert URL not in client.get("/admin/").content.decode()
    assert client.get(URL).status_code == 403
    assert client.get(URL + "1/change/").status_code == 404  # no other page of the model


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_the_login_page():
    response = Client().get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


# --- Processes -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_each_process_is_green_amber_or_red_by_its_missed_heartbeats():
    heartbeat(ProcessHeartbeat.WORKER, silent=5, pid=101)  # on time
    heartbeat(ProcessHeartbeat.WORKER, silent=25, pid=102)  # more than 2 intervals: late
    heartbeat(ProcessHeartbeat.CLOCK, silent=41, pid=103)  # more than 4 intervals: dead
    heartbeat(ProcessHeartbeat.CLOCK, silent=41, pid=104, interval=60)  # its own pace: on time
    with time_machine.travel(NOW, tick=False):
        html = superuser_client().get(URL).content.decode()
    assert process_levels(html) == {101: "green", 102: "amber", 103: "red", 104: "green"}
    assert "red: dead" in html and "box-1" in html


@pytest.mark.django_db
def test_no_live_worker_or_clock_is_red():
    heartbeat(ProcessHeartbeat.WORKER, silent=600, pid=201)  # killed ten minutes ago
    with time_machine.travel(NOW, tick=False):
        found = checks(superuser_client().get(URL).content.decode())
    assert found["Workers"] == ("0 live, 1 dead", "red")
    assert found["Clocks"] == ("0 live", "red")


@pytest.mark.django_db
def test_live_processes_are_green_and_a_dead_one_beside_them_amber():
    heartbeat(ProcessHeartbeat.WORKER, silent=1, pid=301)
    heartbeat(ProcessHeartbeat.CLOCK, silent=1, pid=302)
    heartbeat(ProcessHeartbeat.CLOCK, silent=300, pid=303)
    with time_machine.travel(NOW, tick=False):
        found = checks(superuser_client().get(URL).content.decode())
    assert found["Workers"] == ("1 live", "green")
    assert found["Clocks"] == ("1 live, 1 dead", "amber")


# --- The backlog ---------------------------------------------------------------------------------


@pytest.fixture
def webhook_workflow(make_workflow):
    return make_workflow(
        *chain(
            {"key": "hook", "type": "webhook", "config": {"url": "http://127.0.0.1:9/hook"}},
        ),
        trigger="order.paid",
    )


def contact(n: int) -> Contact:
    return Contact.objects.create(email=f"c{n}@example.com")


@pytest.mark.django_db
def test_an_idle_system_shows_zeros_in_green():
    with time_machine.travel(NOW, tick=False):
        found = checks(superuser_client().get(URL).content.decode())
    assert found["Queue depth (tasks)"] == ("0", "green")
    assert found["Due runs not yet claimed"] == ("0", "green")
    assert found["Failed runs, last hour"] == ("0", "green")
    assert found["Emails of unknown delivery, last hour"] == ("0", "green")
    assert found["Webhook retries pending"] == ("0", "green")


@pytest.mark.django_db
def test_the_figures_are_those_of_the_rows(webhook_workflow):
    hook = webhook_workflow.steps.get(key="hook")
    with time_machine.travel(NOW - timedelta(seconds=30), tick=False):
        # Due 30 s ago and not claimed: 30 s late.
        Execution.objects.create(
            workflow=webhook_workflow,
            contact=contact(1),
            status=Execution.WAITING,
            wake_at=timezone.now(),
        )
        Message.objects.create(
            idempotency_key="k-1",
            contact=contact(2),
            to_email="c2@example.com",
            from_email="app@example.com",
            subject="Hi",
            status=Message.UNKNOWN,
        )
        Execution.objects.create(
            workflow=webhook_workflow,
            contact=contact(3),
            status=Execution.FAILED,
            error="boom",
            finished_at=timezone.now(),
        )
    # Left out: a failure and an unknown email from more than an hour ago.
    with time_machine.travel(NOW - timedelta(hours=2), tick=False):
        Execution.objects.create(
            workflow=webhook_workflow,
            contact=contact(4),
            status=Execution.FAILED,
            finished_at=timezone.now(),
        )
        Message.objects.create(
            idempotency_key="k-2",
            contact=contact(5),
            to_email="c5@example.com",
            from_email="app@example.com",
            subject="Hi",
            status=Message.UNKNOWN,
        )
    # At the Webhook step, due again at its retry time.
    Execution.objects.create(
        workflow=webhook_workflow,
        contact=contact(6),
        status=Execution.RUNNING,
        current_step=hook,
        wake_at=NOW + timedelta(seconds=20),
    )
    with time_machine.travel(NOW, tick=False):
        found = checks(superuser_client().get(URL).content.decode())
    assert found["Due runs not yet claimed"] == ("1 (oldest 30.0 s late)", "amber")
    assert found["Failed runs, last hour"] == ("1", "amber")
    assert found["Emails of unknown delivery, last hour"] == ("1", "amber")
    assert found["Webhook retries pending"] == ("1", "amber")
    assert found["Queue depth (tasks)"] == ("0", "green")


@pytest.mark.django_db
def test_a_due_run_late_by_more_than_a_minute_is_red_and_the_thresholds_are_stated(
    webhook_workflow,
):
    with time_machine.travel(NOW - timedelta(seconds=61), tick=False):
        Execution.objects.create(
            workflow=webhook_workflow, contact=contact(1), wake_at=timezone.now()
        )
    with time_machine.travel(NOW, tick=False):
        html = superuser_client().get(URL).content.decode()
    assert checks(html)["Due runs not yet claimed"] == ("1 (oldest 61.0 s late)", "red")
    assert "amber over 5 s, red over 60 s" in html


@pytest.mark.django_db
def test_a_queue_the_clock_holds_back_for_is_amber(settings):
    settings.CLOCK_MAX_QUEUED_TASKS = 2
    for _ in range(3):  # tasks as the database broker stores them (opaque to the page)
        OrmQ.objects.create(key="lifecycle", payload="opaque", lock=timezone.now())
    found = checks(superuser_client().get(URL).content.decode())
    assert found["Queue depth (tasks)"] == ("3", "amber")


# --- /healthz against a database that goes away --------------------------------------------------


@pytest.fixture
def throwaway_pg() -> Iterator[tuple[str, Callable[[str], None]]]:
    """A PostgreSQL server of this test's own (never the shared one), migrated; yields its URL
    and `pg(action)` to stop or start it again."""
    folder = tempfile.mkdtemp(prefix="healthz-pg-")  # not under pytest's 0700 tmp: initdb's user
    port = str(free_port())
    script = str(ROOT / "scripts" / "pg-throwaway.sh")

    def pg(action: str) -> None:
        subprocess.run([script, action, folder, port], check=True, capture_output=True)

    pg("start")
    url = f"postgres://postgres@127.0.0.1:{port}/postgres"
    try:
        env = {**os.environ, "DATABASE_URL": url, "DEBUG": "true"}
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300
        )
        yield url, pg
    finally:
        pg("stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.e2e
def test_healthz_answers_503_while_the_database_is_down_and_200_once_it_is_back(
    throwaway_pg, tmp_path
):
    url, pg = throwaway_pg
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "true"}
    with open(tmp_path / "web.log", "wb") as log:
        web = subprocess.Popen(
            [
                GUNICORN,
                "-c",
                "config/gunicorn.conf.py",
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    health = f"http://127.0.0.1:{port}/healthz"
    try:

        def get() -> requests.Response:
            deadline = time.monotonic() + 60
            while True:  # until gunicorn answers at all (it loads Django after binding)
                assert web.poll() is None, (tmp_path / "web.log").read_text()
                try:
                    return requests.get(health, timeout=10)
                except requests.ConnectionError:
                    assert time.monotonic() < deadline, (tmp_path / "web.log").read_text()
                    time.sleep(0.2)

        up = get()
        assert (up.status_code, up.json()) == (
            200,
            {"ok": True, "database": "ok", "migrations": "ok"},
        )
        pg("stop")  # the worker's open connection now leads nowhere
        down = get()
        assert down.status_code == 503 and down.headers["Retry-After"] == "10"
        assert down.json() == {"ok": False, "database": "unavailable"}
        pg("start")
        back = get()
        assert (back.status_code, back.json()["ok"]) == (200, True)
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=30)
