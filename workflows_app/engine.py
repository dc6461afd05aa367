"""The only code that moves executions: start, resume, claim, advance, cancel, fail.

State of a run (besides `status`):
- `current_step` empty, no `pending_branch`: at the trigger, about to enter the entry step.
- `current_step` S, `pending_branch` B: S is done with outcome B; follow B next.
- `current_step` S, no `pending_branch`: S was entered. RUNNING: its visit (a StepRun with
  status "started") is in progress or was interrupted; WAITING: S is a Delay/Wait for Event.
- `current_step` S, WAITING, `pending_branch` "held:<reason>": S's visit was held (StepHold,
  e.g. quiet hours) and runs again, the same visit, when `wake_at` comes.

Every change is a version-checked UPDATE, so a duplicate or stale task is a no-op. Due work is
found through `wake_at`: fresh and resumed runs are due now, waits when their timer ends. The
clock claims due rows and enqueues them in the same transaction; a run whose worker vanished
is found by its expired lease and made due again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from config import metrics
from config.logcontext import log_context
from contacts_app.models import Contact, Event
from workflows_app import shutdown
from workflows_app.graph import step_document_config
from workflows_app.models import Execution, Step, StepRun, Transition, Workflow
from workflows_app.steps import STEP_TYPES
from workflows_app.steps.base import (
    Outcome,
    RunContext,
    StepFailed,
    StepHold,
    StepRetry,
    StepType,
)

log = logging.getLogger(__name__)

RUNNING, WAITING = Execution.RUNNING, Execution.WAITING
# The pending_branch of a run WAITING because its step was held (StepHold), with the reason
# after it: when the hold ends, the claim clears it and the same visit runs again, where a
# Delay's run would follow `next`.
HOLD_PREFIX = "held:"

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
  SELECT id, status, wake_at FROM workflows_app_execution
  WHERE wake_at <= %(now)s AND status IN ('RUNNING', 'WAITING')
  ORDER BY wake_at LIMIT %(limit)s
  FOR UPDATE SKIP LOCKED
)
UPDATE workflows_app_execution x SET
  pending_branch = CASE
    WHEN x.status = 'WAITING' AND x.waiting_for <> '' THEN 'timeout'
    WHEN x.status = 'WAITING' AND starts_with(x.pending_branch, 'held:') THEN ''
    WHEN x.status = 'WAITING' THEN 'next'
    ELSE x.pending_branch END,
  status = 'RUNNING', waiting_for = '', wake_at = NULL, lease_until = %(lease)s,
  version = x.version + 1, updated_at = %(now)s
FROM due
WHERE x.id = due.id
RETURNING x.id, x.version, CASE WHEN due.status = 'WAITING' THEN due.wake_at END
"""


def executions_claim_due(*, now: datetime, limit: int) -> list[int]:
    """Claims up to `limit` due runs for a worker (call inside a transaction); returns their
    ids. See executions_claim."""
    return [claim.id for claim in executions_claim(now=now, limit=limit)]


@dataclass(frozen=True)
class Claim:
    id: int
    version: int  # the run's version as the claim left it: the task moves it only so
    due: datetime | None  # when its timer was due, for a run whose timer ended


def executions_claim(*, now: datetime, limit: int) -> list[Claim]:
    """Claims up to `limit` due runs for a worker (call inside a transaction); returns each
    run's id, its version after the claim, and for a run whose timer ended, when that timer
    was due.

    A WAITING run whose timer ended becomes RUNNING with its branch decided: `timeout` for a
    Wait for Event, `next` for a Delay. A resuming event and a timeout race for the same row;
    both are conditional on status WAITING, so exactly one wins.
    """
    lease = now + timedelta(seconds=settings.ENGINE_LEASE_SECONDS)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_CLAIM_SQL, {"now": now, "lease": lease, "limit": limit})
            return [Claim(*row) for row in cursor.fetchall()]
    # SQLite: writers are serialised, so conditional updates one by one are enough.
    claimed: list[Claim] = []
    due = (
        Execution.objects.filter(wake_at__lte=now, status__in=Execution.ACTIVE)
        .order_by("wake_at")
        .values_list("id", "status", "waiting_for", "version", "pending_branch", "wake_at")[:limit]
    )
    for pk, status, waiting_for, version, pending, wake_at in list(due):
        if status == WAITING:
            pending = (
                "timeout" if waiting_for else "" if pending.startswith(HOLD_PREFIX) else "next"
            )
        if Execution.objects.filter(pk=pk, version=version, status=status).update(
            status=RUNNING,
            pending_branch=pending,
            waiting_for="",
            wake_at=None,
            lease_until=lease,
            version=version + 1,
            updated_at=now,
        ):
            claimed.append(Claim(pk, version + 1, wake_at if status == WAITING else None))
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


