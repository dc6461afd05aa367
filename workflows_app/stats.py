"""Per-step statistics of a workflow over a period: what the canvas overlays and
`GET /v1/workflows/<id>/stats` returns. One service for both (`workflow_stats`), and one parser
of the period and goal they take (`stats_query`).

What is counted, precisely:
- The period is [from, to): the executions STARTED in it. Every figure is about those runs
  (a run started before `from` counts nowhere, even if it moved on inside the period), so the
  figures of one period add up: a step's entered >= completed + skipped + failed + waiting.
- `executions`: those runs by their status now; `started_per_day`: by the day they started,
  in TIME_ZONE (UTC unless set).
- Per step of the current graph (matched by the step itself, not its key, as the canvas's
  live counts are): `entered` visits, and visits that `completed`, were `skipped`, `failed`;
  `waiting` is how many of the runs wait at that step now (a Delay, a Wait for Event, or a
  marketing send held for quiet hours). Visits still running (a send waiting to retry is one)
  or cancelled count only in `entered`.
- Send Email steps: the messages their visits wrote (StepRun.message), by the message's status
  now. A message's status only moves forward (sent < delivered < opened < clicked < bounced <
  complained, templates_app.services), so: `sent` = handed to the provider (any of those),
  `delivered` = delivered, opened, clicked or complained (a complaint comes from the inbox),
  `opened` = opened at least once or clicked (a click needs the message open, even when the
  open pixel was blocked), `clicked`, `bounced`; `unsubscribed` = messages that were the last
  one sent to their contact before a `contact.unsubscribed` event (the link in mail carries no
  message, so the unsubscribe goes to the mail that prompted it; a hard bounce or complaint
  unsubscribes too). A late bounce after an open counts as bounced, not opened: the status
  keeps the furthest. `skipped_reasons`: the skipped visits by their output's `reason` when
  it has one, else its `skipped` text (without a leading "skipped: ").
- Split steps, per branch: `entered` = visits that took the branch; over those runs,
  `completed` (now COMPLETED or EXITED), `failed` (FAILED), `waiting` (WAITING); the email
  figures and `skipped` are about the Send Email visits those runs made after the split (so a
  nested split's emails count in both splits' branches); `goal_reached` = the visits whose
  contact tracked the goal event at or after the split, and `goal_share` = goal_reached /
  entered (null without a goal or visits).

Cost: at most eight grouped queries whatever the number of steps and runs, each joining the
step runs to the period's executions (README gives timings for 100,000 runs). No query per
step or per run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, Exists, F, OuterRef, QuerySet
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce, Left, TruncDate
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from contacts_app.models import Event
from contacts_app.safejson import unstorable
from templates_app.models import Message
from workflows_app.event_names import current_event_name
from workflows_app.models import Execution, Step, StepRun, Workflow

DEFAULT_PERIOD = timedelta(days=30)
MAX_PERIOD = timedelta(days=366)
MAX_GOAL = 255  # an event name's length
MAX_REASON = 200  # characters of a skip's text that group it
UNSUBSCRIBED_EVENT = "contact.unsubscribed"
EARLIEST, LATEST = datetime(1000, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)
OUT_OF_RANGE = f"Out of range: years {EARLIEST.year} to {LATEST.year - 1}."
BAD_MOMENT = "Not a valid ISO 8601 date (2026-01-31) or date-time (2026-01-31T12:00:00Z)."

SEND_EMAIL, SPLIT = "send_email", "split"
VISIT_FIGURES = ("entered", "completed", "skipped", "failed", "waiting")
EMAIL_FIGURES = ("sent", "delivered", "opened", "clicked", "bounced", "unsubscribed")
# Message status -> the figures it counts in (see the module's docstring).
_EMAIL_STATUS_FIGURES: dict[str, tuple[str, ...]] = {
    Message.SENT: ("sent",),
    Message.DELIVERED: ("sent", "delivered"),
    Message.OPENED: ("sent", "delivered", "opened"),
    Message.CLICKED: ("sent", "delivered", "opened", "clicked"),
    Message.BOUNCED: ("sent", "bounced"),
    Message.COMPLAINED: ("sent", "delivered"),
}
_VISIT_STATUS_FIGURE = {
    StepRun.COMPLETED: "completed",
    StepRun.SKIPPED: "skipped",
    StepRun.FAILED: "failed",
}
_RUN_STATUS_FIGURE = {
    Execution.COMPLETED: "completed",
    Execution.EXITED: "completed",
    Execution.FAILED: "failed",
    Execution.WAITING: "waiting",
}


class StatsInputError(ValueError):
    """A bad `from`, `to` or `goal`: `field` names it, `message` says what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class StatsQuery:
    start: datetime
    end: datetime
    goal: str | None


