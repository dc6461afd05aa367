"""The only code that moves executions: start, resume, claim, advance, cancel, fail.

State of a run (besides `status`):
- `current_step` empty, no `pending_branch`: at the trigger, about to enter the entry step.
- `current_step` S, `pending_branch` B: S is done with outcome B; follow B next.
- `current_step` S, no `pending_branch`: S was entered. RUNNING: its visit (a StepRun with
  status "started") is in progress or was interrupted; WAITING: S is a Delay/Wait for Event.

Every change is a version-checked UPDATE, so a duplicate or stale task is a no-op. Due work is
found through `wake_at`: fresh and resumed runs are due now, waits when their timer ends. The
clock claims due rows and enqueues them in the same transaction; a run whose worker vanished
is found by its expired lease and made due again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from config.logcontext import log_context
from contacts_app.models import Contact, Event
from workflows_app import shutdown
from workflows_app.graph import step_document_config
from workflows_app.models import Execution, Step, StepRun, Transition, Workflow
from workflows_app.steps import STEP_TYPES
from workflows_app.steps.base import Outcome, RunContext, StepFailed, StepRetry, StepType

log = logging.getLogger(__name__)

RUNNING, WAITING = Execution.RUNNING, Execution.WAITING

# --- Starting and resuming (also as SQL, for /v1/track's single statement) -------------------

# CTE members `started` and `resumed` for a statement that has `c` (the contact id) and `e`
# (the event id) and parameters now/event/event_data. Same rules as executions_start/resume:
# enabled workflows with this trigger; without re-entry only if the contact never entered;
# never a second active run (the partial unique indexes decide under concurrency).
START_AND_RESUME_SQL = """
started AS (
  INSERT INTO workflows_app_execution
    (workflow_id, contact_id, trigger_id, status, current_step_id, pending_branch, context,
     wake_at, waiting_for, exit_reason, error, once, version, started_at, updated_at)
  SELECT w.id, e.contact_id, e.id, 'RUNNING', NULL, '', %(event_data)s::jsonb,
         %(now)s, '', '', '', NOT w.allow_reentry, 0, %(now)s, %(now)s
  FROM workflows_app_workflow w, e
  WHERE w.trigger_event = %(event)s AND w.enabled
    AND (w.allow_reentry OR NOT EXISTS (
      SELECT 1 FROM workflows_app_execution p
      WHERE p.workflow_id = w.id AND p.contact_id = e.contact_id))
  ON CONFLICT DO NOTHING
  RETURNING id
),
resumed AS (
  UPDATE workflows_app_execution x
  SET status = 'RUNNING', pending_branch = 'event', waiting_for = '', wake_at = %(now)s,
      -- Plunk's merge: the event's data at the top level, and still under its name.
      context = x.context || %(event_data)s::jsonb
                || jsonb_build_object(%(event)s::text, %(event_data)s::jsonb),
      version = x.version + 1, updated_at = %(now)s
  FROM e
  WHERE x.contact_id = e.contact_id AND x.status = 'WAITING' AND x.waiting_for = %(event)s
    AND x.wait_started_at <= %(now)s
  RETURNING x.id
)"""


def executions_start(*, contact: Contact, event: Event, now: datetime) -> int:
    """Starts every enabled workflow triggered by `event` for `contact`; returns how many."""
    started = 0
    for workflow in Workflow.objects.filter(
        trigger_event=event.name, trigger_type=Workflow.EVENT, enabled=True
    ):
        if (
            not workflow.allow_reentry
            and Execution.objects.filter(workflow=workflow, contact=contact).exists()
        ):
            continue
        try:
            with transaction.atomic():
                Execution.objects.create(
                    workflow=workflow,
                    contact=contact,
                    trigger=event,
                    status=RUNNING,
                    context=dict(event.data),
                    wake_at=now,
                    once=not workflow.allow_reentry,
                    started_at=now,
                    updated_at=now,
                )
            started += 1
        except IntegrityError:
            pass  # an active run exists, or a concurrent call won the entry
    return started


class StartRefused(ValueError):
    """A run was not started; `code` says why (the API's 409 code), the message explains."""

    code = "start_refused"


class WorkflowDisabled(StartRefused):
    code = "workflow_disabled"


class ReentryRefused(StartRefused):
    code = "reentry_refused"


def _reentry_refusal(workflow: Workflow, contact: Contact) -> ReentryRefused | None:
    active = (
        Execution.objects.filter(workflow=workflow, contact=contact, status__in=Execution.ACTIVE)
        .values_list("pk", flat=True)
        .first()
    )
    if active is not None:
        return ReentryRefused(
            f"{contact.email} already has an active run of '{workflow.name}' (execution "
            f"#{active}); a contact never has two at once. Cancel it or wait for it to end."
        )
    if not workflow.allow_reentry and (
        Execution.objects.filter(workflow=workflow, contact=contact).exists()
    ):
        return ReentryRefused(
            f"{contact.email} has already entered '{workflow.name}', and re-entry is off for "
            "this workflow (a contact enters at most once, ever)."
        )
    return None


def execution_start_manual(
    *, workflow: Workflow, contact: Contact, context: dict[str, Any], now: datetime
) -> Execution:
    """Starts one run of `workflow` for `contact` now, with `context` as its context (no trigger
    event): the API's POST .../executions and the admin's "start for these contacts". Works for
    manual and event workflows alike. The same entry rules as a tracked event: the workflow
    must be enabled (else WorkflowDisabled); without re-entry a contact enters once, ever, and
    never two active runs at once (else ReentryRefused; the database's unique indexes decide
    under concurrency). The clock hands the new run to a worker (it is due now).

    The workflow's row is locked while the run is created, so a disable, a delete or a draft
    edit (which all lock it) happens wholly before or after: never a run started on a workflow
    that was disabled or deleted a moment ago."""
    try:
        with transaction.atomic():
            current = Workflow.objects.select_for_update(no_key=True).filter(pk=workflow.pk).first()
            if current is None or not current.enabled:
                raise WorkflowDisabled(
                    f"Workflow '{workflow.name}' is disabled: enable it before starting runs."
                )
            if refusal := _reentry_refusal(current, contact):
                raise refusal
            return Execution.objects.create(
                workflow=current,
                contact=contact,
                trigger=None,
                status=RUNNING,
                context=dict(context),
                wake_at=now,
                once=not current.allow_reentry,
                started_at=now,
                updated_at=now,
            )
    except IntegrityError:
        # A concurrent start won (an active run, or the one entry without re-entry).
        refusal = _reentry_refusal(workflow, contact)
        raise refusal or ReentryRefused(
            f"{contact.email} could not enter '{workflow.name}': another run started at the "
            "same moment."
        ) from None


def executions_resume(*, contact: Contact, event: Event, now: datetime) -> int:
    """Resumes this contact's runs waiting for `event` (branch `event`); returns how many."""
    resumed = 0
    waiting = Execution.objects.filter(
        contact=contact, status=WAITING, waiting_for=event.name, wait_started_at__lte=now
    ).values_list("id", "version", "context")
    for pk, version, context in waiting:
        resumed += Execution.objects.filter(pk=pk, version=version, status=WAITING).update(
            status=RUNNING,
            pending_branch="event",
            waiting_for="",
            wake_at=now,
            context={**context, **event.data, event.name: event.data},
            version=version + 1,
            updated_at=now,
        )
    return resumed


# --- The clock: claiming due runs -------------------------------------------------------------

# The due rows are picked once, in a materialized CTE. As a subquery in FROM, the planner may
# put them on the inner side of a nested loop (it does when the table's statistics say it is
# tiny) and run the LIMIT ... SKIP LOCKED again for every outer row; each rescan skips the rows
# this statement already updated and returns new ones, so the claim ignored its limit.
_CLAIM_SQL = """
WITH due AS MATERIALIZED (
  SELECT id FROM workflows_app_execution
  WHERE wake_at <= %(now)s AND status IN ('RUNNING', 'WAITING')
  ORDER BY wake_at LIMIT %(limit)s
  FOR UPDATE SKIP LOCKED
)
UPDATE workflows_app_execution x SET
  pending_branch = CASE
    WHEN x.status = 'WAITING' AND x.waiting_for <> '' THEN 'timeout'
    WHEN x.status = 'WAITING' THEN 'next'
    ELSE x.pending_branch END,
  status = 'RUNNING', waiting_for = '', wake_at = NULL, lease_until = %(lease)s,
  version = x.version + 1, updated_at = %(now)s
FROM due
WHERE x.id = due.id
RETURNING x.id
"""


def executions_claim_due(*, now: datetime, limit: int) -> list[int]:
    """Claims up to `limit` due runs for a worker (call inside a transaction).

    A WAITING run whose timer ended becomes RUNNING with its branch decided: `timeout` for a
    Wait for Event, `next` for a Delay. A resuming event and a timeout race for the same row;
    both are conditional on status WAITING, so exactly one wins.
    """
    lease = now + timedelta(seconds=settings.ENGINE_LEASE_SECONDS)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_CLAIM_SQL, {"now": now, "lease": lease, "limit": limit})
            return [row[0] for row in cursor.fetchall()]
    # SQLite: writers are serialised, so conditional updates one by one are enough.
    claimed = []
    due = (
        Execution.objects.filter(wake_at__lte=now, status__in=Execution.ACTIVE)
        .order_by("wake_at")
        .values_list("id", "status", "waiting_for", "version", "pending_branch")[:limit]
    )
    for pk, status, waiting_for, version, pending in list(due):
        if status == WAITING:
            pending = "timeout" if waiting_for else "next"
        if Execution.objects.filter(pk=pk, version=version, status=status).update(
            status=RUNNING,
            pending_branch=pending,
            waiting_for="",
            wake_at=None,
            lease_until=lease,
            version=version + 1,
            updated_at=now,
        ):
            claimed.append(pk)
    return claimed