# --- Advancing runs ---------------------------------------------------------------------------
#
# A worker task moves its runs together. Each run's pass is a generator that goes as far as it
# can in memory and yields whenever it has something to write: before a step with a side effect
# (its visit must exist first) and when it waits, ends or is handed back. The task writes what
# every run has ready in ONE transaction, then lets the runs that go on do their side effects,
# ENGINE_CONCURRENCY at a time in threads, and writes again as they come back. So a task costs a
# few transactions instead of one per run and step, and its emails and webhooks wait on the
# network together instead of one after another.

# What a pass yields: write, then go on with the step's side effect / write, and this pass is over.
_EFFECT, _DONE = True, False
# ... or, when the driver runs the step's side effect for several runs at once (a type with
# StepType.batch_size() > 1, e.g. Send Email to a provider with a batch API): here is the visit's
# RunContext (`_Advance.call`); resume me with its outcome in `_Advance.call_result`.
_CALL = "call"


class _Lost(Exception):
    """The run changed under us (cancelled, or taken by another worker): stop quietly."""


class _Advance:
    """One run's pass within a task, until it waits, ends, is handed back or is lost.

    Steps without side effects are run in memory and written with the next write; a step with
    side effects has its visit written before it runs, and its outcome is written with the
    run's next write.
    """

    def __init__(self, execution: Execution, graph: Graph, now: datetime, *, fixed_now: bool):
        self.ex = execution
        self.graph = graph
        self.now = now
        # A worker stamps each leg with the real time; a caller that passes `now` (tests, the
        # admin) gets exactly that time everywhere.
        self.fixed_now = fixed_now
        self.new_runs: list[StepRun] = []
        self.changed_runs: list[StepRun] = []
        self.close_waiting_as: str = ""
        self.fields: set[str] = set()
        self.keep_lease = True
        self.steps = 0
        self.visits = 0
        self.released = False
        self.lease_until: datetime | None = execution.lease_until
        self.pass_: Generator[bool | str] | None = None
        self.effect: StepType | None = None  # the step whose side effect comes next
        self.deferred = False  # its side effect waits for a thread (written some time before)
        self.verified = False  # ... and the driver has just checked the run is still ours
        self.grouped = False  # the driver runs the next side effect with others (_CALL)
        self.call: RunContext | None = None
        self.call_result: Outcome | Exception | None = None
        self.last: bool | str = _DONE

    # -- Pending writes

    def set(self, **values: Any) -> None:
        for name, value in values.items():
            setattr(self.ex, name, value)
            self.fields.add(name)

    def record(self, run: StepRun) -> None:
        if run.pk is None:
            if run not in self.new_runs:
                self.new_runs.append(run)
        elif run not in self.changed_runs:
            self.changed_runs.append(run)

    def written(self, lease_until: datetime | None) -> None:
        self.ex.version += 1
        self.ex.lease_until = self.lease_until = lease_until
        self.fields.clear()
        self.new_runs, self.changed_runs, self.close_waiting_as = [], [], ""

    def release(self) -> None:
        """Hands the run back, due at once (the worker is stopping): the next worker to look
        carries on from here, with no lease to wait for."""
        self.released = self.visits == 0
        self.set(wake_at=timezone.now())
        self.keep_lease = False

    def finish(self, status: str, *, reason: str = "", error: str = "") -> None:
        self.set(
            status=status,
            exit_reason=reason,
            error=error,
            finished_at=self.now,
            wake_at=None,
            waiting_for="",
        )

    # -- Driving the pass

    def resume(self) -> bool:
        """Runs the pass to its next write (in whichever thread calls it); returns False when
        the pass ended without one (it stopped: lease too short to begin a step)."""
        assert self.pass_ is not None
        if not self.fixed_now:
            self.now = timezone.now()
        with log_context(execution_id=self.ex.pk, workflow_id=self.ex.workflow_id):
            try:
                self.last = next(self.pass_)
            except StopIteration:
                return False
        return True

    def stop(self) -> None:
        if self.pass_ is not None:
            self.pass_.close()
            self.pass_ = None

    def run(self, open_run: StepRun | None) -> Generator[bool | str]:
        ex, graph = self.ex, self.graph
        current = graph.steps.get(ex.current_step_id) if ex.current_step_id else None
        if ex.pending_branch and current is not None and current.kind.waits:
            # Back from a wait: its visit ends with the branch the event or timer chose.
            self.close_waiting_as = ex.pending_branch
        while True:
            if ex.current_step_id is None or ex.pending_branch:
                target = graph.next(ex.current_step_id, ex.pending_branch or "next")
                if target is None:
                    self.finish(Execution.COMPLETED)
                    yield _DONE
                    return
                self.set(current_step_id=target, pending_branch="")
                open_run = None
            assert ex.current_step_id is not None
            step = graph.steps[ex.current_step_id]
            self.steps += 1
            if self.steps > settings.ENGINE_MAX_STEPS_PER_ADVANCE:
                self.finish(
                    Execution.FAILED,
                    error=f"Stopped after {settings.ENGINE_MAX_STEPS_PER_ADVANCE} steps in one "
                    "pass (ENGINE_MAX_STEPS_PER_ADVANCE): the workflow seems to loop.",
                )
                yield _DONE
                return
            run = open_run or StepRun(
                execution=ex,
                step_id=step.id,
                step_key=step.key,
                step_type=step.kind.type,
                started_at=self.now,
            )
            open_run = None
            if step.kind.side_effects:
                if shutdown.requested():
                    # Stopping: the step before this one is done; this one is not begun.
                    self.release()
                    yield _DONE
                    return
                # The visit exists before its side effect happens, and the lease runs from the
                # write (also for a retried visit: its task may have waited in the queue).
                if run.pk is None:
                    self.record(run)
                self.effect = step.kind
                yield _EFFECT
                if self.deferred:
                    # This visit waited for a free thread since it was written: the worker may
                    # have been asked to stop, or the run cancelled, meanwhile.
                    self.deferred = False
                    if shutdown.requested():
                        self.release()  # the visit is written: the next worker carries it on
                        yield _DONE
                        return
                    if (
                        not self.verified
                        and not Execution.objects.filter(
                            pk=ex.pk, version=ex.version, status=RUNNING
                        ).exists()
                    ):
                        raise _Lost()
                    self.verified = False
                if not self._lease_covers_a_step():
                    return
            self.visits += 1
            ctx = RunContext(
                execution=ex,
                contact=ex.contact,
                step=step.model,
                step_run=run,
                config=step.config,
                now=self.now,
            )
            if self.grouped and step.kind.side_effects:
                # The driver runs this visit's side effect beside others' (_CALL) and resumes
                # this pass with its outcome; the visit goes on below as it always does.
                self.grouped = False
                self.call = ctx
                yield _CALL
                self.call = None
            with log_context(step_key=step.key):
                done = self.visit(step, run, ctx)
            if done:
                yield _DONE
                return

    def _lease_covers_a_step(self) -> bool:
        """No step outlives its lease: one begins only while the lease has at least the longest
        a step may take left (the heartbeat renews it while the task runs). Otherwise the run
        is left alone; once its lease is over the sweep hands it on, and the visit recorded
        above is carried on by whoever takes it."""
        left = (self.lease_until - timezone.now()).total_seconds() if self.lease_until else 0
        if left >= settings.ENGINE_STEP_BOUND_SECONDS:
            return True
        log.warning(
            "execution %s: %.1f s of lease left, not enough to begin step; leaving it to the sweep",
            self.ex.pk,
            left,
        )
        return False

    def visit(self, step: GraphStep, run: StepRun, ctx: RunContext) -> bool:
        """Runs one step (or takes the outcome the driver got for it from the step type's
        run_many); returns True when this pass is over (wait, end, retry later)."""
        ex = self.ex
        kind = step.kind.type
        given, self.call_result = self.call_result, None
        try:
            if given is None:
                outcome: Outcome = step.kind.run(ctx)
            elif isinstance(given, Exception):
                raise given
            else:
                outcome = given
        except StepRetry as retry:
            run.attempts += 1
            run.error = str(retry)[:5000]
            self.record(run)
            self.set(wake_at=retry.retry_at)
            metrics.step_visit(kind, "retry")
            return True
        except StepHold as hold:
            # Not now, by rule: WAITING until the hold ends, then this same visit again (see
            # HOLD_PREFIX). Not an attempt: the visit stays "started", its output says why.
            run.output = {"held_for": hold.reason, "held_until": hold.until.isoformat()}
            self.record(run)
            self.set(
                status=WAITING,
                wake_at=hold.until,
                waiting_for="",
                wait_started_at=self.now,
                pending_branch=f"{HOLD_PREFIX}{hold.reason}"[:64],
            )
            metrics.step_visit(kind, "waiting")
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
            metrics.step_visit(kind, "failed")
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
            metrics.step_visit(kind, "skipped" if outcome.skipped else "completed")
            # Not written on its own: the outcome is written with the run's next write (the
            # next side-effect step's visit, a wait or the end). A worker dying in between
            # leaves this visit "started", and the retry repeats it harmlessly: the ledger key
            # stops a second email, a webhook is at-least-once with a stable id, contact
            # writes are absolute. That saves a write per side-effect step.
            return False
        if outcome.kind == "exit":
            run.status, run.finished_at = StepRun.COMPLETED, self.now
            self.finish(Execution.EXITED, reason=outcome.reason)
            metrics.step_visit(kind, "exited")
            return True
        # A wait: the clock or a tracked event picks the run up again.
        run.status = StepRun.WAITING
        self.set(
            status=WAITING,
            wake_at=outcome.wake_at,
            waiting_for=outcome.event,
            wait_started_at=run.started_at,
        )
        metrics.step_visit(kind, "waiting")
        return True


