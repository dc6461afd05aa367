"""What ops look at: the engine's backlog and recent trouble, read from the database and the
task queue. Shown on the admin's System page and exported at /metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Min
from django.utils import timezone

from config.broker import queue_depth
from templates_app.models import Message
from workflows_app.models import Execution, ProcessHeartbeat

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backlog:
    queue_depth: int | None  # tasks waiting for (or held by) a worker; None: broker down
    due_unclaimed: int  # runs due now that no clock has handed out yet
    oldest_due_lag_seconds: float  # how late the most overdue of them is (0 when none)
    failed_last_hour: int  # runs that ended FAILED in the last hour
    unknown_last_hour: int  # emails whose delivery is unknown (a worker died mid-send)
    pending_webhook_retries: int  # runs waiting to try a Webhook step again


def _queue_depth() -> int | None:
    """The queue's depth, or None when the broker (Redis) does not answer: the page and the
    metrics still show everything the database knows."""
    try:
        return queue_depth()
    except Exception:  # noqa: BLE001 - e.g. redis.ConnectionError, a timeout
        log.warning("the task broker did not answer", exc_info=True)
        return None


def backlog(now: datetime | None = None) -> Backlog:
    now = now or timezone.now()
    hour_ago = now - timedelta(hours=1)
    due = Execution.objects.filter(wake_at__lte=now, status__in=Execution.ACTIVE).aggregate(
        n=Count("id"), oldest=Min("wake_at")
    )
    return Backlog(
        queue_depth=_queue_depth(),
        due_unclaimed=due["n"],
        oldest_due_lag_seconds=(now - due["oldest"]).total_seconds() if due["oldest"] else 0.0,
        failed_last_hour=Execution.objects.filter(
            status=Execution.FAILED, finished_at__gte=hour_ago
        ).count(),
        unknown_last_hour=Message.objects.filter(
            status=Message.UNKNOWN, updated_at__gte=hour_ago
        ).count(),
        # A transient failure leaves the run RUNNING at the step, due again at its retry time.
        pending_webhook_retries=Execution.objects.filter(
            status=Execution.RUNNING, wake_at__gt=now, current_step__type="webhook"
        ).count(),
    )


def executions_by_status() -> dict[str, int]:
    """Runs per status (every status present, zeros included)."""
    counts = dict(
        Execution.objects.order_by()
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    return {status: counts.get(status, 0) for status, _ in Execution.STATUS_CHOICES}


# --- The System page ---------------------------------------------------------------------------

GREEN, AMBER, RED = "green", "amber", "red"
# Thresholds, stated on the page next to each figure.
DUE_LAG_AMBER = 5.0  # seconds: the clock normally claims a due run within CLOCK_INTERVAL_MS
DUE_LAG_RED = 60.0
FAILED_RED = 50
UNKNOWN_RED = 10
WEBHOOK_RETRIES_RED = 100
_HEALTH_LEVEL = {"ok": GREEN, "late": AMBER, "dead": RED}


@dataclass(frozen=True)
class Process:
    row: ProcessHeartbeat
    health: str  # "ok", "late" or "dead" (ProcessHeartbeat.health)
    level: str
    silent_seconds: float


@dataclass(frozen=True)
class Check:
    """One line of the page: a figure, its colour and the rule that gave it (shown with it)."""

    name: str
    value: str
    level: str
    rule: str


def _level(value: float, *, amber: float, red: float) -> str:
    return RED if value >= red else AMBER if value >= amber else GREEN


def processes(now: datetime | None = None) -> list[Process]:
    """Every worker and clock that wrote a heartbeat in the last day, live or not."""
    now = now or timezone.now()
    out = []
    for row in ProcessHeartbeat.objects.all():
        health = row.health(now)
        silent = (now - row.last_seen).total_seconds()
        out.append(Process(row, health, _HEALTH_LEVEL[health], silent))
    return out


def _processes_check(name: str, kind: str, procs: list[Process]) -> Check:
    mine = [p for p in procs if p.row.kind == kind]
    live = sum(p.health != "dead" for p in mine)
    fresh = sum(p.health == "ok" for p in mine)
    if not live:
        level = RED
    elif fresh < len(mine):  # one is late, or one died in the last day
        level = AMBER
    else:
        level = GREEN
    return Check(
        name,
        f"{live} live" + (f", {len(mine) - live} dead" if len(mine) > live else ""),
        level,
        "red when none is live; amber while one is late or a dead one is listed",
    )


def system_checks(now: datetime | None = None) -> tuple[list[Process], list[Check]]:
    """What the System page shows: the processes and the checks, each with its colour."""
    now = now or timezone.now()
    procs = processes(now)
    b = backlog(now)
    queued_amber = settings.CLOCK_MAX_QUEUED_TASKS
    lag = b.oldest_due_lag_seconds
    checks = [
        _processes_check("Workers", ProcessHeartbeat.WORKER, procs),
        _processes_check("Clocks", ProcessHeartbeat.CLOCK, procs),
        Check(
            "Queue depth (tasks)",
            "unavailable: the task broker did not answer"
            if b.queue_depth is None
            else str(b.queue_depth),
            RED
            if b.queue_depth is None
            else _level(b.queue_depth, amber=queued_amber, red=10 * queued_amber),
            f"amber from {queued_amber} (CLOCK_MAX_QUEUED_TASKS: the clock stops claiming), "
            f"red from {10 * queued_amber}",
        ),
        Check(
            "Due runs not yet claimed",
            f"{b.due_unclaimed} (oldest {lag:.1f} s late)" if b.due_unclaimed else "0",
            RED if lag > DUE_LAG_RED else AMBER if lag > DUE_LAG_AMBER else GREEN,
            f"by the oldest one's lag: amber over {DUE_LAG_AMBER:g} s, red over {DUE_LAG_RED:g} s",
        ),
        Check(
            "Failed runs, last hour",
            str(b.failed_last_hour),
            _level(b.failed_last_hour, amber=1, red=FAILED_RED),
            f"amber from 1, red from {FAILED_RED}",
        ),
        Check(
            "Emails of unknown delivery, last hour",
            str(b.unknown_last_hour),
            _level(b.unknown_last_hour, amber=1, red=UNKNOWN_RED),
            f"amber from 1, red from {UNKNOWN_RED} (a worker died while sending)",
        ),
        Check(
            "Webhook retries pending",
            str(b.pending_webhook_retries),
            _level(b.pending_webhook_retries, amber=1, red=WEBHOOK_RETRIES_RED),
            f"amber from 1, red from {WEBHOOK_RETRIES_RED}",
        ),
    ]
    return procs, checks