def executions_recover(*, now: datetime) -> int:
    """Makes runs whose worker vanished (lease expired while RUNNING) due again."""
    return Execution.objects.filter(
        Q(lease_until__lt=now) | Q(lease_until__isnull=True),
        status=RUNNING,
        wake_at__isnull=True,
    ).update(wake_at=now, lease_until=None, version=F("version") + 1, updated_at=now)


# --- Graphs, cached per process while their version stands ------------------------------------


@dataclass(frozen=True)
class GraphStep:
    id: int
    key: str
    name: str
    kind: StepType
    config: Any
    model: Step


@dataclass(frozen=True)
class Graph:
    version: int
    steps: dict[int, GraphStep]
    edges: dict[tuple[int | None, str], int]

    def next(self, step_id: int | None, branch: str) -> int | None:
        return self.edges.get((step_id, branch))


_graphs: dict[int, Graph] = {}


def graph_for(workflow: Workflow) -> Graph:
    """The workflow's steps and edges. Safe to cache: a graph can not change while any of its
    runs is active (locking, enforced by database triggers), and every change of a step or
    transition bumps graph_version (the same triggers), whatever path made it."""
    cached = _graphs.get(workflow.pk)
    if cached is not None and cached.version == workflow.graph_version:
        return cached
    steps = {}
    for step in Step.objects.filter(workflow=workflow).select_related("template"):
        kind = STEP_TYPES[step.type]
        config = kind.parse_config(step_document_config(step))
        steps[step.pk] = GraphStep(step.pk, step.key, step.name, kind, config, step)
    edges = {
        (t.from_step_id, t.branch): t.to_step_id
        for t in Transition.objects.filter(workflow=workflow)
    }
    graph = Graph(workflow.graph_version, steps, edges)
    _graphs[workflow.pk] = graph
    return graph


