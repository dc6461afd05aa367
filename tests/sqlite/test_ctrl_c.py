"""Ctrl-C on `make run` (honcho running the Procfile) on the embedded SQLite default, in the
middle of a backlog of workflow emails and API sends: every process reports stopped, none is
killed, and the next `make run` sends every email exactly once, without waiting for a lease or
a sweep. (The same on PostgreSQL, and each signal on its own: tests/e2e/test_shutdown.py.)"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time

import pytest
import requests

from tests.e2e.conftest import ROOT, free_port
from tests.sqlite.test_first_run import first_run, manage, smtp  # noqa: F401 - fixtures

pytestmark = pytest.mark.sqlite

HONCHO = str(ROOT / ".venv" / "bin" / "honcho")
RUNS = 24
SEND_TO = 40  # one POST /v1/send: two delivery tasks of 25 and 15
DOCUMENT = {
    "templates": [
        {"name": "Hello", "subject": "Hello", "html": "<p>Hi</p>", "type": "transactional"}
    ],
    "workflows": [
        {
            "name": "Hello",
            "trigger_event": "signed.up",
            "enabled": True,
            "steps": [{"key": "hello", "type": "send_email", "config": {"template": "Hello"}}],
            "transitions": [{"from": "trigger", "to": "hello"}],
        }
    ],
}


class Honcho:
    """`honcho start` on a copy of the Procfile whose web port is free; its output in a file."""

    def __init__(self, env: dict[str, str], logs, tag: str):
        self.port = free_port()
        procfile = logs / "Procfile"
        lines = (ROOT / "Procfile").read_text().splitlines()
        procfile.write_text(
            "\n".join(line.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}") for line in lines)
            + "\n"
        )
        self.log = logs / f"honcho-{tag}.log"
        out = open(self.log, "wb")  # noqa: SIM115 - handed to the process
        self.proc = subprocess.Popen(
            [HONCHO, "start", "-f", str(procfile), "-d", str(ROOT)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_up(self) -> None:
        deadline = time.monotonic() + 90
        while True:
            assert self.proc.poll() is None and time.monotonic() < deadline, self.text()
            text = self.text()
            if "clock started" in text and " running" in text:
                with contextlib.suppress(requests.RequestException):
                    url = f"http://127.0.0.1:{self.port}/healthz"
                    if requests.get(url, timeout=5).ok:
                        return
            time.sleep(0.2)

    def kill_all(self) -> None:
        """Teardown: SIGKILL to honcho's group and to each of its processes' groups."""
        pids = [self.proc.pid] + [int(p) for p in re.findall(r"started \(pid=(\d+)\)", self.text())]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_ctrl_c_mid_backlog_stops_every_process_and_the_next_run_sends_each_email_once(
    first_run,  # noqa: F811 - the fixture imported above
    smtp,  # noqa: F811
):
    stack, db = first_run
    # One email at a time per worker process (2, Q_WORKERS' default) for runs as for API sends:
    # what went out after Ctrl-C can only be what was in flight.
    env = {**stack.env, "ENGINE_CONCURRENCY": "1"}
    manage(env, "migrate", "--no-input")
    document = db.path.with_name("workflows.json")
    document.write_text(json.dumps(DOCUMENT))
    manage(env, "importworkflows", str(document))
    key = manage(env, "createapikey", "ctrl-c").strip().splitlines()[-1]
    smtp.delay = 0.2  # the backlog takes seconds: Ctrl-C lands in the middle of it

    honchos: list[Honcho] = []
    try:
        first = Honcho(env, stack.logs, "first")
        honchos.append(first)
        first.wait_up()
        url = f"http://127.0.0.1:{first.port}"
        auth = {"Authorization": f"Bearer {key}"}
        response = requests.post(
            f"{url}/v1/send",
            json={
                "to": [f"receipt{i}@example.com" for i in range(SEND_TO)],
                "subject": "Receipt",
                "body": "<p>Thanks</p>",
            },
            headers=auth,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        for i in range(RUNS):
            response = requests.post(
                f"{url}/v1/track",
                json={"event": "signed.up", "email": f"user{i}@example.com"},
                headers=auth,
                timeout=30,
            )
            assert response.status_code == 200, response.text
        stack.wait_until(lambda: smtp.count() >= 6, timeout=60, what="the backlog under way")

        pids = {n: int(p) for n, p in re.findall(r"(\w+)\.1 started \(pid=(\d+)\)", first.text())}
        at_signal = smtp.count()
        first.proc.send_signal(signal.SIGINT)  # the terminal's Ctrl-C reaches honcho
        stopped = time.monotonic()
        first.proc.wait(timeout=15)
        while not all(process_gone(pid) for pid in pids.values()):
            assert time.monotonic() - stopped < 15, "a process outlived honcho"
            time.sleep(0.05)
        took = time.monotonic() - stopped
        at_stop = smtp.count()
        text = first.text()
        assert "SIGKILL" not in text, text
        for name in ("web", "worker", "clock"):
            assert f"{name}.1 stopped (rc=0)" in text, text
        assert re.search(r"qcluster \S+ stopped in", text), text
        assert at_stop < RUNS + SEND_TO, "Ctrl-C came too late to land mid-backlog"
        assert at_stop - at_signal <= 2, (at_signal, at_stop)  # nothing new was begun

        # The next make run: nothing waits for a lease (ENGINE_LEASE_SECONDS, 45 s) or the
        # sweep of API sends (120 s).
        restarted = time.monotonic()
        second = Honcho(env, stack.logs, "second")
        honchos.append(second)

        def all_sent() -> bool:
            return (
                db.rows("SELECT count(*) FROM templates_app_message WHERE status = 'sent'")[0][0]
                == RUNS + SEND_TO
            )

        stack.wait_until(all_sent, timeout=40, what="every email sent", describe=second.text)
        finished = time.monotonic() - restarted
    finally:
        for honcho in honchos:
            honcho.kill_all()

    received = smtp.counts()
    assert sum(received.values()) == RUNS + SEND_TO
    assert {r.to for r in received} == {f"user{i}@example.com" for i in range(RUNS)} | {
        f"receipt{i}@example.com" for i in range(SEND_TO)
    }
    assert db.rows("SELECT status, count(*) FROM templates_app_message GROUP BY status") == [
        ("sent", RUNS + SEND_TO)
    ]
    print(
        f"SQLite: every process gone {took:.1f} s after Ctrl-C with {at_stop} of "
        f"{RUNS + SEND_TO} emails sent ({at_stop - at_signal} after it); the next make run "
        f"sent the rest in {finished:.1f} s"
    )