# -- Writing many runs at once

# On PostgreSQL, many rows are written with one statement whose parameters are one array per
# column (UNNEST): the statement's text stays the same whatever the number of rows, so the
# driver parses its placeholders once (thousands of placeholders in a VALUES list cost more
# CPU than the database spent on the rows), and the ORM's per-field preparation is skipped.
_RUN_FIELDS = (
    ("execution_id", "bigint"),
    ("step_id", "bigint"),
    ("step_key", "varchar"),
    ("step_type", "varchar"),
    ("status", "varchar"),
    ("branch", "varchar"),
    ("output", "jsonb"),
    ("error", "text"),
    ("attempts", "integer"),
    ("message_id", "bigint"),
    ("started_at", "timestamptz"),
    ("finished_at", "timestamptz"),
)
_RUN_MUTABLE = (
    ("status", "varchar"),
    ("branch", "varchar"),
    ("output", "jsonb"),
    ("error", "text"),
    ("attempts", "integer"),
    ("message_id", "bigint"),
    ("finished_at", "timestamptz"),
)
# What a pass may change on its run (besides version, lease and updated_at, always written).
_EXECUTION_FIELDS = (
    ("status", "varchar"),
    ("current_step_id", "bigint"),
    ("pending_branch", "varchar"),
    ("wake_at", "timestamptz"),
    ("waiting_for", "varchar"),
    ("wait_started_at", "timestamptz"),
    ("exit_reason", "text"),
    ("error", "text"),
    ("finished_at", "timestamptz"),
)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _run_value(run: StepRun, field: str) -> Any:
    value = getattr(run, field)
    return _json(value) if field == "output" else value