# --- Advancing a run --------------------------------------------------------------------------


# Step visits are written on every commit. On PostgreSQL they skip the ORM's bulk_create (its
# UNNEST arrays and per-field preparation cost more CPU than the database spends on the rows).
_RUN_FIELDS = (
    "execution_id",
    "step_id",
    "step_key",
    "step_type",
    "status",
    "branch",
    "output",
    "error",
    "attempts",
    "message_id",
    "started_at",
    "finished_at",
)
_RUN_ROW = "(" + ", ".join("%s::jsonb" if f == "output" else "%s" for f in _RUN_FIELDS) + ")"
_RUN_MUTABLE = ("status", "branch", "output", "error", "attempts", "message_id", "finished_at")


def _run_value(run: StepRun, field: str) -> Any:
    value = getattr(run, field)
    if field == "output" and value is not None:
        return json.dumps(value)
    return value


def _runs_insert(runs: list[StepRun]) -> None:
    if connection.vendor != "postgresql":
        StepRun.objects.bulk_create(runs)
        return
    sql = (
        f"INSERT INTO {StepRun._meta.db_table} ({', '.join(_RUN_FIELDS)}) "
        f"VALUES {', '.join([_RUN_ROW] * len(runs))} RETURNING id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_run_value(run, f) for run in runs for f in _RUN_FIELDS])
        ids = [row[0] for row in cursor.fetchall()]
    for run, pk in zip(runs, ids, strict=True):
        run.pk = pk
        run._state.adding, run._state.db = False, connection.alias


def _run_update(run: StepRun) -> None:
    if connection.vendor != "postgresql":
        run.save()
        return
    assignments = ", ".join(
        f"{f} = %s::jsonb" if f == "output" else f"{f} = %s" for f in _RUN_MUTABLE
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {StepRun._meta.db_table} SET {assignments} WHERE id = %s",
            [*(_run_value(run, f) for f in _RUN_MUTABLE), run.pk],
        )


class _Lost(Exception):
    """The run changed under us (cancelled, or taken by another worker): stop quietly."""


class _Advance:
    """One worker's pass over one execution, until it waits, ends, or is lost.

    Steps without side effects are run in memory and written together; a step with side effects
    has its visit recorded (committed) before it runs, and its outcome is written with the
    run's next write.
    """

    def __init__(self, execution: Execution, graph: Graph, now: datetime):
        self.ex = execution
        self.graph = graph
        self.now = now
        self.new_runs: list[StepRun] = []
        self.changed_runs: list[StepRun] = []
        self.close_waiting_as: str = ""
        self.fields: set[str] = set()
        self.steps = 0

    def set(self, **values: Any) -> None:
        for name, value in values.items():
            setattr(self.ex, name, value)
            self.fields.add(name)

    def commit(self, *, lease: bool = True) -> None:
        """Writes the run and its step visits; raises _Lost if the run changed meanwhile.

        A RUNNING run's lease starts again from the real current time (not from when this pass
        began): each step with a side effect, bounded well below the lease (settings check
        it), then always ends before the lease does. `lease=False` hands the run back.
        """
        ex = self.ex
        values = {name: getattr(ex, name) for name in self.fields}
        values.update(
            version=ex.version + 1,
            updated_at=self.now,
            lease_until=timezone.now() + timedelta(seconds=settings.ENGINE_LEASE_SECONDS)
            if ex.status == RUNNING and lease
            else None,
        )
        with transaction.atomic():
            if not Execution.objects.filter(pk=ex.pk, version=ex.version, status=RUNNING).update(
                **values
            ):
                raise _Lost()
            if self.close_waiting_as:
                StepRun.objects.filter(execution=ex, status=StepRun.WAITING).update(
                    status=StepRun.COMPLETED, branch=self.close_waiting_as, finished_at=self.now
                )
            if self.new_runs:
                _runs_insert(self.new_runs)
            for run in self.changed_runs:
                _run_update(run)
        ex.version += 1
        self.fields.clear()
        self.new_runs, self.changed_runs, self.close_waiting_as = [], [], ""

    def record(self, run: StepRun) -> None:
        if run.pk is None:
            if run not in self.new_runs:
                self.new_runs.append(run)
        elif run not in self.changed_runs:
            self.changed_runs.append(run)

    def release(self) -> None:
        """Hands the run back, due at once (the worker is stopping): the next worker to look
        carries on from here, with no lease to wait for."""
        self.set(wake_at=timezone.now())
        self.commit(lease=False)

    def finish(self, status: str, *, reason: str = "", error: str = "") -> None:
        self.set(
            status=status,
            exit_reason=reason,
            error=error,
            finished_at=self.now,
            wake_at=None,
            waiting_for="",
        )
        self.commit()

    def run(self, open_run: StepRun | None) -> None:
        ex, graph = self.ex, self.graph
        current = graph.steps.get(ex.current_step_id) if ex.current_step_id else None
        if ex.pending_branch and current is not None and current.kind.waits:
            # Back from a wait: its visit ends with the branch the event or timer chose.
            self.close_waiting_as = ex.pending_branch
        while True:
            if ex.current_step_id is None or ex.pending_branch:
                target = graph.next(ex.current_step_id, ex.pending_branch or "next")
                if target is None:
                    return self.finish(Execution.COMPLETED)
                self.set(current_step_id=target, pending_branch="")
                open_run = None
            assert ex.current_step_id is not None
            step = graph.steps[ex.current_step_id]
            self.steps += 1
            if self.steps > settings.ENGINE_MAX_STEPS_PER_ADVANCE:
                return self.finish(
                    Execution.FAILED,
                    error=f"Stopped after {settings.ENGINE_MAX_STEPS_PER_ADVANCE} steps in one "
                    "pass (ENGINE_MAX_STEPS_PER_ADVANCE): the workflow seems to loop.",
                )
            run = open_run or StepRun(
                execution=ex,
                step_id=step.id,
                step_key=step.key,
                step_type=step.kind.type,
                started_at=self.now,
            )
            open_run = None
            if step.kind.side_effects and shutdown.requested():
                # Stopping: the step before this one is done; this one is not begun.
                return self.release()
            if step.kind.side_effects:
                # The visit exists before its side effect happens, and the lease runs from now
                # (also for a retried visit: its task may have waited in the queue).
                if run.pk is None:
                    self.record(run)
                self.commit()
            with log_context(step_key=step.key):
                done = self.visit(step, run)
            if done:
                return

    def visit(self, step: GraphStep, run: StepRun) -> bool:
        """Runs one step; returns True when this pass is over (wait, end, retry later)."""
        ex = self.ex
        ctx = RunContext(
            execution=ex,
            contact=ex.contact,
            step=step.model,
            step_run=run,
            config=step.config,
            now=self.now,
        )
        try:
            outcome: Outcome = step.kind.run(ctx)
        except StepRetry as retry:
            run.attempts += 1
            run.error = str(retry)[:5000]
            self.record(run)
            self.set(wake_at=retry.retry_at)
            self.commit()
            return True
        except Exception as exc:  # noqa: BLE001 - any step error fails this run only
            message = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, StepFailed):
                log.exception("step %s of execution %s crashed", step.key, ex.pk)
            run.status, run.error, run.finished_at = StepRun.FAILED, message[:5000], self.now
            run.attempts += 1
            self.record(run)
            self.finish(
                Execution.FAILED, error=f"Step '{step.name or step.key}' failed: {message}"[:5000]
            )
            return True

        run.output = outcome.output
        run.attempts += 1
        if outcome.message_id is not None:
            run.message_id = outcome.message_id
        if outcome.context_update:
            self.set(context={**ex.context, **outcome.context_update})
        self.record(run)
        if outcome.kind == "next":
            run.status = StepRun.SKIPPED if outcome.skipped else StepRun.COMPLETED
            run.branch, run.finished_at = outcome.branch, self.now
            self.set(pending_branch=outcome.branch)
            # Not committed on its own: the outcome is written with the run's next write (the
            # next side-effect step's visit, a wait or the end). A worker dying in between
            # leaves this visit "started", and the retry repeats it harmlessly: the ledger key
            # stops a second email, a webhook is at-least-once with a stable id, contact
            # writes are absolute. That saves a transaction per side-effect step.
            return False
        if outcome.kind == "exit":
            run.status, run.finished_at = StepRun.COMPLETED, self.now
            self.finish(Execution.EXITED, reason=outcome.reason)
            return True
        # A wait: the clock or a tracked event picks the run up again.
        run.status = StepRun.WAITING
        self.set(
            status=WAITING,
            wake_at=outcome.wake_at,
            waiting_for=outcome.event,
            wait_started_at=run.started_at,
        )
        self.commit()
        return True


