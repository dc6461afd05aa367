"""Heartbeats: a worker or clock keeps its row fresh, removes it on a clean stop, leaves it to go
stale when killed; a database that does not answer never stops the process; the clock's sweep
prunes rows silent for a day. The processes are real: `manage.py clock` and `manage.py qcluster`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.e2e.conftest import PYTHON, ROOT, make_stack, smtp  # noqa: F401 - fixtures
from workflows_app import system
from workflows_app.clock import clock_sweep
from workflows_app.heartbeats import Heartbeat
from workflows_app.models import ProcessHeartbeat

# --- In process ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_writes_its_row_refreshes_it_and_removes_it_on_stop():
    beat = Heartbeat(ProcessHeartbeat.CLOCK, interval=7)
    t0 = timezone.now()
    assert beat.beat(now=t0)
    row = ProcessHeartbeat.objects.get()
    assert (row.kind, row.host, row.pid) == ("clock", socket.gethostname(), os.getpid())
    assert (row.last_seen, row.started_at, row.interval_seconds) == (t0, beat.started_at, 7)

    assert beat.beat(now=t0 + timedelta(seconds=7))
    row = ProcessHeartbeat.objects.get()  # still one row, refreshed
    assert row.last_seen == t0 + timedelta(seconds=7) and row.started_at == beat.started_at

    beat.stop()
    assert not ProcessHeartbeat.objects.exists()


@pytest.mark.django_db
def test_it_writes_only_when_an_interval_has_passed():
    beat = Heartbeat(ProcessHeartbeat.WORKER, name="lifecycle", interval=3600)
    assert beat.beat_if_due()
    assert not beat.beat_if_due()
    assert ProcessHeartbeat.objects.get().name == "lifecycle"


@pytest.mark.django_db
def test_a_row_removed_meanwhile_comes_back_with_the_next_heartbeat():
    beat = Heartbeat(ProcessHeartbeat.WORKER)
    beat.beat()
    ProcessHeartbeat.objects.all().delete()  # pruned while the process was suspended
    assert beat.beat()
    assert ProcessHeartbeat.objects.get().key == beat.key


@pytest.mark.django_db
def test_two_processes_on_one_host_with_one_pid_keep_separate_rows():
    a, b = Heartbeat(ProcessHeartbeat.CLOCK), Heartbeat(ProcessHeartbeat.CLOCK)
    assert a.beat() and b.beat()
    assert ProcessHeartbeat.objects.count() == 2


@pytest.mark.django_db
def test_the_clock_sweep_prunes_processes_silent_for_a_day():
    now = timezone.now()
    old, recent = Heartbeat(ProcessHeartbeat.WORKER), Heartbeat(ProcessHeartbeat.WORKER)
    old.beat(now=now - timedelta(days=1, seconds=1))
    recent.beat(now=now - timedelta(hours=23))  # dead, but shown for a while yet
    clock_sweep(now=now)
    assert list(ProcessHeartbeat.objects.values_list("key", flat=True)) == [recent.key]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_clock_whose_database_does_not_answer_logs_and_carries_on(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CLOCK_", "HEARTBEAT_"))},
        "DATABASE_URL": f"postgres://nobody@127.0.0.1:{free_port()}/lifecycle",  # nothing there
        "DEBUG": "true",
        "HEARTBEAT_SECONDS": "1",
    }
    result = subprocess.run(
        [PYTHON, "manage.py", "clock", "--seconds", "3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # One attempt per interval, and the stop's removal fails too, without a traceback.
    assert output.count("could not record the clock heartbeat") >= 2, output
    assert "could not remove the clock heartbeat on stopping" in output
    assert "clock stopped" in output


# --- Real processes ------------------------------------------------------------------------------


def rows_of(pid: int) -> list[ProcessHeartbeat]:
    return list(ProcessHeartbeat.objects.filter(pid=pid))


@pytest.mark.e2e
def test_a_worker_and_a_clock_keep_their_rows_fresh_and_remove_them_on_a_clean_stop(make_stack):  # noqa: F811
    stack = make_stack(HEARTBEAT_SECONDS="1")
    stack.start_worker()
    stack.start_clock()
    worker, clock = stack.procs["qcluster"].pid, stack.procs["clock"].pid
    stack.wait_until(
        lambda: len(rows_of(worker)) == 1 and len(rows_of(clock)) == 1,
        timeout=60,
        what="a heartbeat from the worker and the clock",
        describe=lambda: str(list(ProcessHeartbeat.objects.values())),
    )
    first = {pid: rows_of(pid)[0] for pid in (worker, clock)}
    assert first[worker].kind == "worker"
    assert first[worker].name and f"qcluster {first[worker].name} running" in stack.tails()
    assert first[clock].kind == "clock"
    assert first[worker].host == socket.gethostname() == first[clock].host
    stack.wait_until(
        lambda: all(rows_of(pid)[0].last_seen > first[pid].last_seen for pid in first),
        timeout=30,
        what="a second heartbeat from each",
    )
    assert [p.level for p in system.processes()] == ["green", "green"]

    for proc in stack.procs.values():
        os.killpg(proc.pid, signal.SIGTERM)
    for proc in stack.procs.values():
        assert proc.wait(timeout=30) == 0
    stack.expected_dead.update(stack.procs)
    assert not ProcessHeartbeat.objects.exists()


@pytest.mark.e2e
def test_a_clock_run_for_n_seconds_removes_its_row_when_done(make_stack):  # noqa: F811
    stack = make_stack(HEARTBEAT_SECONDS="1")
    proc = stack.start("clock", [PYTHON, "manage.py", "clock", "--seconds", "4"])
    stack.expected_dead.add("clock")  # it stops by itself
    stack.wait_until(lambda: bool(rows_of(proc.pid)), timeout=30, what="the clock's heartbeat")
    assert proc.wait(timeout=60) == 0
    assert not ProcessHeartbeat.objects.exists()


@pytest.mark.e2e
def test_a_killed_worker_leaves_its_row_which_turns_red(make_stack):  # noqa: F811
    stack = make_stack(HEARTBEAT_SECONDS="1")
    stack.start_worker()
    worker = stack.procs["qcluster"].pid
    stack.wait_until(lambda: bool(rows_of(worker)), timeout=60, what="the worker's heartbeat")
    stack.kill("qcluster")
    [row] = rows_of(worker)  # no goodbye: the row stays
    # Four intervals (4 s here) without a heartbeat: presumed dead.
    stack.wait_until(
        lambda: [p.level for p in system.processes()] == ["red"],
        timeout=30,
        what="the killed worker shown red",
    )
    assert rows_of(worker)[0].last_seen == row.last_seen  # nobody wrote it since
    checks = {c.name: c for c in system.system_checks()[1]}
    assert checks["Workers"].level == "red"