# --- Input ----------------------------------------------------------------------------------


def _moment(raw: str, field: str, *, end: bool) -> datetime:
    """An ISO 8601 date or date-time. A date is midnight at its start in TIME_ZONE, except as
    `to`, where it is the end of that day: from=2026-01-01&to=2026-01-31 is all of January.
    A date-time without an offset is in TIME_ZONE."""
    raw = raw.strip()
    parsed: datetime | None
    try:
        day = parse_date(raw) if len(raw) <= 10 else None
        if day is not None:
            parsed = datetime.combine(day, time()) + (timedelta(days=1) if end else timedelta())
        else:
            parsed = parse_datetime(raw) if len(raw) <= 64 else None
    except (ValueError, OverflowError):  # well formed but impossible: 2026-02-30, year 9999 + 1
        parsed = None
    if parsed is None:
        raise StatsInputError(field, BAD_MOMENT)
    moment = timezone.make_aware(parsed) if timezone.is_naive(parsed) else parsed
    try:
        # In UTC: Python takes offsets up to 23:59, PostgreSQL only up to 15:59.
        moment = moment.astimezone(UTC)
    except OverflowError:  # past datetime's years 1-9999 in UTC: 9999-12-31T23:59:59-23:59
        raise StatsInputError(field, OUT_OF_RANGE) from None
    return _in_range(moment, field)


def _in_range(moment: datetime, field: str) -> datetime:
    # Far from datetime's limits, so moving it by a period or a time zone can not overflow.
    if not EARLIEST <= moment < LATEST:
        raise StatsInputError(field, OUT_OF_RANGE)
    return moment


def stats_query(params: Mapping[str, str], *, now: datetime) -> StatsQuery:
    """`from`, `to` and `goal` as both stats endpoints take them; raises StatsInputError naming
    the field at fault. Default: the 30 days up to now; at most 366 days. An empty `goal` is
    none; an older email event name means the current one, as everywhere names are taken."""
    raw_start, raw_end = params.get("from") or "", params.get("to") or ""
    end = _moment(raw_end, "to", end=True) if raw_end.strip() else now
    start = _moment(raw_start, "from", end=False) if raw_start.strip() else end - DEFAULT_PERIOD
    if start >= end:
        raise StatsInputError("from", "`from` must be before `to`.")
    if end - start > MAX_PERIOD:
        raise StatsInputError("from", f"At most {MAX_PERIOD.days} days before `to`.")
    goal = (params.get("goal") or "").strip() or None
    if goal is not None:
        if len(goal) > MAX_GOAL:
            raise StatsInputError("goal", f"An event name of at most {MAX_GOAL} characters.")
        if problem := unstorable(goal):
            raise StatsInputError("goal", f"Not usable: {problem}.")
        goal = current_event_name(goal)
    return StatsQuery(start=start, end=end, goal=goal)


# --- The figures ----------------------------------------------------------------------------


def _days(start: datetime, end: datetime) -> list[date]:
    """Every day the period touches, in TIME_ZONE ([start, end): a period ending at midnight
    does not touch the day that begins then)."""
    first = timezone.localtime(start).date()
    last = timezone.localtime(end - timedelta(microseconds=1)).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _email_figures(into: dict[str, Any], status: str, n: int, unsubscribed: int) -> None:
    for figure in _EMAIL_STATUS_FIGURES.get(status, ()):
        into[figure] += n
    into["unsubscribed"] += unsubscribed