def _arrays(columns: Sequence[tuple[str, str]]) -> str:
    """`UNNEST(%s::type[], ...) AS v(name, ...)`; jsonb travels as text (the driver's JSON
    adaptation of each value would cost more) and is cast once in the database."""
    arrays = ", ".join(
        "%s::text[]::jsonb[]" if kind == "jsonb" else f"%s::{kind}[]" for _, kind in columns
    )
    return f"UNNEST({arrays}) AS v({', '.join(name for name, _ in columns)})"


def _by_column(rows: list[list[Any]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)]


def _update_from_values(
    table: str, columns: list[tuple[str, str]], rows: list[list[Any]], assign: str, match: str
) -> list[int]:
    """One UPDATE of many rows: `UPDATE table x SET <assign> FROM UNNEST(...) v(<columns>)
    WHERE <match> RETURNING x.id` (PostgreSQL)."""
    sql = f"UPDATE {table} x SET {assign} FROM {_arrays(columns)} WHERE {match} RETURNING x.id"
    with connection.cursor() as cursor:
        cursor.execute(sql, _by_column(rows, len(columns)))
        return [r[0] for r in cursor.fetchall()]


def _write_executions(advances: list[_Advance], lease: datetime) -> set[int]:
    """The version-checked update of every run; returns the ids written (the others moved)."""
    if connection.vendor != "postgresql":
        won = set()
        for adv in advances:
            ex = adv.ex
            values = {name: getattr(ex, name) for name in adv.fields}
            values.update(
                version=ex.version + 1,
                updated_at=adv.now,
                lease_until=lease if ex.status == RUNNING and adv.keep_lease else None,
            )
            if Execution.objects.filter(pk=ex.pk, version=ex.version, status=RUNNING).update(
                **values
            ):
                won.add(ex.pk)
        return won
    columns = [
        ("id", "bigint"),
        ("version", "integer"),
        *_EXECUTION_FIELDS,
        ("new_context", "boolean"),
        ("context", "jsonb"),
        ("lease_until", "timestamptz"),
        ("updated_at", "timestamptz"),
    ]
    rows = []
    for adv in advances:
        ex = adv.ex
        new_context = "context" in adv.fields
        rows.append(
            [
                ex.pk,
                ex.version,
                *(getattr(ex, name) for name, _ in _EXECUTION_FIELDS),
                new_context,
                _json(ex.context) if new_context else None,
                lease if ex.status == RUNNING and adv.keep_lease else None,
                adv.now,
            ]
        )
    assign = ", ".join(
        [
            *(f"{name} = v.{name}" for name, _ in _EXECUTION_FIELDS),
            "context = CASE WHEN v.new_context THEN v.context ELSE x.context END",
            "lease_until = v.lease_until",
            "updated_at = v.updated_at",
            "version = x.version + 1",
        ]
    )
    match = "x.id = v.id AND x.version = v.version AND x.status = 'RUNNING'"
    return set(_update_from_values(Execution._meta.db_table, columns, rows, assign, match))


