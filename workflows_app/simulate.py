"""The dry run: what a workflow would do to a contact, step by step, with nothing done.

It runs the real step code (each step type's `run()`) on an Execution and StepRuns that are
never saved, with the outside world replaced (RunContext.dry_run, simulate_effects.py): an
email is rendered as the real send would render it (same recipient rules) and recorded, not
sent; a webhook's request is built and signed as the real one would be and recorded, not
made, and the step goes on as if the receiver had answered 200 with an empty body; an Update
Contact changes only the dry run's copy of the contact. Nothing is written: no contact, event,
execution, step run or message, and no system event (`email.sent`...). As a second line of
defence the whole dry run runs in a transaction that is always rolled back (mail and HTTP never
go through the database, hence the stand-ins).

Outcomes mean what they mean to the engine (engine._Advance.visit): `next` follows its branch
(none: the run completes), `exit` ends it EXITED, a failure ends it FAILED with the engine's
error text. Time is virtual, starting now: a Delay passes at once and the clock jumps to its
end; a Wait for Event takes the first listed event of its name that arrives at or after the
wait began and no later than its timeout (each event resumes one wait at most), else its
timeout branch at the timeout. An event applies to the contact what /v1/track would (its
persistent data), at its time; it starts no run, of this workflow or any other. A send held
by the send policy (StepHold: quiet hours) moves the clock to the hold's end and runs the same
visit again, as the engine does. The dry run stops at a horizon: MAX_VISITS step visits or
HORIZON of virtual time. The request is parsed in simulate_request.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from contacts_app.models import Contact
from contacts_app.services import contact_data_changes
from workflows_app.engine import Graph, GraphStep, graph_for
from workflows_app.models import Execution, StepRun, Workflow
from workflows_app.simulate_effects import DryRunContext, DryRunEffects, contact_copy
from workflows_app.simulate_request import (
    HORIZON,
    MAX_EVENTS,
    SimulationInvalid,
    SimulationRequest,
    simulation_parse,
    track_data_split,
)
from workflows_app.steps.base import Outcome, StepFailed, StepHold, StepRetry
from workflows_app.track import event_name_reserved

__all__ = [
    "HORIZON",
    "MAX_EVENTS",
    "MAX_VISITS",
    "SimulationInvalid",
    "SimulationRequest",
    "simulation_parse",
    "workflow_simulate",
]

MAX_VISITS = 500
MAX_HOLDS = 10  # holds of one visit in a row (each ends a quiet period): more is a bug


# --- Running ----------------------------------------------------------------------------------


class _StillHeld(Exception):
    """A held visit whose hold outlasts the horizon: the run is WAITING there."""


class _DryRun:
    def __init__(self, workflow: Workflow, contact: Contact, req: SimulationRequest, now: datetime):
        self.workflow = workflow
        self.graph: Graph | None
        try:
            self.graph = graph_for(workflow)
        except Exception as exc:  # noqa: BLE001 - as the engine: the run fails with the reason
            self.graph, self.graph_error = None, f"Cannot load the workflow graph: {exc}"
        self.start = now
        self.t = 0.0  # virtual seconds since the start
        self.req = req
        self.capture = DryRunEffects(now)
        self.path: list[dict[str, Any]] = []
        self.pending = list(req.events)  # not yet applied to the contact
        self.used: dict[int, str] = {}  # events that resumed a wait: the step's key
        event_data, contact_data = track_data_split(req.trigger_data)
        if workflow.trigger_type != Workflow.EVENT or event_name_reserved(workflow.trigger_event):
            contact_data = {}  # a manual start's context, or a system event: no contact data
        self.ex = Execution(
            workflow=workflow,
            contact=contact,
            status=Execution.RUNNING,
            context=dict(event_data),
            started_at=now,
            updated_at=now,
        )
        self._write_contact_data(contact_data)

    def at(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)

    def _write_contact_data(self, data: dict[str, Any]) -> None:
        # /v1/track's write (contact_data_changes: null removes, "" is ignored), size unchecked:
        # the request's data was checked already.
        to_set, to_unset = contact_data_changes(data)
        merged = {**self.ex.contact.data, **to_set}
        for key in to_unset:
            merged.pop(key, None)
        self.ex.contact.data = merged

    def _events_until(self, seconds: float) -> None:
        """Applies to the contact what the events up to `seconds` write into it."""
        while self.pending and self.pending[0].after <= seconds:
            self._write_contact_data(self.pending.pop(0).contact_data)

    def run(self) -> dict[str, Any]:
        ex, graph = self.ex, self.graph
        if graph is None:  # e.g. a config saved before a rule tightened
            self.finish(Execution.FAILED, error=self.graph_error)
            return self.result("")
        current: int | None = None
        branch = "next"
        visits = since_wait = 0
        horizon = ""
        while True:
            target = graph.next(current, branch)
            if target is None:
                self.finish(Execution.COMPLETED)
                break
            if visits >= MAX_VISITS:
                horizon = f"Stopped after {MAX_VISITS} step visits (the dry run's limit)."
                break
            step = graph.steps[target]
            current, visits, since_wait = target, visits + 1, since_wait + 1
            if since_wait > settings.ENGINE_MAX_STEPS_PER_ADVANCE:
                # The engine's own guard (a pass of too many steps without a wait).
                self.finish(
                    Execution.FAILED,
                    error=f"Stopped after {settings.ENGINE_MAX_STEPS_PER_ADVANCE} steps in one "
                    "pass (ENGINE_MAX_STEPS_PER_ADVANCE): the workflow seems to loop.",
                )
                break
            entry: dict[str, Any] = {
                "step": step.key,
                "name": step.name,
                "type": step.kind.type,
                "branch": None,
                "at": self.t,
                "at_time": self.at(self.t).isoformat(),
                "detail": {},
            }
            self.path.append(entry)
            self._events_until(self.t)
            outcome = self.visit(step, visits, entry)
            if outcome is None:  # failed, or held past the horizon
                horizon = entry["detail"].get("horizon", "")
                break
            if outcome.context_update:
                ex.context = {**ex.context, **outcome.context_update}
            if outcome.kind == "exit":
                entry["detail"]["reason"] = outcome.reason
                self.finish(Execution.EXITED, reason=outcome.reason)
                break
            if outcome.kind == "next":
                branch = entry["branch"] = outcome.branch
                continue
            since_wait = 0
            waited = self.wait(outcome, entry)
            if waited is None:
                horizon = entry["detail"].get("horizon", "")
                break
            branch = entry["branch"] = waited
        return self.result(horizon)

    def visit(self, step: GraphStep, visit: int, entry: dict[str, Any]) -> Outcome | None:
        """Runs the step's own code; None when it failed (the run is then FAILED)."""
        ex = self.ex
        now = self.at(self.t)
        run = StepRun(
            execution=ex,
            step_id=step.id,
            step_key=step.key,
            step_type=step.kind.type,
            started_at=now,
        )
        ctx = DryRunContext(
            execution=ex,
            contact=ex.contact,
            step=step.model,
            step_run=run,
            config=step.config,
            now=now,
            dry_run=self.capture,
            visit=visit,
        )
        self.capture.step = step.key
        self.capture.contact_change = None
        emails, webhooks = len(self.capture.emails), len(self.capture.webhooks)
        before = dict(ex.context)
        try:
            outcome = self.run_step(step, ctx, entry)
        except _StillHeld:
            return None
        except StepRetry as retry:  # only the outside world fails for a while: not here
            message = f"{retry} (a real run would try again later)"
            entry["detail"]["error"] = message
            self.finish(Execution.FAILED, error=f"Step '{step.name or step.key}' failed: {message}")
            return None
        except Exception as exc:  # noqa: BLE001 - as the engine: any step error fails the run
            message = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
            entry["detail"]["error"] = message[:5000]
            self.finish(
                Execution.FAILED, error=f"Step '{step.name or step.key}' failed: {message}"[:5000]
            )
            return None
        entry["detail"].update(self.detail(step, outcome, before, emails=emails, webhooks=webhooks))
        if outcome.skipped:
            entry["skipped"] = True
        return outcome

    def run_step(self, step: GraphStep, ctx: DryRunContext, entry: dict[str, Any]) -> Outcome:
        """The step's run(); a hold (StepHold: quiet hours) moves the clock to its end and
        runs the same visit again, as the engine does (the visit's output says it was held)."""
        for _ in range(MAX_HOLDS):
            self.capture.now = ctx.now
            try:
                return step.kind.run(ctx)
            except StepHold as hold:
                until = (hold.until - self.start).total_seconds()
                entry["detail"].setdefault("held", []).append(
                    {"reason": hold.reason, "until": hold.until.isoformat(), "until_after": until}
                )
                if until > HORIZON.total_seconds():
                    self.still_waiting(entry["detail"], wake=until)
                    raise _StillHeld() from None
                self.t = max(self.t, until)
                ctx.now = self.at(self.t)
                ctx.step_run.output = {
                    "held_for": hold.reason,
                    "held_until": hold.until.isoformat(),
                }
                self._events_until(self.t)
        raise StepFailed(f"held {MAX_HOLDS} times in a row; the dry run gave up")

    def detail(
        self, step: GraphStep, outcome: Outcome, context: dict[str, Any], *, emails, webhooks
    ) -> dict[str, Any]:
        """What the panel shows for a visit: the step type's own account if it gives one
        (StepType.dry_run_detail: a Condition's values, a Split's weights), else an email's or
        webhook's index in the lists, a skip's reason, or the step's output."""
        own = step.kind.dry_run_detail(
            step.config, outcome, contact=self.ex.contact, context=context
        )
        if own is not None:
            return own
        if outcome.skipped:
            reason = (outcome.output or {}).get("skipped", "")
            return {"skipped": True, "reason": reason}
        detail: dict[str, Any] = {}
        if len(self.capture.emails) > emails:
            sent = self.capture.emails[-1]
            detail.update(email=emails, to=sent["to"], subject=sent["subject"])
        if len(self.capture.webhooks) > webhooks:
            call = self.capture.webhooks[-1]
            detail.update(webhook=webhooks, method=call["method"], url=call["url"])
        if self.capture.contact_change is not None:
            detail.update(self.capture.contact_change)
        if not detail and outcome.kind == "next" and outcome.output is not None:
            detail["output"] = outcome.output
        return detail

    def wait(self, outcome: Outcome, entry: dict[str, Any]) -> str | None:
        """Passes a Delay or Wait for Event in virtual time; returns the branch it ends with,
        or None when the run is still waiting at the horizon."""
        detail = entry["detail"]
        began = self.t
        limit = HORIZON.total_seconds()
        wake = (outcome.wake_at - self.start).total_seconds() if outcome.wake_at else None
        if outcome.kind == "wait_until":
            assert wake is not None
            detail.update(wake_at=self.at(wake).isoformat(), wake_after=wake)
            if wake > limit:
                self.still_waiting(detail, wake=wake)
                return None
            self.t = wake
            return "next"
        detail.update(
            event=outcome.event,
            timeout_at=self.at(wake).isoformat() if wake is not None else None,
        )
        for index, event in enumerate(self.req.events):
            if (
                index not in self.used
                and event.name == outcome.event
                and event.after >= began
                and (wake is None or event.after <= wake)
            ):
                self.used[index] = entry["step"]
                self.t = event.after
                self._events_until(self.t)
                # The engine's merge (executions_resume): the event's data at the top level,
                # and under its name.
                self.ex.context = {
                    **self.ex.context,
                    **event.data,
                    event.name: event.data,
                }
                detail.update(
                    received={"name": event.name, "after": event.after, "data": event.data},
                    resumed_at=self.at(event.after).isoformat(),
                )
                return "event"
        if wake is None or wake > limit:
            self.still_waiting(detail, wake=wake)
            return None
        self.t = wake
        return "timeout"

    def still_waiting(self, detail: dict[str, Any], *, wake: float | None) -> None:
        ex = self.ex
        ex.status = Execution.WAITING
        ex.waiting_for = detail.get("event", "")
        ex.wake_at = self.at(wake) if wake is not None else None
        if wake is None:
            detail["horizon"] = (
                f"Still waiting for '{ex.waiting_for}': no listed event of that name arrives "
                "after the wait began, and the wait has no timeout."
            )
        else:
            detail["horizon"] = (
                f"Still waiting at the horizon ({HORIZON.days} days): it would wake at "
                f"{self.at(wake).isoformat()}."
            )

    def finish(self, status: str, *, reason: str = "", error: str = "") -> None:
        self.ex.status, self.ex.exit_reason, self.ex.error = status, reason, error

    def result(self, horizon: str) -> dict[str, Any]:
        ex = self.ex
        return {
            "path": self.path,
            "status": ex.status,
            "exit_reason": ex.exit_reason,
            "error": ex.error,
            "emails": self.capture.emails,
            "webhooks": self.capture.webhooks,
            "context": ex.context,
            "contact": {
                "email": ex.contact.email,
                "subscribed": ex.contact.subscribed,
                "data": ex.contact.data,
            },
            "waiting": (
                {
                    "event": ex.waiting_for or None,
                    "wake_at": ex.wake_at.isoformat() if ex.wake_at else None,
                }
                if ex.status == Execution.WAITING
                else None
            ),
            "horizon": horizon or None,
            # The listed events in time order, each with the wait it resumed (or null).
            "events": [
                {"name": e.name, "after": e.after, "resumed": self.used.get(i)}
                for i, e in enumerate(self.req.events)
            ],
            "started_at": self.start.isoformat(),
            "ended_at": self.at(self.t).isoformat(),
        }