def _unsubscribed_after(message_ref: str, contact_ref: str) -> Exists:
    """The message (its id and contact at these paths of the outer row) was the last one sent to
    its contact before a `contact.unsubscribed` event of that contact."""
    sent_at = OuterRef(OuterRef(f"{message_ref}__sent_at"))
    later = Message.objects.filter(
        contact_id=OuterRef(OuterRef(contact_ref)),
        sent_at__gt=sent_at,
        sent_at__lte=OuterRef("created_at"),
    )
    return Exists(
        Event.objects.filter(
            contact_id=OuterRef(contact_ref),
            name=UNSUBSCRIBED_EVENT,
            created_at__gte=OuterRef(f"{message_ref}__sent_at"),
        ).filter(~Exists(later))
    )


def _skip_reason(output: str | None) -> str:
    text = (output or "").strip()
    return text.removeprefix("skipped: ").strip() or "unknown"


def workflow_stats(*, workflow: Workflow, start: datetime, end: datetime, goal: str | None):
    """The statistics of the workflow's runs started in [start, end), per step of its current
    graph (the module's docstring defines every figure). JSON-ready."""
    runs = Execution.objects.filter(workflow=workflow, started_at__gte=start, started_at__lt=end)
    # Step runs of those runs: the execution join is what bounds them to the period.
    visits = StepRun.objects.filter(
        execution__workflow=workflow,
        execution__started_at__gte=start,
        execution__started_at__lt=end,
    )
    steps = list(Step.objects.filter(workflow=workflow).order_by("id"))
    by_id = {step.id: step for step in steps}
    email_ids = [s.id for s in steps if s.type == SEND_EMAIL]
    split_ids = [s.id for s in steps if s.type == SPLIT]

    executions = dict.fromkeys((s for s, _ in Execution.STATUS_CHOICES), 0)
    per_day = dict.fromkeys(_days(start, end), 0)
    by_status_day = (
        runs.annotate(day=TruncDate("started_at", tzinfo=timezone.get_current_timezone()))
        .values("status", "day")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in by_status_day:
        executions[row["status"]] = executions.get(row["status"], 0) + row["n"]
        if row["day"] in per_day:
            per_day[row["day"]] += row["n"]

    figures: dict[str, dict[str, Any]] = {}
    for step in steps:
        entry: dict[str, Any] = {
            "type": step.type,
            "name": step.name,
            **dict.fromkeys(VISIT_FIGURES, 0),
        }
        if step.type == SEND_EMAIL:
            entry.update(dict.fromkeys(EMAIL_FIGURES, 0))
            entry["skipped_reasons"] = {}
        if step.type == SPLIT:
            entry["branches"] = {
                branch["id"]: _branch_zero(goal)
                for branch in (step.config or {}).get("branches", [])
                if isinstance(branch, dict) and isinstance(branch.get("id"), str)
            }
        figures[step.key] = entry

    _visit_figures(visits, runs, by_id, figures)
    if email_ids:
        _email_step_figures(visits, email_ids, by_id, figures)
    if split_ids:
        _split_figures(visits, split_ids, by_id, figures, goal)

    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "goal": goal,
        "executions": executions,
        "started_per_day": [{"date": d.isoformat(), "started": n} for d, n in per_day.items()],
        "steps": figures,
    }


def _branch_zero(goal: str | None) -> dict[str, Any]:
    zero: dict[str, Any] = dict.fromkeys((*VISIT_FIGURES, *EMAIL_FIGURES), 0)
    zero["goal_reached"] = 0 if goal else None
    zero["goal_share"] = None
    return zero


