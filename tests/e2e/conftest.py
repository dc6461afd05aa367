"""Real processes for the end-to-end tests: gunicorn, `manage.py qcluster`, `manage.py clock`,
and a local SMTP server that records every email it is handed.

The processes talk to the pytest-django test database (the tests use transactional_db, so
what the test writes is committed and what the processes write is visible to the test). Each
process runs in its own session, so a whole process tree (qcluster's sentinel, pusher, workers
and monitor) can be stopped, or killed with -9, as one group.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.policy import default as default_policy
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from aiosmtpd.controller import Controller
from django.db import connection

from contacts_app.models import ApiKey
from contacts_app.services import apikey_create
from workflows_app.models import Execution

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
GUNICORN = str(ROOT / ".venv" / "bin" / "gunicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- SMTP ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    to: str
    subject: str


@dataclass
class SmtpSink:
    """A real SMTP server on a local port. An email counts as received when its DATA arrives,
    before the (optionally slow) reply, so a sender killed mid-reply still shows up here and a
    repeat of it would show up twice."""

    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append(Received(rcpt.lower(), str(message["Subject"])))
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 Message accepted for delivery"

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def counts(self) -> Counter[Received]:
        with self.lock:
            return Counter(self.received)

    def subjects_for(self, to: str) -> list[str]:
        with self.lock:
            return [r.subject for r in self.received if r.to == to.lower()]


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.port = free_port()
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # one INFO line per SMTP command
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


# --- Processes ----------------------------------------------------------------------------------


def _test_database_url() -> str:
    s = connection.settings_dict
    auth = quote(s["USER"] or "", safe="")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"], safe="")
    host = s["HOST"] or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{s['NAME']}"


class Stack:
    """Starts and stops the app's processes; every one is stopped at teardown, whatever
    happened in the test."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env = env
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.expected_dead: set[str] = set()
        self.starts: Counter[str] = Counter()
        self.web_url = ""

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        assert name not in self.procs or self.procs[name].poll() is not None, f"{name} is running"
        self.starts[name] += 1
        log = open(self.logs / f"{name}.{self.starts[name]}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        self.expected_dead.discard(name)
        return proc

    def start_worker(self, name: str = "qcluster") -> None:
        """`name` tells several clusters apart (its log file, kill(name))."""
        self.start(name, [PYTHON, "manage.py", "qcluster"])

    def start_clock(self, name: str = "clock") -> None:
        self.start(name, [PYTHON, "manage.py", "clock"])

    def start_web(self) -> None:
        port = free_port()
        self.start(
            "web",
            [
                GUNICORN,
                "-c",
                "config/gunicorn.conf.py",
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--access-logfile",
                "-",
            ],
        )
        self.web_url = f"http://127.0.0.1:{port}"
        # Ready when a worker answers (workers load Django after the port is already open).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                requests.get(f"{self.web_url}/v1/track", timeout=5)
                return
            except requests.RequestException:
                time.sleep(0.2)
        raise AssertionError("gunicorn did not answer within 60 s\n" + self.tails())

    def kill(self, name: str) -> None:
        """kill -9 of the whole process group: no cleanup, no goodbye."""
        proc = self.procs[name]
        self.expected_dead.add(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self, timeout: float = 5) -> None:
        """SIGTERM to every group at once, then SIGKILL whatever is left after `timeout`."""
        running = {name: p for name, p in self.procs.items() if p.poll() is None}
        self.expected_dead.update(self.procs)
        for proc in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if name not in self.expected_dead and proc.poll() is not None:
                raise AssertionError(
                    f"process {name} exited with {proc.returncode}\n" + self.tails()
                )

    def tails(self, lines: int = 30) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()
            out.append(f"--- {path.name} (last {lines} lines) ---")
            out.extend(text[-lines:])
        return "\n".join(out)

    def wait_until(
        self,
        predicate: Callable[[], bool],
        *,
        timeout: float,
        what: str,
        describe: Callable[[], str] | None = None,
        interval: float = 0.1,
    ) -> float:
        """Polls `predicate` until true; fails with `what`, the current state and the process
        logs after `timeout` seconds, or as soon as a process dies unexpectedly. Returns the
        seconds waited."""
        started = time.monotonic()
        while True:
            self.check_alive()
            if predicate():
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                state = describe() if describe else execution_summary()
                raise AssertionError(
                    f"timed out after {timeout} s waiting for: {what}\nstate: {state}\n"
                    + self.tails()
                )
            time.sleep(interval)

    def track(self, key: str, event: str, email_address: str, data: dict | None = None) -> dict:
        response = requests.post(
            f"{self.web_url}/v1/track",
            json={"event": event, "email": email_address, "data": data or {}},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert response.status_code == 200, (response.status_code, response.text)
        return response.json()


def execution_summary() -> str:
    counts = Counter(Execution.objects.values_list("status", flat=True))
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no executions"


@pytest.fixture
def make_stack(transactional_db, smtp, tmp_path) -> Iterator[Callable[..., Stack]]:
    """Returns `make(**env_overrides)`: a Stack wired to the test database and the SMTP sink.

    Depends on transactional_db, so the processes are stopped before the database is flushed.
    """
    stacks: list[Stack] = []

    def make(**overrides: str) -> Stack:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("Q_", "CLOCK_", "ENGINE_", "EMAIL_", "ANYMAIL_"))
        }
        env.update(
            DATABASE_URL=_test_database_url(),
            DEBUG="true",
            PYTHONUNBUFFERED="1",
            EMAIL_PROVIDER="smtp",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=str(smtp.port),
            CLOCK_INTERVAL_MS="100",
            CLOCK_SWEEP_SECONDS="1",
            Q_WORKERS="2",
            Q_POLL_MS="50",
            Q_SYNC="false",
            ENGINE_LEASE_SECONDS="30",
            LOG_LEVEL="INFO",
        )
        env.update(overrides)
        # Steps bounded well inside the lease: the settings refuse a lease shorter than twice
        # the longest step (EMAIL_TIMEOUT, WEBHOOK_MAX_TIMEOUT_SECONDS).
        bound = str(max(1, int(env["ENGINE_LEASE_SECONDS"]) // 2))
        env.setdefault("EMAIL_TIMEOUT", bound)
        env.setdefault("WEBHOOK_MAX_TIMEOUT_SECONDS", bound)
        logs = tmp_path / f"logs{len(stacks)}"
        logs.mkdir()
        stack = Stack(env, logs)
        stacks.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in stacks:
            stack.stop_all()
    # Show the process logs of a failing test (pytest prints captured output on failure).
    for stack in stacks:
        sys.stdout.write(stack.tails(60) + "\n")


@pytest.fixture
def api_key(transactional_db) -> str:
    _, raw = apikey_create(name="e2e", kind=ApiKey.SECRET)
    return raw