def execution_advance(
    execution_id: int, *, now: datetime | None = None, loaded: Execution | None = None
) -> str:
    """Moves one run as far as it goes now. Returns its status afterwards ("" if untouched).

    `loaded` is the row read a moment ago (a batch reads its rows in one query); it may be
    stale, which is harmless: every write is checked against the version it was read at.
    """
    now = now or timezone.now()
    ex = loaded or (
        Execution.objects.select_related("workflow", "contact").filter(pk=execution_id).first()
    )
    if ex is None or ex.status != RUNNING or (ex.wake_at is not None and ex.wake_at > now):
        return ""
    # Every line logged while this run moves names it; the block ends with the pass, so nothing
    # carries over to the next run the worker takes.
    with log_context(execution_id=ex.pk, workflow_id=ex.workflow_id):
        return _advance(ex, now)


def _advance(ex: Execution, now: datetime) -> str:
    try:
        graph = graph_for(ex.workflow)
    except Exception as exc:  # noqa: BLE001 - e.g. a config saved before a rule tightened
        log.exception("cannot load the graph of workflow %s", ex.workflow_id)
        Execution.objects.filter(pk=ex.pk, version=ex.version, status=RUNNING).update(
            status=Execution.FAILED,
            error=f"Cannot load the workflow graph: {exc}",
            finished_at=now,
            wake_at=None,
            version=ex.version + 1,
            updated_at=now,
        )
        return Execution.FAILED
    open_run = None
    if ex.current_step_id is not None and not ex.pending_branch:
        # An interrupted visit (worker died, or a retry): carry on with the same StepRun, so its
        # side effect is recognised and not repeated.
        open_run = (
            StepRun.objects.filter(execution=ex, status=StepRun.STARTED).order_by("-id").first()
        )
        if ex.current_step_id not in graph.steps:
            open_run = None
    advance = _Advance(ex, graph, now)
    try:
        advance.run(open_run)
    except _Lost:
        log.info("execution %s changed while advancing (cancelled?); stopped", ex.pk)
        return ""
    return ex.status


