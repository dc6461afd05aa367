"""Prometheus metrics: every metric the app exports, the one-line helpers code calls to count,
and GET /metrics (README: "Metrics").

Every process on a host (gunicorn's workers, django-q2's workers, the clocks, a `manage.py`
command) counts into its own files in PROMETHEUS_MULTIPROC_DIR (prometheus_client's
multiprocess mode); /metrics adds them up. prometheus_client picks that mode once, when it is
first imported, from the environment: so this module sets the directory before importing it,
and config/settings.py imports this module before any app (django-q2 imports prometheus_client
too) is loaded.

A process that has ended leaves its files behind, and a pid is never the same process twice:
django-q2 recycles its workers, gunicorn may restart its own, and every restart is a new pid.
So each scrape folds the counters and histograms of processes that no longer exist into one
archive file per type and deletes theirs (the totals never go down, and the directory holds
about one file per live process); gunicorn's child_exit does it at once for its workers.
The gauges that describe the database are read from it at scrape time (DatabaseCollector).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import hmac
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_BASE_DIR = Path(__file__).resolve().parent.parent


def multiproc_dir() -> str:
    """PROMETHEUS_MULTIPROC_DIR, or by default a private folder in the temporary directory, one
    per user and checkout: what every process of `make run` finds without being told. (A
    production deploy sets the variable to one folder for every process of the host, e.g.
    systemd's /run/<RuntimeDirectory>: separate /tmp's (PrivateTmp) would split the counts.)"""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if not path:
        checkout = hashlib.sha256(str(_BASE_DIR).encode()).hexdigest()[:10]
        path = os.path.join(tempfile.gettempdir(), f"lifecycle-metrics-{os.getuid()}-{checkout}")
        os.makedirs(path, mode=0o700, exist_ok=True)
        # A shared /tmp: a folder someone else made there is not ours to read or write.
        info = os.lstat(path)
        if info.st_uid != os.getuid() or not os.path.isdir(path) or os.path.islink(path):
            raise ImproperlyConfigured(
                f"{path} is not a folder of this user: set PROMETHEUS_MULTIPROC_DIR"
            )
    else:
        os.makedirs(path, exist_ok=True)
    return path


MULTIPROC_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir()

from django.conf import settings  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.views.decorators.http import require_GET  # noqa: E402
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric  # noqa: E402
from prometheus_client.mmap_dict import MmapedDict  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead  # noqa: E402

log = logging.getLogger(__name__)

TRACK_REQUESTS = Counter(
    "lifecycle_track_requests", "POST /v1/track requests, by HTTP status.", ["status"]
)
STEP_VISITS = Counter(
    "lifecycle_step_visits",
    "Step visits the engine finished, by step type and outcome "
    "(completed, skipped, failed, retry, waiting, exited).",
    ["type", "outcome"],
)
EMAILS = Counter(
    "lifecycle_emails",
    "Email send attempts through the ledger, by result (sent; failed: refused for good; "
    "unknown: interrupted, not sent again; retry: refused for now, tried again later).",
    ["status"],
)
WEBHOOK_CALLS = Counter(
    "lifecycle_webhook_calls",
    "Webhook step calls, by outcome (success: 2xx; failed: another status, for good; "
    "retry: a network error, 408, 429 or 5xx; refused: the address is not allowed).",
    ["outcome"],
)
TIMER_LATENESS = Histogram(
    "lifecycle_timer_lateness_seconds",
    "How late a due run started moving again, from its wake_at to a worker taking it up.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def track_request(status: int) -> None:
    TRACK_REQUESTS.labels(str(status)).inc()


def step_visit(type: str, outcome: str) -> None:
    """One step visit ended: `type` is the step type, `outcome` one of completed, skipped,
    failed, retry, waiting, exited (labels are not checked: keep to these words)."""
    STEP_VISITS.labels(type, outcome).inc()


def email_result(status: str) -> None:
    EMAILS.labels(status).inc()


def webhook_call(outcome: str) -> None:
    WEBHOOK_CALLS.labels(outcome).inc()


def timer_lateness(seconds: float) -> None:
    TIMER_LATENESS.observe(max(seconds, 0.0))


# --- Files of ended processes -------------------------------------------------------------------
# Only these types are sums over processes, so only they are folded into an archive.
_PROCESS_FILE = re.compile(r"(counter|histogram|summary)_(\d+)\.db")
_JOURNAL = "compaction.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """One process at a time folds files, and nobody reads them half-folded."""
    with open(os.path.join(path, ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _apply_journal(path: str) -> None:
    """Finishes a compaction: new archives into place, then the folded files out. Running it
    again after a crash part-way is harmless, and it is what stops a crash from counting a
    process twice (archive written, its files still there) or not at all."""
    journal = os.path.join(path, _JOURNAL)
    try:
        with open(journal) as f:
            plan = json.load(f)
    except FileNotFoundError:
        return
    for new, final in plan["replace"]:
        if os.path.exists(os.path.join(path, new)):
            os.replace(os.path.join(path, new), os.path.join(path, final))
    for name in plan["remove"]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(path, name))
    os.unlink(journal)


def _compact(path: str) -> None:
    """Folds the counter/histogram files of every process that no longer exists into
    `<type>_archive.db` and deletes them (with the live gauges of those processes)."""
    _apply_journal(path)
    dead: dict[str, list[str]] = {}
    for name in os.listdir(path):
        match = _PROCESS_FILE.fullmatch(name)
        if match and not _alive(int(match[2])):
            dead.setdefault(match[1], []).append(name)
    if not dead:
        return
    replace, remove = [], []
    for typ, names in dead.items():
        archive, new = f"{typ}_archive.db", f"{typ}_archive.db.new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(path, new))  # left by a compaction that crashed early
        sums: dict[str, float] = {}
        for name in [archive, *names]:
            with contextlib.suppress(FileNotFoundError):
                for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(
                    os.path.join(path, name)
                ):
                    sums[key] = sums.get(key, 0.0) + value
        merged = MmapedDict(os.path.join(path, new))
        for key, value in sums.items():
            merged.write_value(key, value, 0.0)
        merged.close()
        replace.append((new, archive))
        remove.extend(names)
    with open(os.path.join(path, _JOURNAL + ".new"), "w") as f:
        json.dump({"replace": replace, "remove": remove}, f)
    os.replace(os.path.join(path, _JOURNAL + ".new"), os.path.join(path, _JOURNAL))
    _apply_journal(path)
    for name in remove:
        mark_process_dead(int(_PROCESS_FILE.fullmatch(name)[2]), path)  # type: ignore[index]


def process_exited(pid: int, path: str | None = None) -> None:
    """gunicorn's child_exit: fold the ended worker's files now, not at the next scrape."""
    path = path or MULTIPROC_DIR
    mark_process_dead(pid, path)
    with _locked(path):
        _compact(path)


def process_metrics(path: str | None = None) -> list[Metric]:
    """Every process's counters and histograms on this host, summed."""
    path = path or MULTIPROC_DIR
    with _locked(path):
        _compact(path)
        files = glob.glob(os.path.join(path, "*.db"))
        return list(MultiProcessCollector.merge(files, accumulate=True))


