"""What `make run` runs, on what it runs on: the embedded SQLite default.

Against a fresh SQLite file: make run's own commands (migrate, collectstatic, demo), then
`createapikey` and `importworkflows`, then the Procfile's processes (gunicorn, qcluster, clock)
with a real SMTP server at the edge. Events go in over HTTP; what happened is read from the SMTP
server and from the SQLite file itself. The test process never opens Django's database.

`make test` runs this in its SQLite pass (scripts/test.sh, with DATABASE_URL unset).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import requests
from aiosmtpd.controller import Controller

from tests.e2e.conftest import ROOT, SmtpSink, Stack, free_port

pytestmark = pytest.mark.sqlite

PYTHON = str(ROOT / ".venv" / "bin" / "python")
ACTIVE = ("RUNNING", "WAITING")
DELAY_SECONDS = 2
TIMEOUT_SECONDS = 5
BURST = 12

# A welcome email, a Delay, a Wait for Event with a timeout, and a second email on either branch.
DOCUMENT = {
    "templates": [
        {"name": "First hello", "subject": "Hello, {{ firstName }}",
         "html": "<p>Hi {{ firstName }}</p><a href=\"{{ unsubscribeUrl }}\">Unsubscribe</a>"},
        {"name": "First thanks", "subject": "Thanks for activating, {{ firstName }}",
         "html": "<p>Welcome aboard</p>", "type": "transactional"},
        {"name": "First nudge", "subject": "Still there, {{ firstName }}?",
         "html": "<p>Come back</p><a href=\"{{ unsubscribeUrl }}\">Unsubscribe</a>"},
    ],
    "workflows": [
        {"name": "First run", "trigger_event": "first.signup", "enabled": True,
         "steps": [
             {"key": "hello", "type": "send_email", "config": {"template": "First hello"}},
             {"key": "pause", "type": "delay",
              "config": {"amount": DELAY_SECONDS, "unit": "seconds"}},
             {"key": "activated", "type": "wait_for_event",
              "config": {"event": "first.activated",
                         "timeout": {"amount": TIMEOUT_SECONDS, "unit": "seconds"}}},
             {"key": "thanks", "type": "send_email", "config": {"template": "First thanks"}},
             {"key": "nudge", "type": "send_email", "config": {"template": "First nudge"}},
         ],
         "transitions": [
             {"from": "trigger", "to": "hello"},
             {"from": "hello", "to": "pause"},
             {"from": "pause", "to": "activated"},
             {"from": "activated", "branch": "event", "to": "thanks"},
             {"from": "activated", "branch": "timeout", "to": "nudge"},
         ]},
    ],
}  # fmt: skip


# --- Helpers ------------------------------------------------------------------------------------


def run(env: dict[str, str], argv: list[str]) -> str:
    """Runs `argv` in the project folder; returns its stdout, fails with its output."""
    result = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, (
        f"{argv} exited with {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def manage(env: dict[str, str], *args: str) -> str:
    return run(env, [PYTHON, "manage.py", *args])


def shell(command: str) -> list[str]:
    return ["/bin/sh", "-c", command]


def make_run() -> list[str]:
    """The recipe of the Makefile's `run` target: the shell commands `make run` runs."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("run:")) + 1
    recipe = []
    for line in lines[start:]:
        if not line.startswith("\t"):
            break
        recipe.append(line[1:].lstrip("@-+").replace("$$", "$"))
    return recipe


def procfile() -> dict[str, str]:
    """The Procfile's commands, which honcho runs with the shell."""
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            commands[name.strip()] = command.strip()
    return commands


def bound_to(command: str, address: str) -> str:
    """gunicorn's `command` listening on `address` instead of the Procfile's port."""
    command, replaced = re.subn(r"(?:--bind|-b)(?:=|\s+)\S+", f"--bind {address}", command)
    return command if replaced else f"{command} --bind {address}"


