"""Stopping the worker or the clock with SIGTERM/SIGINT - to the parent alone or to its whole
process group, as Ctrl-C, honcho, systemd or a container runtime do - never hangs and never
strands a run: the processes exit within seconds, runs the worker held come back due at once,
and a new worker finishes them with every email sent exactly once."""

import contextlib
import os
import re
import signal
import subprocess
import time

import pytest
import requests
from django.utils import timezone
from django_q.models import OrmQ

from templates_app.models import Message, Template
from tests.e2e.conftest import ROOT, free_port
from workflows_app.models import Execution
from workflows_app.services import workflow_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RUNS = 40
# Far longer than the test waits: a run that had to wait for its lease would fail the test.
LEASE = "300"


def two_emails_workflow():
    for name in ("Hello", "Again"):
        Template.objects.create(
            name=name, type=Template.TRANSACTIONAL, subject=name, html=f"<p>{name}</p>"
        )
    steps = [
        {"key": "hello", "type": "send_email", "config": {"template": "Hello"}},
        {"key": "again", "type": "send_email", "config": {"template": "Again"}},
    ]
    transitions = [{"from": "trigger", "to": "hello"}, {"from": "hello", "to": "again"}]
    workflow_create(
        name="Two emails",
        trigger_event="order.placed",
        enabled=True,
        graph={"steps": steps, "transitions": transitions},
    )


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(proc: subprocess.Popen, timeout: float) -> float:
    """Seconds until the process and every process of its group are gone (fails after
    `timeout`)."""
    started = time.monotonic()
    proc.wait(timeout=timeout)
    while group_alive(proc.pid):
        assert time.monotonic() - started < timeout, "a process of the group outlived it"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.parametrize(
    ("target", "signum"),
    [("group", signal.SIGTERM), ("parent", signal.SIGTERM), ("group", signal.SIGINT)],
    ids=["TERM-to-group", "TERM-to-parent", "INT-to-group"],
)
def test_a_stopped_worker_exits_at_once_and_strands_no_run(
    make_stack, api_key, smtp, target, signum
):
    two_emails_workflow()
    smtp.delay = 0.1  # ~2 s of sending per worker: the stop lands mid-backlog
    stack = make_stack(ENGINE_LEASE_SECONDS=LEASE)
    stack.start_web()
    stack.start_clock()
    stack.start_worker()
    for i in range(RUNS):
        stack.track(api_key, "order.placed", f"buyer{i}@example.com")

    stack.wait_until(lambda: smtp.count() >= 10, timeout=60, what="10 emails at the server")
    worker = stack.procs["qcluster"]
    stack.expected_dead.add("qcluster")
    if target == "group":
        os.killpg(worker.pid, signum)
    else:
        os.kill(worker.pid, signum)
    took = wait_gone(worker, timeout=10)
    at_stop = smtp.count()
    assert worker.returncode == 0, stack.tails()
    log = (stack.logs / "qcluster.1.log").read_text()
    assert f"stopping ({signal.Signals(signum).name})" in log
    assert re.search(r"qcluster \S+ stopped in", log)
    assert at_stop < RUNS * 2, "the stop came too late to land mid-backlog"
    assert Execution.objects.filter(status__in=Execution.ACTIVE).exists()
    # Nothing is held by the stopped worker: every unfinished run is due, or already claimed
    # again by the clock into a task that waits for the next worker. None waits for a lease.
    queued = set()
    for task in OrmQ.objects.filter(lock__lte=timezone.now()):
        queued.update(task.task["args"][0])
    held = set(
        Execution.objects.filter(status=Execution.RUNNING, wake_at__isnull=True)
        .exclude(pk__in=queued)
        .values_list("pk", flat=True)
    )
    assert not held, f"runs still held by the stopped worker: {sorted(held)}"

    restarted = time.monotonic()
    stack.start_worker()
    stack.wait_until(
        lambda: Execution.objects.filter(status=Execution.COMPLETED).count() == RUNS,
        timeout=30,
        what="every run to complete under the new worker",
    )
    finished = time.monotonic() - restarted

    received = smtp.counts()
    assert sum(received.values()) == RUNS * 2
    doubled = {r: n for r, n in received.items() if n > 1}
    assert not doubled, f"sent more than once: {doubled}"
    assert set(Message.objects.values_list("status", flat=True)) == {Message.SENT}
    print(
        f"{signal.Signals(signum).name} to the {target}: worker gone in {took:.1f} s with "
        f"{at_stop} of {RUNS * 2} emails sent; the new worker finished in {finished:.1f} s"
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_the_clock_exits_at_once(make_stack, signum):
    stack = make_stack()
    stack.start_clock()
    clock = stack.procs["clock"]
    log = stack.logs / "clock.1.log"
    stack.wait_until(lambda: "clock started" in log.read_text(), timeout=30, what="the clock")
    time.sleep(0.5)  # a few iterations in
    stack.expected_dead.add("clock")
    os.killpg(clock.pid, signum)
    took = wait_gone(clock, timeout=5)
    assert clock.returncode == 0, stack.tails()
    assert f"clock stopped ({signal.Signals(signum).name})" in log.read_text()
    assert "Traceback" not in log.read_text()
    print(f"clock gone {took:.2f} s after {signal.Signals(signum).name}")


def test_ctrl_c_on_the_procfile_stops_every_process_cleanly(make_stack):
    """What `make run` does: honcho runs the Procfile; Ctrl-C is SIGINT to honcho, which sends
    SIGTERM to each process group and SIGKILL to any still there 5 s later."""
    stack = make_stack()
    port = free_port()
    procfile = stack.logs / "Procfile"
    lines = (ROOT / "Procfile").read_text().splitlines()
    procfile.write_text(
        "\n".join(line.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for line in lines) + "\n"
    )
    out = open(stack.logs / "honcho.log", "wb")  # noqa: SIM115
    honcho = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "honcho"), "start", "-f", str(procfile), "-d", str(ROOT)],
        cwd=ROOT,
        env=stack.env,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    out.close()
    log = stack.logs / "honcho.log"
    try:
        deadline = time.monotonic() + 90
        while not all(s in log.read_text() for s in ("clock started", "qcluster", " running")):
            assert honcho.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        # Ctrl-C once the app is up (a gunicorn worker still importing Django finishes that
        # before it can exit).
        answered = 0
        while answered < 8:
            assert honcho.poll() is None and time.monotonic() < deadline, log.read_text()
            with contextlib.suppress(requests.RequestException):
                answered += requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok
            time.sleep(0.2)
        time.sleep(3)
        honcho.send_signal(signal.SIGINT)  # the terminal's Ctrl-C reaches honcho
        took = wait_gone(honcho, timeout=15)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(honcho.pid, signal.SIGKILL)
    text = log.read_text()
    assert "SIGKILL" not in text, text
    for name in ("web", "worker", "clock"):
        assert f"{name}.1 stopped (rc=0)" in text, text
    assert "clock stopped (SIGTERM)" in text
    assert re.search(r"qcluster \S+ stopped in", text), text
    print(f"honcho and every process gone {took:.1f} s after Ctrl-C")