def executions_release(rows: list[Execution], *, now: datetime) -> int:
    """Makes claimed runs that this worker will not start due again at once (it is stopping).
    Version-checked: a run that moved meanwhile is left alone."""
    if not rows:
        return 0
    match = Q()
    for ex in rows:
        match |= Q(pk=ex.pk, version=ex.version)
    return Execution.objects.filter(match, status=RUNNING, wake_at__isnull=True).update(
        wake_at=now, lease_until=None, version=F("version") + 1, updated_at=now
    )


def executions_advance(ids: list[int]) -> dict[str, int]:
    """A worker task's body: advance each run; one broken run never stops the others.

    When the worker is asked to stop, the runs it has not begun are handed back at once.
    """
    outcome: dict[str, int] = {}
    # One query for the batch instead of one per run.
    rows = Execution.objects.select_related("workflow", "contact").in_bulk(ids)
    for index, pk in enumerate(ids):
        if shutdown.requested():
            rest = [rows[i] for i in ids[index:] if i in rows]
            released = executions_release(rest, now=timezone.now())
            outcome["released"] = outcome.get("released", 0) + released
            log.info("stopping: handed back %d run(s) not started", released)
            break
        with log_context(execution_id=pk):
            try:
                status = execution_advance(pk, loaded=rows.get(pk)) if pk in rows else ""
            except Exception:  # noqa: BLE001
                log.exception("advancing execution %s failed; the sweep will retry it", pk)
                status = "error"
        outcome[status or "untouched"] = outcome.get(status or "untouched", 0) + 1
    return outcome