def _visit_figures(visits: QuerySet, runs: QuerySet, by_id: dict, figures: dict) -> None:
    rows = (
        visits.filter(step_id__in=list(by_id)).values("step_id", "status").annotate(n=Count("id"))
    ).order_by()
    for row in rows:
        entry = figures[by_id[row["step_id"]].key]
        entry["entered"] += row["n"]
        if figure := _VISIT_STATUS_FIGURE.get(row["status"]):
            entry[figure] += row["n"]
    waiting = (
        runs.filter(status=Execution.WAITING, current_step_id__in=list(by_id))
        .values("current_step_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in waiting:
        figures[by_id[row["current_step_id"]].key]["waiting"] += row["n"]


def _email_step_figures(visits: QuerySet, email_ids: list[int], by_id: dict, figures: dict) -> None:
    sent = (
        visits.filter(step_id__in=email_ids, message__isnull=False)
        .values("step_id", "message__status")
        .annotate(
            n=Count("id"),
            unsubscribed=Count("id", filter=_unsubscribed_after("message", "message__contact_id")),
        )
        .order_by()
    )
    for row in sent:
        _email_figures(
            figures[by_id[row["step_id"]].key],
            row["message__status"],
            row["n"],
            row["unsubscribed"],
        )
    skipped = (
        visits.filter(step_id__in=email_ids, status=StepRun.SKIPPED)
        .annotate(reason=Left(Coalesce(KT("output__reason"), KT("output__skipped")), MAX_REASON))
        .values("step_id", "reason")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in skipped:
        reasons = figures[by_id[row["step_id"]].key]["skipped_reasons"]
        reason = _skip_reason(row["reason"])
        reasons[reason] = reasons.get(reason, 0) + row["n"]


def _split_figures(
    visits: QuerySet, split_ids: list[int], by_id: dict, figures: dict, goal: str | None
) -> None:
    taken = visits.filter(step_id__in=split_ids, status=StepRun.COMPLETED)
    counts: dict[str, Any] = {"n": Count("id")}
    if goal:
        counts["reached"] = Count(
            "id",
            filter=Exists(
                Event.objects.filter(
                    contact_id=OuterRef("execution__contact_id"),
                    name=goal,
                    created_at__gte=OuterRef("started_at"),
                )
            ),
        )
    rows = taken.values("step_id", "branch", "execution__status").annotate(**counts).order_by()
    for row in rows:
        branch = _branch(figures, by_id, row["step_id"], row["branch"])
        if branch is None:
            continue
        branch["entered"] += row["n"]
        if figure := _RUN_STATUS_FIGURE.get(row["execution__status"]):
            branch[figure] += row["n"]
        if goal:
            branch["goal_reached"] += row["reached"]

    # The Send Email visits each run made after its split visit: a self-join through the run
    # (the filter's conditions all bind the same split visit).
    split = "execution__step_runs"
    after = (
        visits.filter(
            step_type=SEND_EMAIL,
            **{
                f"{split}__step_id__in": split_ids,
                f"{split}__status": StepRun.COMPLETED,
                f"{split}__id__lt": F("id"),
            },
        )
        .values(f"{split}__step_id", f"{split}__branch", "status", "message__status")
        .annotate(
            n=Count("id"),
            unsubscribed=Count("id", filter=_unsubscribed_after("message", "message__contact_id")),
        )
        .order_by()
    )
    for row in after:
        branch = _branch(figures, by_id, row[f"{split}__step_id"], row[f"{split}__branch"])
        if branch is None:
            continue
        if row["status"] == StepRun.SKIPPED:
            branch["skipped"] += row["n"]
        if row["message__status"] is not None:
            _email_figures(branch, row["message__status"], row["n"], row["unsubscribed"])

    for step_id in split_ids:
        for branch in figures[by_id[step_id].key]["branches"].values():
            if goal and branch["entered"]:
                branch["goal_share"] = branch["goal_reached"] / branch["entered"]


def _branch(figures: dict, by_id: dict, step_id: int, branch_id: str) -> dict[str, Any] | None:
    # A branch no longer in the split's config (its runs are from before an edit) is left out.
    return figures[by_id[step_id].key]["branches"].get(branch_id)
