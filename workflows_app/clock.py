"""The due-timer loop: claims due executions and enqueues them, in one transaction.

Several clocks may run at once: claims use FOR UPDATE SKIP LOCKED (PostgreSQL) or conditional
updates (SQLite), so each due run is handed out once. Every CLOCK_SWEEP_SECONDS it also makes
runs whose worker vanished due again, and prunes old idempotency keys and rate-limit windows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from config.broker import enqueue, queue_depth
from contacts_app.jobs import contact_jobs_recover
from contacts_app.models import IdempotencyKey, RateLimitWindow
from templates_app.sending import messages_sweep
from workflows_app import engine, heartbeats
from workflows_app.models import Execution, ProcessHeartbeat

log = logging.getLogger(__name__)


def clock_tick(
    *, now: datetime | None = None, batch_size: int | None = None, max_queued: int | None = None
) -> int:
    """One iteration: claim due runs and enqueue them. Returns how many were claimed.

    Claims nothing while the workers are behind (`max_queued`, CLOCK_MAX_QUEUED_TASKS, tasks
    queued): a claim starts the run's lease, and a run left queued past its lease would be
    handed out twice. At most `batch_size` (CLOCK_BATCH_SIZE) runs per iteration.
    """
    now = now or timezone.now()
    if max_queued is None:
        max_queued = settings.CLOCK_MAX_QUEUED_TASKS
    if queue_depth() >= max_queued:
        return 0
    with transaction.atomic():
        claimed = engine.executions_claim(
            now=now, limit=batch_size if batch_size is not None else settings.CLOCK_BATCH_SIZE
        )
        size = max(1, settings.ENGINE_TASK_SIZE)
        for start in range(0, len(claimed), size):
            chunk = claimed[start : start + size]
            # Each run's version as claimed (the task moves only runs still so), and when
            # each ended timer was due (so the worker can tell how late it begins).
            timers = {c.id: c.due.timestamp() for c in chunk if c.due is not None}
            versions = {c.id: c.version for c in chunk}
            enqueue(
                "workflows_app.tasks.advance_executions", [c.id for c in chunk], timers, versions
            )
    return len(claimed)


def clock_next_due(*, now: datetime | None = None) -> float | None:
    """Seconds until the next timer ends (0 if one is due), None if none is set: the clock
    sleeps until then when that is sooner than its interval, so a timer is not left waiting
    for the next look."""
    now = now or timezone.now()
    wake_at = (
        Execution.objects.filter(wake_at__isnull=False, status__in=Execution.ACTIVE)
        .order_by("wake_at")
        .values_list("wake_at", flat=True)
        .first()
    )
    return None if wake_at is None else max(0.0, (wake_at - now).total_seconds())


def clock_pause(interval: float, *, claimed: int, next_due: float | None) -> float:
    """How long the clock sleeps after a claim that took every due run it could: until the
    next timer ends when that is sooner than the interval (at least 20 ms), also for a timer
    that fell due since the claim. But a claim of nothing while runs are due means they are
    held back (the workers are behind) or another clock's: then the whole interval."""
    if next_due is None or (next_due == 0 and claimed == 0):
        return interval
    return min(interval, max(next_due, 0.02))


def clock_recover(*, now: datetime | None = None) -> int:
    """Makes the runs of a vanished worker (lease over) due again: every CLOCK_RECOVER_SECONDS,
    so they go on within a few seconds of their lease's end."""
    recovered = engine.executions_recover(now=now or timezone.now())
    if recovered:
        log.warning("re-queued %d execution(s) whose worker stopped mid-run", recovered)
    return recovered


def clock_sweep(*, now: datetime | None = None) -> int:
    now = now or timezone.now()
    recovered = clock_recover(now=now)
    try:  # contact imports and bulk jobs whose task was lost
        contact_jobs_recover(now=now)
    except Exception:  # noqa: BLE001 - the rest of the sweep still runs
        log.exception("the sweep of contact jobs failed")
    try:  # API sends (POST /v1/send) whose delivery task was lost or whose worker died
        messages_sweep(now=now)
    except Exception:  # noqa: BLE001 - the rest of the sweep still runs
        log.exception("the sweep of API sends failed")
    cutoff = now - timedelta(seconds=settings.IDEMPOTENCY_WINDOW_SECONDS)
    IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    RateLimitWindow.objects.filter(window_start__lt=now - timedelta(minutes=5)).delete()
    heartbeats.heartbeats_prune(now=now)  # processes silent for a day
    return recovered


def _sleep(seconds: float, stopping: Callable[[], bool]) -> None:
    until = time.monotonic() + seconds
    while not stopping() and (left := until - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))


def clock_loop(
    *, stop_after: float | None = None, stopping: Callable[[], bool] = lambda: False
) -> None:
    """Runs until `stopping()` (or for `stop_after` seconds). A stop waits for the iteration
    in hand, whose claims and tasks commit together or not at all, never for a whole sleep."""
    interval = settings.CLOCK_INTERVAL_MS / 1000
    next_sweep = next_recover = 0.0
    started = time.monotonic()
    heartbeat = heartbeats.Heartbeat(ProcessHeartbeat.CLOCK)
    while not stopping() and (stop_after is None or time.monotonic() - started < stop_after):
        heartbeat.beat_if_due()  # a clock read unless HEARTBEAT_SECONDS have passed
        try:
            if time.monotonic() >= next_sweep:
                clock_sweep()
                next_sweep = next_recover = time.monotonic() + settings.CLOCK_SWEEP_SECONDS
            elif time.monotonic() >= next_recover:
                clock_recover()
                next_recover = time.monotonic() + settings.CLOCK_RECOVER_SECONDS
            claimed = clock_tick()
            pause = interval
            if claimed < settings.CLOCK_BATCH_SIZE:
                pause = clock_pause(interval, claimed=claimed, next_due=clock_next_due())
        except Exception:  # noqa: BLE001 - the clock must outlive a database hiccup
            log.exception("clock iteration failed; retrying")
            close_old_connections()
            claimed = 0
            pause = 0
            _sleep(1, stopping)
        if claimed < settings.CLOCK_BATCH_SIZE:
            _sleep(pause, stopping)
    heartbeat.stop()
