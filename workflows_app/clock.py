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
from django_q.models import OrmQ
from django_q.tasks import async_task

from contacts_app.jobs import contact_jobs_recover
from contacts_app.models import IdempotencyKey, RateLimitWindow
from templates_app.sending import messages_sweep
from workflows_app import engine

log = logging.getLogger(__name__)

TASK_SIZE = 25  # executions per worker task: a batch per task, not a step per task


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
    if OrmQ.objects.count() >= max_queued:
        return 0
    with transaction.atomic():
        ids = engine.executions_claim_due(
            now=now, limit=batch_size if batch_size is not None else settings.CLOCK_BATCH_SIZE
        )
        for start in range(0, len(ids), TASK_SIZE):
            async_task("workflows_app.tasks.advance_executions", ids[start : start + TASK_SIZE])
    return len(ids)


def clock_sweep(*, now: datetime | None = None) -> int:
    now = now or timezone.now()
    recovered = engine.executions_recover(now=now)
    if recovered:
        log.warning("re-queued %d execution(s) whose worker stopped mid-run", recovered)
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
    next_sweep = 0.0
    started = time.monotonic()
    while not stopping() and (stop_after is None or time.monotonic() - started < stop_after):
        try:
            if time.monotonic() >= next_sweep:
                clock_sweep()
                next_sweep = time.monotonic() + settings.CLOCK_SWEEP_SECONDS
            claimed = clock_tick()
        except Exception:  # noqa: BLE001 - the clock must outlive a database hiccup
            log.exception("clock iteration failed; retrying")
            close_old_connections()
            claimed = 0
            _sleep(1, stopping)
        if claimed < settings.CLOCK_BATCH_SIZE:
            _sleep(interval, stopping)
