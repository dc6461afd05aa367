"""Stopping the worker or the clock with SIGTERM/SIGINT - to the parent alone or to its whole
process group, as Ctrl-C, honcho, systemd or a container runtime do - never hangs and never
strands work: the processes exit within seconds, whatever the worker held (runs, API sends, a
contact import) comes back ready at once, and a new worker finishes it with every email sent
exactly once. The same on the Redis broker, and when the worker's stdout has no reader."""

import contextlib
import os
import re
import select
import signal
import subprocess
import time

import pytest
import redis
import requests
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from contacts_app.jobs import contact_import_start
from contacts_app.models import Contact, ContactJob
from templates_app.models import Message, Template
from tests.e2e.conftest import PYTHON, ROOT, free_port
from tests.e2e.redis_server import redis_url  # noqa: F401 - a fixture
from workflows_app.models import Execution
from workflows_app.services import workflow_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RUNS = 40
SENDS = 2  # POST /v1/send requests of SEND_TO recipients each: 4 delivery tasks of 25
SEND_TO = 50
# Far longer than the test waits: a run that had to wait for its lease would fail the test (an
# API send left queued would wait for the sweep's QUEUED_RETRY_SECONDS, 120 s).
LEASE = "300"
WORKERS = 2  # worker processes in the cluster (Q_WORKERS)
CONCURRENCY = 2  # emails a worker process sends at a time for workflow runs


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


@pytest.fixture
def broker_url(request) -> str:
    """Q_BROKER_URL: "" for the database broker, a fresh Redis for "redis". Listed before
    make_stack, so Redis outlives the processes that use it."""
    return request.getfixturevalue("redis_url") if request.param == "redis" else ""


def queued_tasks(broker_url: str) -> list[tuple[str, tuple]]:
    """(function, arguments) of every task waiting for a worker: on Redis the broker's
    list, on the database the queue rows no worker has taken (a taken row is locked)."""
    if broker_url:
        client = redis.Redis.from_url(broker_url)
        try:
            raw = client.lrange(f"django_q:{Conf.CLUSTER_NAME}:q", 0, -1)
        finally:
            client.close()
        tasks = [SignedPackage.loads(item) for item in raw]
    else:
        tasks = [t.task for t in OrmQ.objects.filter(lock__lte=timezone.now())]
    return [(task["func"], tuple(task["args"])) for task in tasks]


def send_receipts(stack, key: str, batch: int) -> None:
    response = requests.post(
        f"{stack.web_url}/v1/send",
        json={
            "to": [f"receipt{batch}-{i}@example.com" for i in range(SEND_TO)],
            "subject": "Receipt",
            "body": "<p>Thanks</p>",
        },
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("broker_url", "target", "signum"),
    [
        ("database", "group", signal.SIGTERM),
        ("database", "parent", signal.SIGTERM),
        ("database", "group", signal.SIGINT),
        ("database", "parent", signal.SIGINT),
        ("redis", "group", signal.SIGTERM),
    ],
    ids=["TERM-to-group", "TERM-to-parent", "INT-to-group", "INT-to-parent", "redis-TERM-to-group"],
    indirect=["broker_url"],
)
def test_a_stopped_worker_exits_at_once_and_strands_no_run(
    broker_url, make_stack, api_key, smtp, target, signum
):
    two_emails_workflow()
    smtp.delay = 0.1  # ~2 s of sending per worker: the stop lands mid-backlog
    env = {"Q_BROKER_URL": broker_url} if broker_url else {}
    stack = make_stack(
        ENGINE_LEASE_SECONDS=LEASE,
        Q_WORKERS=str(WORKERS),
        ENGINE_CONCURRENCY=str(CONCURRENCY),
        **env,
    )
    stack.start_web()
    stack.start_clock()
    stack.start_worker()
    # API sends (delivered one after another, 25 to a task) and workflow runs, side by side.
    for batch in range(SENDS):
        send_receipts(stack, api_key, batch)
    for i in range(RUNS):
        stack.track(api_key, "order.placed", f"buyer{i}@example.com")
    total = RUNS * 2 + SENDS * SEND_TO

    stack.wait_until(
        lambda: smtp.count() >= 10 and any(r.subject == "Receipt" for r in smtp.counts()),
        timeout=60,
        what="10 emails at the server, receipts among them",
    )
    worker = stack.procs["qcluster"]
    stack.expected_dead.add("qcluster")
    at_signal = smtp.count()
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
    assert at_stop < total, "the stop came too late to land mid-backlog"
    # Only what was in flight went out after the signal: an email per worker process for an
    # API send, ENGINE_CONCURRENCY for workflow runs. Nothing new was begun.
    assert at_stop - at_signal <= WORKERS * CONCURRENCY, (at_signal, at_stop)
    assert Execution.objects.filter(status__in=Execution.ACTIVE).exists()
    assert Message.objects.filter(source=Message.API, status=Message.QUEUED).exists()
    assert not Message.objects.filter(status=Message.SENDING).exists()
    # Nothing is held by the stopped worker: every unfinished run is due, or already claimed
    # again by the clock into a task that waits for the next worker; every API send not sent
    # is in a task that waits for the next worker. None waits for a lease or a sweep.
    tasks = queued_tasks(broker_url)
    queued_runs = {
        pk for func, args in tasks if func.endswith("advance_executions") for pk in args[0]
    }
    held = set(
        Execution.objects.filter(status=Execution.RUNNING, wake_at__isnull=True)
        .exclude(pk__in=queued_runs)
        .values_list("pk", flat=True)
    )
    assert not held, f"runs still held by the stopped worker: {sorted(held)}"
    queued_sends = {
        pk for func, args in tasks if func.endswith("deliver_messages") for pk in args[0]
    }
    stranded = set(
        Message.objects.filter(source=Message.API, status=Message.QUEUED)
        .exclude(pk__in=queued_sends)
        .values_list("pk", flat=True)
    )
    assert not stranded, f"API sends left for the sweep: {sorted(stranded)}"

    restarted = time.monotonic()
    stack.start_worker()
    stack.wait_until(
        lambda: (
            Execution.objects.filter(status=Execution.COMPLETED).count() == RUNS
            and not Message.objects.exclude(status=Message.SENT).exists()
        ),
        timeout=30,
        what="every run to complete and every API send to go out under the new worker",
    )
    finished = time.monotonic() - restarted

    received = smtp.counts()
    assert sum(received.values()) == total
    doubled = {r: n for r, n in received.items() if n > 1}
    assert not doubled, f"sent more than once: {doubled}"
    assert Message.objects.filter(status=Message.SENT).count() == total
    print(
        f"{signal.Signals(signum).name} to the {target} ({broker_url and 'redis' or 'database'}"
        f"): worker gone in {took:.1f} s with {at_stop} of {total} emails sent "
        f"({at_stop - at_signal} after the signal); the new worker finished in {finished:.1f} s"
    )


