"""What the admin canvas reads and writes: the palette (from STEP_TYPES), the graph document,
live counts per step, field suggestions, and the whole-graph save through workflow_save_graph.

Reads only; the one write goes through graph.workflow_save_graph, like every other editor.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count
from django.urls import reverse

from contacts_app.models import Contact, Event
from templates_app.models import Template
from workflows_app.graph import (
    WorkflowLocked,
    workflow_active_count,
    workflow_graph_snapshot,
    workflow_save_graph,
)
from workflows_app.models import Execution, StepRun, Workflow
from workflows_app.steps import STEP_TYPES

# How many recent contacts/events to sample for field suggestions: enough to see every key
# marketers use, cheap on a table with millions of rows (both read through an index).
SUGGESTION_SAMPLE = 500


def canvas_palette() -> list[dict[str, Any]]:
    return [kind.describe() for kind in STEP_TYPES.values()]


def canvas_lock(workflow: Workflow) -> dict[str, Any]:
    active = workflow_active_count(workflow)
    return {
        "locked": bool(active),
        "active": active,
        "message": str(WorkflowLocked(workflow, active)) if active else "",
    }


def canvas_step_counts(workflow: Workflow) -> dict[str, dict[str, int]]:
    """Per step key: waiting now, passed through, failed and exited there; plus the trigger's
    "entered" (all executions). Grouped aggregates served by the (step, status) and
    (workflow, status, started_at) indexes; no per-step queries."""
    keys = dict(workflow.steps.values_list("id", "key"))
    counts: dict[str, dict[str, int]] = {
        key: {"waiting": 0, "passed": 0, "failed": 0, "exited": 0} for key in keys.values()
    }
    runs = (
        StepRun.objects.filter(step_id__in=keys)
        .values("step_id", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in runs:
        bucket = counts[keys[row["step_id"]]]
        if row["status"] in (StepRun.COMPLETED, StepRun.SKIPPED):
            bucket["passed"] += row["n"]
        elif row["status"] == StepRun.FAILED:
            bucket["failed"] += row["n"]
    executions = (
        Execution.objects.filter(
            workflow=workflow, status__in=(Execution.WAITING, Execution.EXITED)
        )
        .exclude(current_step=None)
        .values("current_step_id", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for ended in executions:
        key = keys.get(ended["current_step_id"])
        if key is not None:
            counts[key]["waiting" if ended["status"] == Execution.WAITING else "exited"] += ended[
                "n"
            ]
    counts["trigger"] = {"entered": Execution.objects.filter(workflow=workflow).count()}
    return counts


def canvas_templates() -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "type": kind,
            "edit_url": reverse("admin:templates_app_template_change", args=[pk]),
        }
        for pk, name, kind in Template.objects.order_by("name").values_list("pk", "name", "type")
    ]


def canvas_state(workflow: Workflow) -> dict[str, Any]:
    """Everything the canvas loads: workflow, graph, palette, templates, lock and counts. The
    graph and its version are one snapshot, so a save that starts from this version can only
    succeed if nobody changed the graph since."""
    version, graph = workflow_graph_snapshot(workflow)
    return {
        "workflow": {
            "id": workflow.pk,
            "name": workflow.name,
            "trigger_type": workflow.trigger_type,
            "trigger_event": workflow.trigger_event,
            "enabled": workflow.enabled,
            "graph_version": version,
        },
        "graph": graph,
        "palette": canvas_palette(),
        "templates": canvas_templates(),
        "template_add_url": reverse("admin:templates_app_template_add"),
        "lock": canvas_lock(workflow),
        "counts": canvas_step_counts(workflow),
    }


def canvas_save(*, workflow: Workflow, document: Any, expected_version: int, by: str) -> Workflow:
    """The canvas's save: exactly the service every editor uses, with the version the editor
    started from (raises GraphError, WorkflowLocked or GraphConflict and then saves nothing)."""
    return workflow_save_graph(
        workflow=workflow, document=document, expected_version=expected_version, by=by
    )


def _keys(data: Any, prefix: str, into: set[str], depth: int = 0) -> None:
    if not isinstance(data, dict) or depth > 2:
        return
    for key, value in data.items():
        if not isinstance(key, str) or not key or " " in key:
            continue
        into.add(f"{prefix}{key}")
        _keys(value, f"{prefix}{key}.", into, depth + 1)


def canvas_field_suggestions(workflow: Workflow, *, contact_keys: bool = True) -> list[str]:
    """Condition fields seen in recent data: contact data keys (only with `contact_keys`, for
    users who may view contacts), and the data of recent events of this workflow's trigger
    (what `event.*` holds when a run starts)."""
    contact_fields = {"contact.email", "contact.subscribed"}
    # No ordering: contacts have no index to sort by cheaply, and any sample will do.
    contacts = Contact.objects.order_by().values_list("data", flat=True)[:SUGGESTION_SAMPLE]
    for data in contacts if contact_keys else ():
        _keys(data, "contact.", contact_fields)
    event_fields: set[str] = set()
    for data in (
        Event.objects.filter(name=workflow.trigger_event)
        .order_by("-created_at")
        .values_list("data", flat=True)[:SUGGESTION_SAMPLE]
    ):
        _keys(data, "event.", event_fields)
    return sorted(contact_fields) + sorted(event_fields)
