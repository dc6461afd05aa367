"""Graph validation and the whole-graph save: the one path every editor (admin, canvas, import,
shell) uses to change steps and transitions.

A graph document is {"steps": [{"key", "type", "name"?, "config"?, "position"?}],
"transitions": [{"from": key | "trigger", "to": key, "branch"?: "next"}]}.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils.text import slugify

from templates_app.models import Template
from workflows_app.models import Execution, Step, Transition, Workflow
from workflows_app.steps import BRANCHES, STEP_TYPES
from workflows_app.steps.base import ConfigError

TRIGGER = "trigger"


class GraphError(ValueError):
    """Invalid graph. `errors` is a list of {"step": key or None, "field": ..., "message": ...}."""

    def __init__(self, errors: list[dict[str, Any]]):
        self.errors = errors
        super().__init__("; ".join(_describe(e) for e in errors))


def _describe(error: dict[str, Any]) -> str:
    where = f"step '{error['step']}'" if error.get("step") else "graph"
    field = f" ({error['field']})" if error.get("field") else ""
    return f"{where}{field}: {error['message']}"


class WorkflowLocked(Exception):
    def __init__(self, workflow: Workflow, active: int):
        self.active = active
        super().__init__(
            f"Workflow '{workflow.name}' has {active} active execution(s) (running or waiting), "
            "so its steps and transitions cannot change. Disable it, wait for them to finish or "
            "cancel them all, edit, then re-enable it."
        )


@dataclass
class StepSpec:
    key: str
    type: str
    name: str
    config: dict[str, Any]
    x: float
    y: float


def graph_validate(
    document: dict[str, Any], *, template_names: set[str] | None = None
) -> tuple[list[StepSpec], list[tuple[str, str, str]]]:
    """Checks a graph document; returns (steps, [(from, branch, to)]) or raises GraphError.

    `template_names` lets a caller (import) count templates that are about to be created.
    """
    errors: list[dict[str, Any]] = []

    def error(step: str | None, message: str, field: str = "") -> None:
        errors.append({"step": step, "field": field, "message": message})

    if not isinstance(document, dict):
        raise GraphError([{"step": None, "field": "", "message": "the graph must be an object"}])
    raw_steps = document.get("steps") or []
    raw_transitions = document.get("transitions") or []
    if not isinstance(raw_steps, list) or not isinstance(raw_transitions, list):
        raise GraphError(
            [{"step": None, "field": "", "message": "steps and transitions must be lists"}]
        )

    if template_names is None:
        template_names = set(Template.objects.values_list("name", flat=True))

    steps: list[StepSpec] = []
    parsed: dict[str, Any] = {}
    for index, raw in enumerate(raw_steps):
        if not isinstance(raw, dict):
            error(None, f"step #{index + 1} must be an object")
            continue
        key = raw.get("key")
        if not isinstance(key, str) or not key or slugify(key) != key or len(key) > 64:
            error(
                str(key) if key else None,
                "key must be a slug (lowercase letters, digits, - and _), at most 64 long",
                "key",
            )
            continue
        if key == TRIGGER:
            error(key, f"'{TRIGGER}' is reserved for the workflow's entry", "key")
            continue
        if key in parsed:
            error(key, "two steps have this key", "key")
            continue
        kind = STEP_TYPES.get(raw.get("type", ""))
        if kind is None:
            error(key, f"unknown type {raw.get('type')!r}; one of: {', '.join(STEP_TYPES)}", "type")
            continue
        config: dict[str, Any] = raw.get("config") or {}
        try:
            parsed[key] = kind.parse_config(config)
        except ConfigError as exc:
            for field, message in exc.errors.items():
                error(key, message, f"config.{field}" if field else "config")
            parsed[key] = None
        if (
            kind.type == "send_email"
            and parsed.get(key) is not None
            and parsed[key].template not in template_names
        ):
            error(key, f"template {parsed[key].template!r} does not exist", "config.template")
        position = raw.get("position") or {}
        try:
            x, y = float(position.get("x", 0)), float(position.get("y", 0))
        except (TypeError, ValueError, AttributeError):
            error(key, "position must be {x: number, y: number}", "position")
            x = y = 0.0
        name = raw.get("name") or ""
        if not isinstance(name, str) or len(name) > 200:
            error(key, "name must be a string of at most 200 characters", "name")
            name = ""
        steps.append(StepSpec(key, kind.type, name, config, x, y))

    types = {s.key: s.type for s in steps}
    edges: list[tuple[str, str, str]] = []
    seen_ports: set[tuple[str, str]] = set()
    for raw in raw_transitions:
        if not isinstance(raw, dict):
            error(None, "each transition must be an object")
            continue
        src, dst = raw.get("from"), raw.get("to")
        branch = raw.get("branch") or "next"
        if src != TRIGGER and src not in types:
            error(None, f"transition from unknown step {src!r}")
            continue
        if dst not in types:
            error(src if src != TRIGGER else None, f"transition to unknown step {dst!r}")
            continue
        if branch not in BRANCHES:
            error(src, f"unknown branch {branch!r}")
            continue
        if src == TRIGGER:
            if branch != "next":
                error(None, "the trigger has only the 'next' branch")
                continue
        else:
            kind = STEP_TYPES[types[src]]
            allowed = (
                kind.branches_for(parsed[src]) if parsed.get(src) is not None else kind.branches
            )
            if not allowed:
                error(src, f"a {kind.label} step ends the run; it can have no outgoing transition")
                continue
            if branch not in allowed:
                error(
                    src,
                    f"a {kind.label} step has branches {', '.join(allowed)}, not '{branch}'"
                    + (
                        " (set a timeout to use 'timeout')"
                        if kind.type == "wait_for_event" and branch == "timeout"
                        else ""
                    ),
                )
                continue
        if (src, branch) in seen_ports:
            error(
                src if src != TRIGGER else None,
                f"two transitions leave the same port ('{branch}')"
                if src != TRIGGER
                else "the trigger can lead to only one step",
            )
            continue
        if src == dst:
            error(src, "a step cannot lead to itself")
            continue
        seen_ports.add((src, branch))
        edges.append((src, branch, dst))

    if steps and not any(src == TRIGGER for src, _, _ in edges):
        error(None, "connect the trigger to the first step")

    # Every step reachable from the trigger, and no cycles.
    out: dict[str, list[str]] = defaultdict(list)
    for src, _, dst in edges:
        out[src].append(dst)
    reached: set[str] = set()
    stack = [TRIGGER]
    while stack:
        for nxt in out[stack.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                stack.append(nxt)
    for spec in steps:
        if spec.key not in reached and any(src == TRIGGER for src, _, _ in edges):
            error(spec.key, "not reachable from the trigger")
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in out[node]:
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
                error(nxt, "the graph has a cycle: " + " -> ".join(cycle))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in [TRIGGER] + [s.key for s in steps]:
        if node not in state:
            visit(node, [node])

    if errors:
        raise GraphError(errors)
    return steps, edges


def workflow_active_count(workflow: Workflow) -> int:
    return Execution.objects.filter(workflow=workflow, status__in=Execution.ACTIVE).count()


def workflow_lock_for_graph_change(workflow: Workflow) -> Workflow:
    """Locks the workflow row (call inside a transaction) and refuses if any run is active.

    The row lock conflicts with the key-share lock every starting execution takes on its
    workflow, so no run can start between this check and the commit of the change.
    """
    locked = Workflow.objects.select_for_update().get(pk=workflow.pk)
    active = workflow_active_count(locked)
    if active:
        raise WorkflowLocked(locked, active)
    return locked


def workflow_save_graph(
    *, workflow: Workflow, document: dict[str, Any], template_names: set[str] | None = None
) -> Workflow:
    """Validates and saves the whole graph in one transaction; steps are matched by key so
    their history stays attached. Raises GraphError or WorkflowLocked; saves nothing then."""
    steps, edges = graph_validate(document, template_names=template_names)
    if workflow.pk and _same_graph(workflow, steps, edges):
        return workflow  # nothing changes, so re-saving (or re-importing) is fine while locked
    with transaction.atomic():
        locked = workflow_lock_for_graph_change(workflow)
        existing = {s.key: s for s in Step.objects.filter(workflow=locked)}
        Transition.objects.filter(workflow=locked).delete()
        Step.objects.filter(workflow=locked).exclude(key__in=[s.key for s in steps]).delete()
        by_key: dict[str, Step] = {}
        for spec in steps:
            step = existing.get(spec.key) or Step(workflow=locked, key=spec.key)
            step.type, step.name, step.config = spec.type, spec.name, spec.config
            step.position_x, step.position_y = spec.x, spec.y
            step.save()
            by_key[spec.key] = step
        Transition.objects.bulk_create(
            Transition(
                workflow=locked,
                from_step=None if src == TRIGGER else by_key[src],
                to_step=by_key[dst],
                branch=branch,
            )
            for src, branch, dst in edges
        )
        Workflow.objects.filter(pk=locked.pk).update(graph_version=locked.graph_version + 1)
        locked.graph_version += 1
    workflow.graph_version = locked.graph_version
    return workflow


def _same_graph(
    workflow: Workflow, steps: list[StepSpec], edges: list[tuple[str, str, str]]
) -> bool:
    current_steps, current_edges = graph_validate(
        workflow_graph_document(workflow), template_names=_ANY_TEMPLATE
    )
    return sorted(current_steps, key=lambda s: s.key) == sorted(steps, key=lambda s: s.key) and (
        sorted(current_edges) == sorted(edges)
    )


class _AnyName(set):
    """Accepts every template name: the stored graph was validated when it was saved."""

    def __contains__(self, item) -> bool:
        return True


_ANY_TEMPLATE = _AnyName()


def workflow_graph_document(workflow: Workflow) -> dict[str, Any]:
    """The graph as a document (the inverse of workflow_save_graph)."""
    steps = list(Step.objects.filter(workflow=workflow).order_by("id"))
    keys = {s.pk: s.key for s in steps}
    transitions = Transition.objects.filter(workflow=workflow).order_by("id")
    return {
        "steps": [
            {
                "key": s.key,
                "type": s.type,
                "name": s.name,
                "config": s.config,
                "position": {"x": s.position_x, "y": s.position_y},
            }
            for s in steps
        ],
        "transitions": [
            {
                "from": keys[t.from_step_id] if t.from_step_id else TRIGGER,
                "to": keys[t.to_step_id],
                "branch": t.branch,
            }
            for t in transitions
        ],
    }