# --- Cancelling -------------------------------------------------------------------------------


def _cancel(queryset, *, by: str, now: datetime) -> int:
    with transaction.atomic():
        # Locked, so the step-run update below only touches runs this call really cancels.
        ids = list(
            queryset.filter(status__in=Execution.ACTIVE)
            .select_for_update()
            .values_list("id", flat=True)
        )
        count = Execution.objects.filter(pk__in=ids, status__in=Execution.ACTIVE).update(
            status=Execution.CANCELLED,
            wake_at=None,
            waiting_for="",
            lease_until=None,
            exit_reason=f"Cancelled by {by}" if by else "Cancelled",
            finished_at=now,
            version=F("version") + 1,
            updated_at=now,
        )
        # A visit in progress (a worker mid-step) or a wait ends here too, so the history
        # shows where the run stopped.
        StepRun.objects.filter(
            execution_id__in=ids, status__in=(StepRun.WAITING, StepRun.STARTED)
        ).update(status=StepRun.CANCELLED, finished_at=now)
    return count


def execution_cancel(*, execution: Execution, by: str = "", now: datetime | None = None) -> bool:
    """Cancels one run if it is still active. A worker in the middle of it stops after the step
    it is in (its next version-checked write fails)."""
    return bool(
        _cancel(Execution.objects.filter(pk=execution.pk), by=by, now=now or timezone.now())
    )


def executions_cancel(*, ids: list[int], by: str = "", now: datetime | None = None) -> int:
    """Cancels the active runs among `ids` in one transaction; returns how many."""
    return _cancel(Execution.objects.filter(pk__in=ids), by=by, now=now or timezone.now())


def executions_cancel_all(*, workflow: Workflow, by: str = "", now: datetime | None = None) -> int:
    """Cancels every active run of `workflow`; returns how many."""
    return _cancel(Execution.objects.filter(workflow=workflow), by=by, now=now or timezone.now())


def executions_cancel_for_contact(
    *, contact: Contact, by: str = "", now: datetime | None = None
) -> int:
    """Cancels every active run of `contact` (before erasing it); returns how many."""
    return _cancel(Execution.objects.filter(contact=contact), by=by, now=now or timezone.now())