def simulation_contact(req: SimulationRequest) -> Contact:
    """The contact the dry run works on: a copy of the stored one (never saved), or one made
    up from the request. SimulationInvalid when the email names no contact."""
    if req.email is not None:
        stored = Contact.objects.filter(email=req.email).first()
        if stored is None:
            raise SimulationInvalid({"contact.email": f"No contact with email {req.email}."})
        return contact_copy(stored)
    now = timezone.now()
    return Contact(
        id=None,
        email=req.made_up_email,
        subscribed=req.subscribed,
        # As if stored: contact_data_changes' rules (null and "" values, reserved keys out).
        data=contact_data_changes(req.data)[0],
        created_at=now,
        updated_at=now,
    )


def workflow_simulate(
    *, workflow: Workflow, request: SimulationRequest, now: datetime | None = None
) -> dict[str, Any]:
    """The dry run of `workflow` for the request's contact and events; see the module's
    docstring. Works on disabled workflows too (that is what it is for). Raises
    SimulationInvalid for an unknown contact."""
    contact = simulation_contact(request)
    with transaction.atomic():
        try:
            return _DryRun(workflow, contact, request, now or timezone.now()).run()
        finally:
            # Nothing the dry run did may stay (it writes nothing; this makes sure).
            transaction.set_rollback(True)