def _write_step_runs(advances: list[_Advance]) -> None:
    """The step visits of runs just written: waits that ended, new visits, changed visits."""
    closing = [a for a in advances if a.close_waiting_as]
    new = [run for a in advances for run in a.new_runs]
    changed = [run for a in advances for run in a.changed_runs]
    table = StepRun._meta.db_table
    if connection.vendor != "postgresql":
        for adv in closing:
            StepRun.objects.filter(execution=adv.ex, status=StepRun.WAITING).update(
                status=StepRun.COMPLETED, branch=adv.close_waiting_as, finished_at=adv.now
            )
        if new:
            StepRun.objects.bulk_create(new)
        for run in changed:
            run.save()
        return
    if closing:
        _update_from_values(
            table,
            [("execution_id", "bigint"), ("branch", "varchar"), ("finished_at", "timestamptz")],
            [[a.ex.pk, a.close_waiting_as, a.now] for a in closing],
            "status = 'completed', branch = v.branch, finished_at = v.finished_at",
            "x.execution_id = v.execution_id AND x.status = 'waiting'",
        )
    if new:
        sql = (
            f"INSERT INTO {table} ({', '.join(name for name, _ in _RUN_FIELDS)}) "
            f"SELECT * FROM {_arrays(_RUN_FIELDS)} RETURNING id"
        )
        rows = [[_run_value(run, f) for f, _ in _RUN_FIELDS] for run in new]
        with connection.cursor() as cursor:
            cursor.execute(sql, _by_column(rows, len(_RUN_FIELDS)))
            ids = [row[0] for row in cursor.fetchall()]
        for run, pk in zip(new, ids, strict=True):
            run.pk = pk
            run._state.adding, run._state.db = False, connection.alias
    if changed:
        _update_from_values(
            table,
            [("id", "bigint"), *_RUN_MUTABLE],
            [[run.pk, *(_run_value(run, f) for f, _ in _RUN_MUTABLE)] for run in changed],
            ", ".join(f"{name} = v.{name}" for name, _ in _RUN_MUTABLE),
            "x.id = v.id",
        )


def _write(advances: list[_Advance]) -> list[_Advance]:
    """Writes what each run has ready, all in one transaction; returns the runs written. A run
    that changed meanwhile (cancelled, or taken by another worker) writes nothing, not even its
    step visits, and is left out.

    A RUNNING run's lease starts again from the real current time (not from when its pass
    began): a step with a side effect begins right after, with the whole lease ahead of it."""
    lease = timezone.now() + timedelta(seconds=settings.ENGINE_LEASE_SECONDS)
    with transaction.atomic():
        won = _write_executions(advances, lease)
        written = [a for a in advances if a.ex.pk in won]
        _write_step_runs(written)
    for adv in written:
        adv.written(lease if adv.ex.status == RUNNING and adv.keep_lease else None)
    return written


# -- Leases: renewed while the task holds its runs


class _Heartbeat:
    """Renews the lease of every run the task holds, every ENGINE_HEARTBEAT_SECONDS, from a
    thread of its own (with its own database connection), while steps run. A renewal touches
    only runs still RUNNING and not handed back (wake_at empty), and does not change their
    version: it never gets in the way of a write. If it fails (the database is away), the
    leases run out, and no step begins without enough lease left (_lease_covers_a_step)."""

    def __init__(self, advances: list[_Advance]):
        self.advances = advances
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopped.set()
        # A renewal stuck on the database must not hold the task: the thread is a daemon, and
        # closes its connection when the call returns.
        self.thread.join(timeout=5)

    def _loop(self) -> None:
        try:
            while not self.stopped.wait(settings.ENGINE_HEARTBEAT_SECONDS):
                held = {a.ex.pk: a for a in self.advances if a.pass_ is not None}
                if not held:
                    continue
                try:
                    renewed = executions_renew_leases({pk: a.ex.version for pk, a in held.items()})
                except Exception:  # noqa: BLE001 - the leases then run out; logged
                    log.exception("could not renew the leases of %d run(s)", len(held))
                    close_old_connections()
                    continue
                for pk, lease in renewed.items():
                    held[pk].lease_until = lease
        finally:
            connections.close_all()  # this thread's own connection


