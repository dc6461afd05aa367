"""Contact imports (CSV) and bulk subscribe / unsubscribe / delete, as background jobs.

- `contact_import_start` / `contact_bulk_start` check the input, record a ContactJob and queue
  its task in one transaction (django-q2's ORM broker: the queue row commits with the job, so
  neither exists without the other).
- `contact_job_run` (the worker) works through the job in batches. A batch's writes and the
  job's progress commit together, under the job's row lock: a task retried after a crash, or
  run twice, continues after the last committed batch and never applies one twice. Every write
  goes through the contact services (contact_upsert, contact_set_subscribed, the privacy
  erase), so the data rules hold and a real subscription flip records its system event.
- `contact_jobs_recover` (the clock's sweep) queues again unfinished jobs whose progress has
  not moved for CONTACT_JOB_STALL_SECONDS: a task lost with its worker does not leave its job
  "running" for ever.
- A worker asked to stop (config/shutdown.py) ends the job's run after the batch in hand and
  queues its continuation, as when its time is up: the next worker carries on at once, with no
  stall to wait for. A job's task that the stopping worker had taken but not begun is queued
  again untouched.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DataError, IntegrityError, OperationalError, transaction
from django.utils import timezone

from config import shutdown
from config.broker import enqueue
from contacts_app.jobs_csv import (
    IMPORT_MAX_BYTES,
    CsvLayout,
    CsvRow,
    ImportRefused,
    RowError,
    csv_parse,
    csv_row,
    parse_header,
    records,
)
from contacts_app.models import Contact, ContactJob
from contacts_app.services import (
    ContactDataTooLarge,
    contact_data_changes,
    contact_privacy_erase,
    contact_set_subscribed,
    contact_upsert,
)

log = logging.getLogger(__name__)

__all__ = ["IMPORT_MAX_BYTES", "ImportRefused"]  # re-exported for the API and the admin

BULK_MAX_IDS = 10_000
BATCH_SIZE = 100  # rows or contacts per transaction: progress moves at least this often
ERRORS_KEPT = 100  # a result lists the first errors; its counts cover all of them
MAX_RUN_ERRORS = 3  # runs that stop on an unexpected error before the job is failed
BATCH_ATTEMPTS = 3  # tries of a batch the database rolled back for a lock conflict
TASK = "contacts_app.jobs.contact_job_task"

BULK_KINDS = {
    "subscribe": ContactJob.SUBSCRIBE,
    "unsubscribe": ContactJob.UNSUBSCRIBE,
    "delete": ContactJob.DELETE,
}


def _run_budget() -> float:
    """Seconds one task works before it queues its continuation (well inside Q's timeout)."""
    return getattr(settings, "CONTACT_JOB_RUN_SECONDS", 60)


def _stall_seconds() -> int:
    return getattr(settings, "CONTACT_JOB_STALL_SECONDS", 300)


# --- Starting jobs -------------------------------------------------------------------------------


def _enqueue(job_id: Any) -> None:
    """Queues the job's task with the caller's transaction: on the ORM broker the queue row
    commits, or rolls back, with the job; on Redis it is pushed once the job is committed
    (config/broker.py). In django-q2's sync mode the task runs right here."""
    enqueue(TASK, str(job_id), task_name=f"contact-job-{job_id}")


def contact_import_start(*, content: bytes, filename: str = "", by: str = "") -> ContactJob:
    """Checks the CSV (ImportRefused, nothing recorded) and queues its import."""
    parsed = csv_parse(content)
    with transaction.atomic():
        job = ContactJob.objects.create(
            kind=ContactJob.IMPORT,
            total=parsed.rows,
            payload={"delimiter": parsed.delimiter},
            csv_text=parsed.text,
            filename=filename[:255],
            created_by=by[:255],
            result=_import_result(),
        )
        _enqueue(job.pk)
    return job


def _selection(
    mode: str,
    contact_ids: list[uuid.UUID] | None,
    search: str | None,
    subscribed: bool | None,
    exclude_ids: list[uuid.UUID] | None,
) -> dict[str, Any]:
    if mode == "ids":
        ids = list(dict.fromkeys(str(pk) for pk in contact_ids or []))
        return {"mode": "ids", "contactIds": ids}
    return {
        "mode": "query",
        "search": (search or "").strip().lower(),
        "subscribed": subscribed,
        "excludeIds": sorted({str(pk) for pk in exclude_ids or []}),
    }


def _query_contacts(selection: dict[str, Any]):
    contacts = Contact.objects.all()
    if selection.get("search"):  # emails are stored lower-case: a plain contains
        contacts = contacts.filter(email__contains=selection["search"])
    if selection.get("subscribed") is not None:
        contacts = contacts.filter(subscribed=selection["subscribed"])
    if selection.get("excludeIds"):
        contacts = contacts.exclude(pk__in=selection["excludeIds"])
    return contacts


def contact_bulk_start(
    *,
    action: str,
    mode: str,
    contact_ids: list[uuid.UUID] | None = None,
    search: str | None = None,
    subscribed: bool | None = None,
    exclude_ids: list[uuid.UUID] | None = None,
    by: str = "",
) -> ContactJob:
    """Queues `action` (subscribe, unsubscribe, delete) for the contacts given by id
    (mode "ids", at most BULK_MAX_IDS) or by a filter (mode "query": email contains `search`,
    `subscribed`, minus `exclude_ids`, as they stand when the job runs)."""
    if action not in BULK_KINDS:
        raise ValueError(f"unknown bulk action {action!r}")
    if mode not in ("ids", "query"):
        raise ValueError(f"unknown mode {mode!r}")
    if mode == "ids" and len(contact_ids or []) > BULK_MAX_IDS:
        raise ValueError(f"more than {BULK_MAX_IDS} contact ids")
    selection = _selection(mode, contact_ids, search, subscribed, exclude_ids)
    with transaction.atomic():
        if mode == "ids":
            total = len(selection["contactIds"])
        else:
            total = _query_contacts(selection).count()
        job = ContactJob.objects.create(
            kind=BULK_KINDS[action],
            total=total,
            payload=selection,
            created_by=by[:255],
            result=_bulk_result(action, total),
        )
        _enqueue(job.pk)
    return job


def _import_result() -> dict[str, Any]:
    return {"created": 0, "updated": 0, "skipped": 0, "failed": 0, "errors": []}


def _bulk_result(action: str, total: int) -> dict[str, Any]:
    # Plunk's names for a bulk action's outcome.
    return {
        "operation": action,
        "totalRequested": total,
        "successCount": 0,
        "unchangedCount": 0,
        "failureCount": 0,
        "errors": [],
    }


def _add_error(result: dict[str, Any], error: dict[str, Any]) -> None:
    if len(result["errors"]) < ERRORS_KEPT:
        result["errors"].append(error)


# --- Running jobs (the worker) ---------------------------------------------------------------


def contact_job_task(job_id: str) -> str:
    """The django-q2 task: runs the job (see contact_job_run)."""
    return contact_job_run(job_id=job_id)


def contact_job_run(*, job_id: Any, budget_seconds: float | None = None) -> str:
    """Works on the job for up to `budget_seconds` (CONTACT_JOB_RUN_SECONDS), or until the
    worker is asked to stop, then queues its continuation; returns the job's state. An
    unexpected error leaves the job for the sweep to queue again, and fails it the
    MAX_RUN_ERRORS-th time."""
    if shutdown.requested():
        return _hand_back(job_id)
    now = timezone.now()
    if not ContactJob.objects.filter(pk=job_id, state__in=ContactJob.UNFINISHED).update(
        state=ContactJob.RUNNING, updated_at=now
    ):
        job = ContactJob.objects.filter(pk=job_id).only("state").first()
        return job.state if job else "missing"
    deadline = time.monotonic() + (_run_budget() if budget_seconds is None else budget_seconds)
    try:
        state = _work(job_id, deadline)
    except Exception as exc:  # noqa: BLE001 - recorded on the job, retried by the sweep
        log.exception("contact job %s stopped on an error", job_id)
        return _run_failed(job_id, exc)
    if state == ContactJob.RUNNING:  # out of time (or the worker is stopping), not out of work
        _enqueue(job_id)
        if shutdown.requested():
            log.info("stopping: contact job %s handed back after its last batch", job_id)
    return state


def _hand_back(job_id: Any) -> str:
    """A stopping worker's answer to a job's task it had not begun: the task again, for the
    next worker (this one's task is acknowledged and gone). Nothing of the job is touched."""
    job = ContactJob.objects.filter(pk=job_id).only("state").first()
    if job is None or job.state not in ContactJob.UNFINISHED:
        return job.state if job else "missing"
    _enqueue(job_id)
    log.info("stopping: contact job %s handed back, not begun", job_id)
    return job.state


def _run_failed(job_id: Any, exc: Exception) -> str:
    with transaction.atomic():
        job = ContactJob.objects.select_for_update().defer("csv_text").filter(pk=job_id).first()
        if job is None or job.state not in ContactJob.UNFINISHED:
            return job.state if job else "missing"
        now = timezone.now()
        job.errors_seen += 1
        job.failed_reason = f"{type(exc).__name__}: {exc}"[:2000]
        job.updated_at = now
        if job.errors_seen >= MAX_RUN_ERRORS:
            job.state = ContactJob.FAILED
            job.finished_at = now
        job.save(
            update_fields=["errors_seen", "failed_reason", "updated_at", "state", "finished_at"]
        )
        return job.state


def _work(job_id: Any, deadline: float) -> str:
    reader: _ImportReader | None = None
    while True:
        for attempt in range(BATCH_ATTEMPTS):
            try:
                with transaction.atomic():
                    job = ContactJob.objects.select_for_update().defer("csv_text").get(pk=job_id)
                    if job.state not in ContactJob.UNFINISHED:
                        return job.state  # finished (or failed) by another run meanwhile
                    if job.kind == ContactJob.IMPORT:
                        reader = reader or _ImportReader(job_id)
                        finished = _import_batch(job, reader)
                    else:
                        finished = _bulk_batch(job)
                    _save_progress(job, finished)
                break
            except OperationalError as exc:
                # Two jobs (or a job and /v1/track) locking the same contacts in another order:
                # the database rolled this batch back whole, so it is simply done again.
                if attempt == BATCH_ATTEMPTS - 1 or not _is_lock_conflict(exc):
                    raise
        if finished:
            return ContactJob.COMPLETED
        # The batch is committed: a stop loses nothing by ending the run here.
        if time.monotonic() >= deadline or shutdown.requested():
            return ContactJob.RUNNING


def _is_lock_conflict(exc: OperationalError) -> bool:
    # deadlock_detected, serialization_failure
    return getattr(exc.__cause__, "sqlstate", None) in ("40P01", "40001")


def _save_progress(job: ContactJob, finished: bool) -> None:
    now = timezone.now()
    job.updated_at = now
    if finished:
        job.state = ContactJob.COMPLETED
        job.total = max(job.total, job.done)
        job.finished_at = now
    job.save(
        update_fields=["done", "total", "result", "cursor", "state", "updated_at", "finished_at"]
    )


class _ImportReader:
    """The stored CSV's rows, read once per run, from wherever the job has got to."""

    def __init__(self, job_id: Any):
        job = ContactJob.objects.only("csv_text", "payload").get(pk=job_id)
        self.text = job.csv_text
        self.delimiter = job.payload.get("delimiter", ",")
        self.layout: CsvLayout | None = None
        self.position = -1
        self.rows: Iterator[tuple[int, list[str]]] = iter(())

    def batch(self, done: int, size: int) -> list[tuple[int, list[str]]]:
        if done != self.position:  # first batch, or another run moved the job on
            rows = records(self.text, self.delimiter)
            self.layout = parse_header(next(rows)[1])
            for _ in range(done):
                next(rows, None)
            self.rows, self.position = rows, done
        batch = [row for _, row in zip(range(size), self.rows, strict=False)]
        self.position += len(batch)
        return batch


def _import_batch(job: ContactJob, reader: _ImportReader) -> bool:
    batch = reader.batch(job.done, BATCH_SIZE)
    layout = reader.layout
    assert layout is not None
    result = job.result or _import_result()
    wanted: list[tuple[int, CsvRow | RowError | None]] = []
    for line, cells in batch:
        try:
            wanted.append((line, csv_row(cells, layout)))
        except RowError as exc:
            wanted.append((line, exc))
    emails = [row.email for _, row in wanted if isinstance(row, CsvRow)]
    known: dict[str, Contact] = {c.email: c for c in Contact.objects.filter(email__in=emails)}
    for line, row in wanted:
        if row is None:  # an empty row
            result["skipped"] += 1
            continue
        try:
            if isinstance(row, RowError):
                raise row
            result[_import_one(row, known)] += 1
        except RowError as exc:
            result["failed"] += 1
            error = {"line": line, "message": str(exc)}
            _add_error(result, {**error, "email": exc.email} if exc.email else error)
    job.done += len(batch)
    job.result = result
    return len(batch) < BATCH_SIZE or job.done >= job.total


def _import_one(row: CsvRow, known: dict[str, Contact]) -> str:
    """created, updated or skipped (an existing contact the row would not change)."""
    existing = known.get(row.email)
    if existing is not None:
        to_set, _ = contact_data_changes(row.data)
        same_data = all(existing.data.get(key) == value for key, value in to_set.items())
        same_subscription = row.subscribed in (None, existing.subscribed)
        if same_data and same_subscription:
            return "skipped"
    try:
        contact, created = contact_upsert(email=row.email, subscribed=row.subscribed, data=row.data)
    except ContactDataTooLarge as exc:
        raise RowError(str(exc), email=row.email) from None
    except (DataError, IntegrityError) as exc:  # contact_upsert's savepoint was rolled back
        raise RowError(f"The row can not be stored: {exc}".strip(), email=row.email) from None
    known[row.email] = contact
    return "created" if created else "updated"


def _bulk_batch(job: ContactJob) -> bool:
    selection = job.payload
    if selection["mode"] == "ids":
        ids = selection["contactIds"][job.done : job.done + BATCH_SIZE]
        found = {str(c.pk): c for c in Contact.objects.filter(pk__in=ids)}
        contacts: list[tuple[str, Contact | None]] = [(pk, found.get(pk)) for pk in ids]
        finished = job.done + len(ids) >= len(selection["contactIds"])
    else:
        query = _query_contacts(selection).order_by("pk")
        if job.cursor:
            query = query.filter(pk__gt=uuid.UUID(job.cursor))
        page = list(query[:BATCH_SIZE])
        contacts = [(str(c.pk), c) for c in page]
        if page:
            job.cursor = str(page[-1].pk)
        finished = len(page) < BATCH_SIZE
    result = job.result or _bulk_result(job.kind, job.total)
    for pk, contact in contacts:
        if contact is None:
            result["failureCount"] += 1
            _add_error(result, {"contactId": pk, "error": "No contact with this id."})
            continue
        if job.kind == ContactJob.DELETE:
            contact_privacy_erase(contact=contact, by=f"bulk delete {job.pk}")
            result["successCount"] += 1
        elif contact_set_subscribed(contact=contact, subscribed=job.kind == ContactJob.SUBSCRIBE):
            result["successCount"] += 1
        else:
            result["unchangedCount"] += 1
    job.done += len(contacts)
    job.result = result
    return finished


# --- The sweep -------------------------------------------------------------------------------


def contact_jobs_recover(*, now: datetime | None = None, limit: int = 100) -> int:
    """Queues again unfinished jobs whose progress has not moved for
    CONTACT_JOB_STALL_SECONDS (their task was lost with its worker, or stopped on an error);
    returns how many. A job still being worked on meanwhile is safe: runs take the job's lock
    per batch and continue from its committed progress."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=_stall_seconds())
    stalled = list(
        ContactJob.objects.filter(state__in=ContactJob.UNFINISHED, updated_at__lt=cutoff)
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
    queued = 0
    for pk in stalled:
        with transaction.atomic():
            # Touching updated_at leaves the job alone for another stall period.
            if ContactJob.objects.filter(
                pk=pk, state__in=ContactJob.UNFINISHED, updated_at__lt=cutoff
            ).update(updated_at=now):
                _enqueue(pk)
                queued += 1
    if queued:
        log.warning("re-queued %d contact job(s) whose progress had stalled", queued)
    return queued


# --- Reading jobs ----------------------------------------------------------------------------


def contact_job_status(job: ContactJob) -> dict[str, Any]:
    """A job as the API and the admin's progress page show it (Plunk's fields first)."""
    return {
        "id": str(job.pk),
        "kind": job.kind,
        "state": job.state,
        "progress": job.progress,
        "processed": job.done,
        "total": job.total,
        "result": job.result,
        "failedReason": job.failed_reason if job.state == ContactJob.FAILED else None,
        "createdAt": job.created_at.isoformat(),
        "finishedAt": job.finished_at.isoformat() if job.finished_at else None,
    }