IMPORT_ROWS = 3_000


def test_a_contact_import_in_progress_does_not_hold_a_stopping_worker(make_stack):
    """A worker in the middle of a long import (CONTACT_JOB_RUN_SECONDS, 60 s, per task) stops
    after the batch in hand; the next worker carries the job on at once from there."""
    content = "email,n\n" + "".join(f"imp{i}@example.com,{i}\n" for i in range(IMPORT_ROWS))
    job = contact_import_start(content=content.encode(), filename="big.csv", by="e2e")
    stack = make_stack()
    stack.start_worker()

    def progress() -> int:
        return ContactJob.objects.get(pk=job.pk).done

    stack.wait_until(lambda: progress() >= 300, timeout=60, what="the import under way")
    worker = stack.procs["qcluster"]
    stack.expected_dead.add("qcluster")
    os.killpg(worker.pid, signal.SIGTERM)
    took = wait_gone(worker, timeout=10)
    assert worker.returncode == 0, stack.tails()
    stopped = ContactJob.objects.get(pk=job.pk)
    assert stopped.state == ContactJob.RUNNING and stopped.done < IMPORT_ROWS
    assert Contact.objects.count() == stopped.done  # its committed batches, no more
    # Its continuation waits for the next worker: no stall (CONTACT_JOB_STALL_SECONDS) first.
    assert ("contacts_app.jobs.contact_job_task", (str(job.pk),)) in queued_tasks("")

    restarted = time.monotonic()
    stack.start_worker()
    stack.wait_until(
        lambda: ContactJob.objects.get(pk=job.pk).state == ContactJob.COMPLETED,
        timeout=120,
        what="the import to finish under the new worker",
    )
    finished = time.monotonic() - restarted
    done = ContactJob.objects.get(pk=job.pk)
    assert done.result["created"] == IMPORT_ROWS and done.result["updated"] == 0
    assert Contact.objects.count() == IMPORT_ROWS
    print(
        f"import stopped at {stopped.done} of {IMPORT_ROWS} rows; worker gone in {took:.1f} s; "
        f"the new worker finished it in {finished:.1f} s"
    )


@pytest.mark.parametrize(
    ("command", "ready"), [("qcluster", b" running"), ("clock", b"clock started")]
)
def test_a_process_whose_stdout_has_no_reader_still_stops_at_once(make_stack, command, ready):
    """Its terminal, honcho or `| tee` gone: the next write fails (BrokenPipeError). The worker
    must stop its cluster anyway (Python's exit would wait for the cluster for ever), and
    neither process may end on the error."""
    stack = make_stack()
    errors = open(stack.logs / f"{command}.1.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [PYTHON, "manage.py", command],
        cwd=ROOT,
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=errors,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    errors.close()
    stack.procs[command] = proc  # stopped at teardown, whatever happens
    out = b""
    deadline = time.monotonic() + 60
    while ready not in out:
        assert time.monotonic() < deadline and proc.poll() is None, out + stack.tails().encode()
        if select.select([proc.stdout], [], [], 0.2)[0]:
            out += os.read(proc.stdout.fileno(), 4096)
    proc.stdout.close()  # the reader is gone
    stack.expected_dead.add(command)
    os.kill(proc.pid, signal.SIGTERM)
    took = wait_gone(proc, timeout=10)
    log = (stack.logs / f"{command}.1.log").read_text()
    assert proc.returncode == 0, log
    assert "Traceback" not in log, log
    if command == "qcluster":
        assert "stopping cluster processes" in log  # the orderly stop, not a kill
    print(f"{command} with no reader on its stdout gone {took:.1f} s after SIGTERM")


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