def executions_renew_leases(held: dict[int, int]) -> dict[int, datetime]:
    """Extends the lease of the runs a worker holds, given as {id: version}: only a run still
    at that version (so still this worker's), RUNNING and not handed back. A lease is never
    shortened (a write may have just set a later one). Returns the renewed runs' new lease
    ends. A run whose version moved meanwhile (this worker's own write, a cancel) is left out:
    its write set a lease, or it is not this worker's any more."""
    lease = timezone.now() + timedelta(seconds=settings.ENGINE_LEASE_SECONDS)
    if connection.vendor == "postgresql":
        sql = (
            f"UPDATE {Execution._meta.db_table} x "
            "SET lease_until = GREATEST(x.lease_until, %s) "
            "FROM UNNEST(%s::bigint[], %s::integer[]) AS v(id, version) "
            "WHERE x.id = v.id AND x.version = v.version AND x.status = 'RUNNING' "
            "AND x.wake_at IS NULL AND x.lease_until IS NOT NULL "
            "RETURNING x.id, x.lease_until"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [lease, list(held), list(held.values())])
            return dict(cursor.fetchall())
    renewed = {}
    for pk, version in held.items():
        still = Execution.objects.filter(
            pk=pk, version=version, status=RUNNING, wake_at__isnull=True, lease_until__isnull=False
        )
        if still.filter(lease_until__lt=lease).update(lease_until=lease):
            renewed[pk] = lease
    return renewed


# -- Side effects in threads

_pool: ThreadPoolExecutor | None = None
_pool_pid = _pool_size = 0


def _effects_pool() -> ThreadPoolExecutor | None:
    """This process's threads for side effects, or None to run them one at a time here.

    Threads only on PostgreSQL, outside a transaction: a thread has its own connection, which
    would not see rows the caller has not committed (a test's transaction), and SQLite writes
    one at a time anyway. Made after the worker process is forked, never inherited."""
    global _pool, _pool_pid, _pool_size
    if (
        settings.ENGINE_CONCURRENCY <= 1
        or connection.vendor != "postgresql"
        or connection.in_atomic_block
    ):
        return None
    if _pool is None or _pool_pid != os.getpid():
        _pool_size = settings.ENGINE_CONCURRENCY
        _pool = ThreadPoolExecutor(_pool_size, thread_name_prefix="effects")
        _pool_pid = os.getpid()
    return _pool


def effects_pool_close() -> None:
    """Stops this process's side-effect threads and closes their database connections (tests
    call it after each test, so a test database can be dropped; a worker's threads live as long
    as the worker)."""
    global _pool
    pool, _pool = _pool, None
    if pool is None or _pool_pid != os.getpid():
        return
    size = _pool_size
    # One job per thread: each waits at the barrier until every thread holds one, so each
    # thread closes its own connection exactly once.
    barrier = threading.Barrier(size)

    def close_own_connection() -> None:
        barrier.wait(timeout=10)
        connections.close_all()

    for _ in range(size):
        pool.submit(close_own_connection)
    pool.shutdown(wait=True)


# What a thread hands back for each run it moved: resume()'s answer, or what it raised.
_Moved = list[tuple[_Advance, bool | BaseException]]


def _resume_in_thread(adv: _Advance) -> _Moved:
    close_old_connections()  # a connection broken since this thread last used it is replaced
    try:
        return [(adv, adv.resume())]
    except Exception as exc:  # noqa: BLE001 - judged by the driver (_drive's `resumed`)
        return [(adv, exc)]


def _resume_group_in_thread(kind: StepType, advs: list[_Advance]) -> _Moved:
    close_old_connections()
    return _resume_group(kind, advs)


def _resume_group(kind: StepType, advs: list[_Advance]) -> _Moved:
    """Moves runs whose next step is `kind`'s, with that step's side effect for all of them in
    one `run_many` call (one provider call for their emails): each pass goes to the point of
    its visit (_CALL), the visits run together, then each pass goes on with its own outcome."""
    moved: _Moved = []
    if any(adv.deferred for adv in advs):
        # The check a deferred visit makes (is the run still ours?), in one query for all.
        current = dict(
            Execution.objects.filter(
                pk__in=[adv.ex.pk for adv in advs], status=RUNNING
            ).values_list("pk", "version")
        )
        for adv in advs:
            adv.verified = current.get(adv.ex.pk) == adv.ex.version
    calling: list[_Advance] = []
    for adv in advs:
        adv.grouped = True
        try:
            went_on = adv.resume()
        except Exception as exc:  # noqa: BLE001 - e.g. _Lost: judged by the driver
            moved.append((adv, exc))
            continue
        finally:
            adv.grouped = adv.verified = False
        if went_on and adv.last == _CALL:
            calling.append(adv)
        else:  # handed back, lost or stopped before its visit: the driver sees why
            moved.append((adv, went_on))
    if not calling:
        return moved
    results: list[Outcome | Exception]
    try:
        with log_context(step_type=kind.type):
            results = kind.run_many([adv.call for adv in calling if adv.call is not None])
        if len(results) != len(calling) or any(r is None for r in results):
            raise RuntimeError(f"run_many gave {len(results)} outcomes for {len(calling)} visits")
    except Exception as exc:  # noqa: BLE001 - a broken batch fails its visits, as run() would
        log.exception("running %d %s steps together failed", len(calling), kind.type)
        problem = f"{type(exc).__name__}: {exc}"
        results = [RuntimeError(problem) for _ in calling]
    for adv, result in zip(calling, results, strict=True):
        adv.call_result = result
        try:
            moved.append((adv, adv.resume()))
        except Exception as exc:  # noqa: BLE001 - judged by the driver
            moved.append((adv, exc))
    return moved