# --- What the database says, at scrape time -----------------------------------------------------
class DatabaseCollector:
    """Gauges read from the database when scraped: a few cheap queries. A database that does
    not answer makes `lifecycle_database_up 0`, not a failed scrape."""

    def collect(self) -> Iterator[Metric]:
        from django.db import connection, transaction

        from workflows_app.system import backlog, executions_by_status

        up = GaugeMetricFamily(
            "lifecycle_database_up", "1 when the database answered this scrape's queries."
        )
        try:
            with transaction.atomic():
                if connection.vendor == "postgresql":
                    # A scrape gives up before Prometheus does (10 s by default).
                    with connection.cursor() as cursor:
                        cursor.execute("SET LOCAL statement_timeout = '5s'")
                by_status = executions_by_status()
                queue = backlog()
        except Exception:  # noqa: BLE001 - the database or the broker is down: say so, go on
            log.warning("metrics: the database did not answer", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        executions = GaugeMetricFamily(
            "lifecycle_executions", "Runs in the database, by status.", labels=["status"]
        )
        for status, count in by_status.items():
            executions.add_metric([status], count)
        yield executions
        if queue.queue_depth is not None:  # None: the broker (Redis) did not answer
            yield GaugeMetricFamily(
                "lifecycle_queue_depth",
                "Tasks enqueued for the worker and not yet finished.",
                value=queue.queue_depth,
            )
        yield GaugeMetricFamily(
            "lifecycle_due_runs",
            "Runs due now that no clock has claimed yet.",
            value=queue.due_unclaimed,
        )
        yield GaugeMetricFamily(
            "lifecycle_due_lag_seconds",
            "How overdue the oldest due-but-unclaimed run is (0 when none).",
            value=queue.oldest_due_lag_seconds,
        )
        yield GaugeMetricFamily(
            "lifecycle_webhook_retries_pending",
            "Runs waiting to call a Webhook step again.",
            value=queue.pending_webhook_retries,
        )


class _Metrics:
    """Already collected metrics, as a collector."""

    def __init__(self, metrics: list[Metric]):
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics


def metrics_render(path: str | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Metrics(process_metrics(path)))
    registry.register(DatabaseCollector())
    return generate_latest(registry)


# --- GET /metrics -------------------------------------------------------------------------------
LOOPBACK = ("127.", "::1", "::ffff:127.")


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """With METRICS_TOKEN: `Authorization: Bearer <token>`, else 401 (none) or 403 (another).
    Without: only from this host (the address config.client_ip trusts), so that a fresh
    deploy does not publish its volumes and error rates to the internet."""
    token = settings.METRICS_TOKEN
    if not token:
        from config.client_ip import client_ip

        if client_ip(request).startswith(LOOPBACK):
            return None
        return HttpResponse(
            "Metrics are served to this host only until METRICS_TOKEN is set.\n",
            status=403,
            content_type="text/plain",
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return HttpResponse(
            "Send Authorization: Bearer <METRICS_TOKEN>.\n",
            status=401,
            content_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return HttpResponse("Wrong metrics token.\n", status=403, content_type="text/plain")
    return None


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    return HttpResponse(metrics_render(), content_type=CONTENT_TYPE_LATEST)