class SqliteFile:
    """Reads the app's SQLite file directly (the processes write it; WAL lets us read)."""

    def __init__(self, path: Path):
        self.path = path

    def rows(self, sql: str, *params) -> list[tuple]:
        with contextlib.closing(sqlite3.connect(self.path, timeout=20)) as db:
            return db.execute(sql, params).fetchall()

    def executions(self, workflow: str) -> dict[str, tuple[str, str]]:
        """{email: (status, waiting_for)} for one workflow's executions."""
        rows = self.rows(
            "SELECT c.email, x.status, x.waiting_for FROM workflows_app_execution x"
            " JOIN contacts_app_contact c ON c.id = x.contact_id"
            " JOIN workflows_app_workflow w ON w.id = x.workflow_id WHERE w.name = ?",
            workflow,
        )
        return {email: (status, waiting_for) for email, status, waiting_for in rows}

    def visits(self, email: str) -> dict[str, tuple[str, str, float]]:
        """{step key: (status, branch, seconds it lasted)} of the contact's runs."""
        rows = self.rows(
            "SELECT r.step_key, r.status, r.branch, r.started_at, r.finished_at"
            " FROM workflows_app_steprun r"
            " JOIN workflows_app_execution x ON x.id = r.execution_id"
            " JOIN contacts_app_contact c ON c.id = x.contact_id WHERE c.email = ?",
            email,
        )
        return {
            key: (
                status,
                branch,
                (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
                if end
                else -1.0,
            )
            for key, status, branch, start, end in rows
        }

    def ledger(self) -> list[tuple[str, str, str]]:
        """[(email, subject, status)] of the send ledger."""
        return sorted(
            self.rows(
                "SELECT c.email, m.subject, m.status FROM templates_app_message m"
                " JOIN contacts_app_contact c ON c.id = m.contact_id"
            )
        )

    def summary(self) -> str:
        rows = self.rows(
            "SELECT w.name, c.email, x.status, x.waiting_for, x.error"
            " FROM workflows_app_execution x"
            " JOIN contacts_app_contact c ON c.id = x.contact_id"
            " JOIN workflows_app_workflow w ON w.id = x.workflow_id"
        )
        return "; ".join(" ".join(str(v) for v in row if v) for row in rows) or "no executions"


# --- Fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.port = free_port()
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def first_run(tmp_path, smtp) -> Iterator[tuple[Stack, SqliteFile]]:
    """make run's environment on a fresh SQLite file, and a Stack whose processes are always
    stopped (whole process groups) at teardown."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "SQLITE_PATH", "STATIC_ROOT", "TEST_SQLITE_PASS")
        and not k.startswith(("Q_", "CLOCK_", "ENGINE_", "EMAIL_", "ANYMAIL_"))
    }
    env.update(
        DEBUG="true",  # as make run
        SQLITE_PATH=str(tmp_path / "db.sqlite3"),
        STATIC_ROOT=str(tmp_path / "staticfiles"),
        EMAIL_PROVIDER="smtp",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(smtp.port),
        PYTHONUNBUFFERED="1",
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    stack = Stack(env, logs)
    try:
        yield stack, SqliteFile(tmp_path / "db.sqlite3")
    finally:
        stack.stop_all()
        sys.stdout.write(stack.tails(60) + "\n")  # shown when the test fails


# --- The test -----------------------------------------------------------------------------------


def test_make_run_on_a_fresh_sqlite_file_runs_workflows_and_sends_each_email_once(first_run, smtp):
    stack, db = first_run
    env = stack.env

    # make run's own commands, in its order, on a file that does not exist yet; then, instead of
    # honcho, the Procfile's processes, where only gunicorn's port differs.
    *setup, honcho = make_run()
    assert "honcho start -f Procfile" in honcho
    for command in ("migrate", "collectstatic", "demo"):
        assert sum(f"manage.py {command}" in line for line in setup) == 1, setup
    assert not db.path.exists()
    outputs = {line: run(env, shell(line)) for line in setup}
    # The admin's canvas, built by `make canvas` (a prerequisite of make run and make test).
    assert (Path(env["STATIC_ROOT"]) / "dist" / "canvas.js").exists(), "run make canvas first"
    [demo] = [line for line in setup if "manage.py demo" in line]
    first_key = re.search(r"API key:\s+(sk_\S+)", outputs[demo])[1]
    commands = procfile()
    port = free_port()
    stack.start("web", shell(bound_to(commands["web"], f"127.0.0.1:{port}")))
    stack.start("worker", shell(commands["worker"]))
    stack.start("clock", shell(commands["clock"]))
    stack.web_url = url = f"http://127.0.0.1:{port}"

    # While they start: what the next make run does (the demo is loaded once, the password
    # reset, the key replaced), and the developer's own workflow and key, with the documented
    # commands.
    printed = run(env, shell(demo))
    password = re.search(r"Admin login:\s+admin / (\S+)", printed)[1]
    demo_key = re.search(r"API key:\s+(sk_\S+)", printed)[1]
    assert demo_key != first_key
    document = db.path.with_name("workflows.json")
    document.write_text(json.dumps(DOCUMENT))
    assert "1 workflow(s)" in manage(env, "importworkflows", str(document))
    assert db.rows("SELECT name FROM workflows_app_workflow ORDER BY name") == [
        ("First run",),
        ("Onboarding",),
        ("Receipts",),
    ]
    api_key = manage(env, "createapikey", "first run").strip().splitlines()[-1]
    assert api_key.startswith("sk_")

    def answers() -> bool:
        try:
            return requests.get(f"{url}/admin/login/", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    stack.wait_until(answers, timeout=60, what="gunicorn to answer", describe=db.summary)

    # The printed login works, and the admin lists the workflows, with its static files.
    with requests.Session() as browser:
        page = browser.get(f"{url}/admin/login/", timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
        response = browser.post(
            f"{url}/admin/login/?next=/admin/workflows_app/workflow/",
            data={"username": "admin", "password": password, "csrfmiddlewaretoken": token},
            headers={"Referer": f"{url}/admin/login/"},
            timeout=10,
        )
        assert response.status_code == 200
        assert response.url.endswith("/admin/workflows_app/workflow/"), response.url
        for name in ("Onboarding", "Receipts", "First run"):
            assert name in response.text
        assert browser.get(f"{url}/static/dist/canvas.js", timeout=10).status_code == 200
        # The API reference, with its assets collected by make run (no CDN).
        docs = browser.get(f"{url}/v1/docs", timeout=10)
        assert docs.status_code == 200
        script = re.search(r'src="(/static/[^"]+)"', docs.text)[1]
        assert browser.get(f"{url}{script}", timeout=10).status_code == 200
        assert browser.get(f"{url}/v1/openapi.json", timeout=10).json()["paths"]["/v1/send"]

    # The demo key from the first make run was revoked by the second.
    response = requests.post(
        f"{url}/v1/track",
        json={"event": "order.completed", "email": "dora@example.com"},
        headers={"Authorization": f"Bearer {first_key}"},
        timeout=10,
    )
    assert response.status_code == 401, response.text

    # The demo's receipt workflow, with the key the demo printed.
    stack.track(demo_key, "order.completed", "dora@example.com", {"order_id": 42, "total": 10})
    # Two contacts enter the First run workflow.
    stack.track(api_key, "first.signup", "ann@example.com", {"firstName": "Ann"})
    stack.track(api_key, "first.signup", "bob@example.com", {"firstName": "Bob"})
    # A burst of concurrent calls while the workers and the clock write too: SQLite queues the
    # writers, none is refused.
    buyers = [f"buyer{n}@example.com" for n in range(BURST)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        for future in [
            pool.submit(stack.track, demo_key, "order.completed", to, {"order_id": n})
            for n, to in enumerate(buyers)
        ]:
            future.result()
    stack.wait_until(
        lambda: (
            len(smtp.subjects_for("ann@example.com") + smtp.subjects_for("bob@example.com")) >= 2
        ),
        timeout=30,
        what="the first emails",
        describe=db.summary,
    )

    # Ann does what Bob does not: the event arrives while she waits for it.
    stack.wait_until(
        lambda: db.executions("First run").get("ann@example.com") == ("WAITING", "first.activated"),
        timeout=30,
        what="Ann to wait for first.activated",
        describe=db.summary,
    )
    stack.track(api_key, "first.activated", "ann@example.com", {"plan": "pro"})

    stack.wait_until(
        lambda: (
            not any(s in ACTIVE for s, _ in db.executions("First run").values())
            and [s for s, _ in db.executions("Receipts").values()] == ["COMPLETED"] * (BURST + 1)
        ),
        timeout=30,
        what="every run to end",
        describe=db.summary,
    )
    time.sleep(1)  # room for a duplicate send to show up, were there one
    stack.check_alive()

    assert db.executions("First run") == {
        "ann@example.com": ("COMPLETED", ""),
        "bob@example.com": ("COMPLETED", ""),
    }
    ann, bob = db.visits("ann@example.com"), db.visits("bob@example.com")
    assert set(ann) == {"hello", "pause", "activated", "thanks"}
    assert set(bob) == {"hello", "pause", "activated", "nudge"}
    assert ann["activated"][:2] == ("completed", "event")
    assert bob["activated"][:2] == ("completed", "timeout")
    # The timers held: the Delay and the timeout really waited.
    assert ann["pause"][2] >= DELAY_SECONDS and bob["pause"][2] >= DELAY_SECONDS
    assert bob["activated"][2] >= TIMEOUT_SECONDS
    assert ann["activated"][2] < TIMEOUT_SECONDS

    # Each email exactly once at the SMTP server, and once in the ledger.
    expected = {
        "ann@example.com": ["Hello, Ann", "Thanks for activating, Ann"],
        "bob@example.com": ["Hello, Bob", "Still there, Bob?"],
        "dora@example.com": ["Your receipt for order 42"],
        **{to: [f"Your receipt for order {n}"] for n, to in enumerate(buyers)},
    }
    assert {to: smtp.subjects_for(to) for to in expected} == expected
    assert smtp.count() == 5 + BURST
    assert db.ledger() == sorted(
        (to, subject, "sent") for to, subjects in expected.items() for subject in subjects
    )
    # Nothing went wrong quietly along the way (a "database is locked", a retried task).
    for log in stack.logs.glob("*.log"):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text and " ERROR " not in text, stack.tails()