def _batch_size(kind: StepType, known: dict[StepType, int]) -> int:
    if kind not in known:
        known[kind] = kind.batch_size()
    return known[kind]


def _groups(advs: list[_Advance], size: int) -> list[list[_Advance]]:
    """`advs` cut into as few groups of at most `size` as possible, of even sizes."""
    count = -(-len(advs) // size)
    return [advs[i::count] for i in range(count)]


def _write_or_each(batch: list[_Advance], trouble: dict[_Advance, str]) -> set[_Advance]:
    """Writes the batch in one transaction; if that fails (a row the database refuses, a
    deadlock with a cancel), each run on its own, so one run's trouble is not every run's.
    Runs whose own write fails are marked "error" in `trouble` (the sweep retries them)."""
    try:
        return set(_write(batch))
    except Exception:  # noqa: BLE001 - e.g. the database went away; tried one by one below
        if len(batch) == 1:
            log.exception("writing execution %s failed; the sweep will retry it", batch[0].ex.pk)
            trouble[batch[0]] = "error"
            return set()
        log.warning("writing %d runs together failed; writing each alone", len(batch))
    written: set[_Advance] = set()
    for adv in batch:
        try:
            written.update(_write([adv]))
        except Exception:  # noqa: BLE001 - this run only
            log.exception("writing execution %s failed; the sweep will retry it", adv.ex.pk)
            trouble[adv] = "error"
    return written


def _drive(advances: list[_Advance]) -> dict[_Advance, str]:
    """Moves every run as far as it goes now; returns what went wrong for those that did not
    end normally ("lost", "error", "lease_short")."""
    trouble: dict[_Advance, str] = {}
    ready: list[_Advance] = []  # runs with a write to make

    def resumed(adv: _Advance, call: Callable[[], bool] | bool | BaseException) -> None:
        try:
            if isinstance(call, BaseException):
                raise call
            if call if isinstance(call, bool) else call():
                ready.append(adv)
            else:  # too little lease left to begin a step (_lease_covers_a_step)
                trouble[adv] = "lease_short"
                adv.stop()
        except _Lost:
            log.info("execution %s changed while advancing (cancelled?)", adv.ex.pk)
            trouble[adv] = "lost"
            adv.stop()
        except Exception:  # noqa: BLE001 - one broken run never stops the others
            log.exception("advancing execution %s failed; the sweep will retry it", adv.ex.pk)
            trouble[adv] = "error"
            adv.stop()

    # Every pass's first leg runs in memory: nothing touches the outside before its first write.
    for adv in advances:
        resumed(adv, adv.resume)
    pool = _effects_pool()
    in_flight: dict[Future[_Moved], list[_Advance]] = {}
    heartbeat = _Heartbeat(advances) if not connection.in_atomic_block else nullcontext()
    with heartbeat:
        while ready or in_flight:
            if ready:
                batch, ready[:] = sorted(ready, key=lambda a: a.ex.pk), []
                written = _write_or_each(batch, trouble)
                together: dict[StepType, list[_Advance]] = {}
                sizes: dict[StepType, int] = {}  # batch_size(), asked once per type and write
                for adv in batch:
                    if adv in trouble:  # its write failed: the sweep retries it
                        adv.stop()
                    elif adv not in written:
                        log.info("execution %s changed while advancing (cancelled?)", adv.ex.pk)
                        trouble[adv] = "lost"
                        adv.stop()
                    elif adv.last is _DONE:
                        adv.stop()
                    elif adv.effect is not None and _batch_size(adv.effect, sizes) > 1:
                        together.setdefault(adv.effect, []).append(adv)
                    elif pool is None or not (adv.effect and adv.effect.waits_on_network):
                        resumed(adv, adv.resume)
                    else:
                        adv.deferred = True
                        in_flight[pool.submit(_resume_in_thread, adv)] = [adv]
                for kind, advs in together.items():
                    for group in _groups(advs, sizes[kind]):
                        if pool is None:  # here and now, still one call for the group
                            for adv, result in _resume_group(kind, group):
                                resumed(adv, result)
                            continue
                        for adv in group:
                            adv.deferred = True
                        in_flight[pool.submit(_resume_group_in_thread, kind, group)] = group
                continue
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                advs = in_flight.pop(future)
                try:
                    moved = future.result()
                except Exception as exc:  # noqa: BLE001 - the thread's own code broke
                    moved = [(adv, exc) for adv in advs]
                for adv, result in moved:
                    resumed(adv, result)
    return trouble


def _prepare(ex: Execution, now: datetime, *, fixed_now: bool) -> _Advance | None:
    """The pass of one run, ready to go; None if there is nothing to do (or its graph can not
    be loaded: the run then fails with the reason)."""
    if ex.status != RUNNING or (ex.wake_at is not None and ex.wake_at > now):
        return None
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
        ex.status = Execution.FAILED
        return None
    open_run = None
    if ex.current_step_id is not None and not ex.pending_branch:
        # An interrupted visit (worker died, or a retry): carry on with the same StepRun, so its
        # side effect is recognised and not repeated.
        open_run = (
            StepRun.objects.filter(execution=ex, status=StepRun.STARTED).order_by("-id").first()
        )
        if ex.current_step_id not in graph.steps:
            open_run = None
    adv = _Advance(ex, graph, now, fixed_now=fixed_now)
    adv.pass_ = adv.run(open_run)
    return adv


def _advance_many(
    rows: list[Execution], now: datetime | None = None
) -> tuple[dict[int, str], dict[int, _Advance]]:
    """Moves the runs; returns each one's result (its status afterwards, "released", "lost",
    "error", "lease_short", or "" when there was nothing to do) and the passes by run."""
    start = now or timezone.now()
    results: dict[int, str] = {}
    advances: dict[int, _Advance] = {}
    for ex in rows:
        adv = _prepare(ex, start, fixed_now=now is not None)
        if adv is None:
            results[ex.pk] = Execution.FAILED if ex.status == Execution.FAILED else ""
        else:
            advances[ex.pk] = adv
    trouble = _drive(list(advances.values()))
    for pk, adv in advances.items():
        results[pk] = trouble.get(adv) or ("released" if adv.released else adv.ex.status)
    return results, advances


def execution_advance(
    execution_id: int, *, now: datetime | None = None, loaded: Execution | None = None
) -> str:
    """Moves one run as far as it goes now. Returns its status afterwards ("" if untouched).

    `loaded` is the row read a moment ago; it may be stale, which is harmless: every write is
    checked against the version it was read at.
    """
    ex = loaded or (
        Execution.objects.select_related("workflow", "contact").filter(pk=execution_id).first()
    )
    if ex is None:
        return ""
    results, _ = _advance_many([ex], now)
    status = results[ex.pk]
    return "" if status in ("lost", "error", "lease_short") else status


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


def executions_advance(
    ids: list[int], timers: dict[int, float] | None = None, versions: dict[int, int] | None = None
) -> dict[str, int]:
    """A worker task's body: moves its runs together; one broken run never stops the others.

    `versions` are the runs' versions as the clock's claim left them: a run that moved since
    (its lease ran out while this task waited in the queue, and it was handed to another
    worker or is due again) is not this task's any more, and is left alone ("stale").
    `timers` are the runs the clock handed out because their timer ended, with when it was due
    (a Unix time): how late each begins is recorded (lifecycle_timer_lateness_seconds). When
    the worker is asked to stop, runs not begun are handed back at once, due again.
    """
    rows = Execution.objects.select_related("workflow", "contact").in_bulk(ids)
    if versions is not None:
        rows = {
            pk: ex
            for pk, ex in rows.items()
            if ex.version == versions.get(pk) and ex.status == RUNNING and ex.wake_at is None
        }
    if shutdown.requested():
        released = executions_release(list(rows.values()), now=timezone.now())
        log.info("stopping: handed back %d run(s) not started", released)
        return {"released": released} if released else {}
    if timers:
        begun = time.time()
        for pk, due in timers.items():
            if int(pk) in rows:
                metrics.timer_lateness(max(0.0, begun - due))
    results, _ = _advance_many([rows[pk] for pk in ids if pk in rows])
    outcome: dict[str, int] = {}
    for pk in ids:
        status = results.get(pk, "") if pk in rows or versions is None else "stale"
        label = {"": "untouched", "lost": "untouched"}.get(status, status)
        outcome[label] = outcome.get(label, 0) + 1
    return outcome


# --- Cancelling -------------------------------------------------------------------------------


def _cancel(queryset, *, by: str, now: datetime) -> int:
    with transaction.atomic():
        # Locked, so the step-run update below only touches runs this call really cancels.
        ids = list(
            queryset.filter(status__in=Execution.ACTIVE)
            .order_by("pk")  # in id order, as workers write: no deadlock between the two
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
