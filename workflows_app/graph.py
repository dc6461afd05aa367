"""Graph validation and the whole-graph save: the one path every editor (admin, canvas, import,
shell) uses to change steps and transitions.

A graph document is {"steps": [{"key", "type", "name"?, "config"?, "position"?}],
"transitions": [{"from": key | "trigger", "to": key, "branch"?: "next"}]}.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from contacts_app.safejson import unstorable
from templates_app.models import Template
from workflows_app.models import Execution, Step, Transition, Workflow
from workflows_app.steps import STEP_TYPES
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
    template: str = ""  # the template's name, for a step type with a template_field


MAX_STEPS = 500
MAX_POSITION = 1_000_000.0  # canvas coordinates; far beyond any real layout
STEP_FIELDS = {"key", "type", "name", "config", "position"}
TRANSITION_FIELDS = {"from", "to", "branch"}


def _lists_branches(kind: Any, config: Any) -> bool:
    """True when a config asks for branches named by a list (the type's `branch_list`)."""
    rule = kind.branch_list
    return (
        bool(rule)
        and isinstance(config, dict)
        and all(config.get(field) == value for field, value in rule.get("when", {}).items())
    )


def _number(value: Any) -> float | None:
    """A finite coordinate, or None. JSON booleans are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and abs(number) <= MAX_POSITION else None


def graph_validate(
    document: dict[str, Any],
    *,
    template_names: set[str] | None = None,
    complete: bool = True,
) -> tuple[list[StepSpec], list[tuple[str, str, str]]]:
    """Checks a graph document; returns (steps, [(from, branch, to)]) or raises GraphError.

    Shape and types are checked before anything else, so no input (a list where a string
    belongs, NUL in a name, a non-finite position) gets further than an error message.
    `template_names` lets a caller (import) count templates that are about to be created.
    `complete=False` is a draft's check (a disabled workflow built one step at a time): every
    rule but completeness (the trigger connected, every step reachable from it).
    """
    errors: list[dict[str, Any]] = []

    def error(step: str | None, message: str, field: str = "") -> None:
        errors.append({"step": step, "field": field, "message": message})

    if not isinstance(document, dict):
        raise GraphError([{"step": None, "field": "", "message": "the graph must be an object"}])
    raw_steps = document.get("steps")
    raw_transitions = document.get("transitions")
    raw_steps = [] if raw_steps is None else raw_steps
    raw_transitions = [] if raw_transitions is None else raw_transitions
    if not isinstance(raw_steps, list) or not isinstance(raw_transitions, list):
        raise GraphError(
            [{"step": None, "field": "", "message": "steps and transitions must be lists"}]
        )
    if len(raw_steps) > MAX_STEPS or len(raw_transitions) > MAX_STEPS * 4:
        raise GraphError(
            [{"step": None, "field": "", "message": f"a graph has at most {MAX_STEPS} steps"}]
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
                key if isinstance(key, str) and key and not unstorable(key) else None,
                f"step #{index + 1}: key must be a slug (lowercase letters, digits, - and _), "
                "at most 64 long",
                "key",
            )
            continue
        if key == TRIGGER:
            error(key, f"'{TRIGGER}' is reserved for the workflow's entry", "key")
            continue
        if key in parsed:
            error(key, "two steps have this key", "key")
            continue
        unknown = set(raw) - STEP_FIELDS
        if unknown:
            error(key, f"unknown fields: {', '.join(sorted(map(str, unknown)))}")
        type_name = raw.get("type")
        kind = STEP_TYPES.get(type_name) if isinstance(type_name, str) else None
        if kind is None:
            shown = repr(type_name) if isinstance(type_name, str) else "missing or not text"
            error(key, f"unknown type {shown[:80]}; one of: {', '.join(STEP_TYPES)}", "type")
            parsed[key] = None
            continue
        config = raw.get("config")
        config = {} if config is None else config
        problem = unstorable(config)
        if problem:
            error(key, f"config: {problem}", "config")
            parsed[key] = None
        else:
            try:
                parsed[key] = kind.parse_config(config)
            except ConfigError as exc:
                for field, message in exc.errors.items():
                    error(key, message, f"config.{field}" if field else "config")
                parsed[key] = None
        template = ""
        if kind.template_field and parsed.get(key) is not None:
            template = getattr(parsed[key], kind.template_field)
            if template not in template_names:
                error(key, f"template {template!r} does not exist", f"config.{kind.template_field}")
        position = raw.get("position")
        position = {} if position is None else position
        x = y = 0.0
        if not isinstance(position, dict) or set(position) - {"x", "y"}:
            error(key, "position must be {x: number, y: number}", "position")
        else:
            px, py = _number(position.get("x", 0)), _number(position.get("y", 0))
            if px is None or py is None:
                error(
                    key,
                    f"position x and y must be finite numbers between -{MAX_POSITION:.0f} and "
                    f"{MAX_POSITION:.0f}",
                    "position",
                )
            else:
                x, y = px, py
        name = raw.get("name")
        name = "" if name is None else name
        if not isinstance(name, str) or len(name) > 200 or unstorable(name):
            error(key, "name must be text of at most 200 characters (no NUL)", "name")
            name = ""
        if parsed.get(key) is not None:
            config = kind.stored_config(config, parsed[key])
        steps.append(StepSpec(key, kind.type, name, config, x, y, template))

    types = {s.key: s.type for s in steps}
    configs = {s.key: s.config for s in steps}
    edges: list[tuple[str, str, str]] = []
    seen_ports: set[tuple[str, str]] = set()
    for raw in raw_transitions:
        if not isinstance(raw, dict):
            error(None, "each transition must be an object")
            continue
        src, dst, branch = raw.get("from"), raw.get("to"), raw.get("branch")
        branch = "next" if branch is None or branch == "" else branch
        if (
            not isinstance(src, str)
            or not isinstance(dst, str)
            or not isinstance(branch, str)
            or set(raw) - TRANSITION_FIELDS
        ):
            error(None, "a transition is {from: key, to: key, branch?: name}, all text")
            continue
        if src != TRIGGER and src not in types:
            error(None, f"transition from unknown step {src[:80]!r}")
            continue
        if dst not in types:
            error(src if src != TRIGGER else None, f"transition to unknown step {dst[:80]!r}")
            continue
        if src == TRIGGER:
            if branch != "next":
                error(None, "the trigger has only the 'next' branch")
                continue
        else:
            kind = STEP_TYPES[types[src]]
            allowed: tuple[str, ...] | None = (
                kind.branches_for(parsed[src]) if parsed.get(src) is not None else kind.branches
            )
            if parsed.get(src) is None and _lists_branches(kind, configs.get(src)):
                # Its branches are named by its config, which is invalid (and reported): its
                # ports cannot be checked before that is fixed; guessing would only add noise.
                allowed = None
            if allowed is not None and not allowed:
                error(src, f"a {kind.label} step ends the run; it can have no outgoing transition")
                continue
            if allowed is not None and branch not in allowed:
                error(
                    src,
                    f"a {kind.label} step has branches {', '.join(allowed)}, not '{branch}'"
                    + (
                        f" (set {kind.branch_requires[branch]} to use '{branch}')"
                        if branch in kind.branch_requires
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

    if complete and steps and not any(src == TRIGGER for src, _, _ in edges):
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
        if complete and spec.key not in reached and any(src == TRIGGER for src, _, _ in edges):
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


class GraphConflict(Exception):
    """The graph changed since the editor opened it (a lost update refused)."""

    def __init__(self, workflow: Workflow, expected: int, differing: list[str]):
        self.current_version = workflow.graph_version
        who = workflow.graph_saved_by or "someone"
        when = (
            f" at {timezone.localtime(workflow.graph_saved_at):%Y-%m-%d %H:%M:%S %Z}"
            if workflow.graph_saved_at
            else ""
        )
        what = (
            f" Steps that differ between their version and yours: {', '.join(differing)}."
            if differing
            else " Their version differs from yours in its transitions."
        )
        super().__init__(
            f"{who} saved this workflow's graph{when} since you opened it (version "
            f"{workflow.graph_version}; you started from version {expected}).{what} Reload to "
            "see their version; your changes are not saved."
        )


def workflow_save_graph(
    *,
    workflow: Workflow,
    document: dict[str, Any],
    template_names: set[str] | None = None,
    expected_version: int | None = None,
    by: str = "",
    draft: bool = False,
) -> Workflow:
    """Validates and saves the whole graph in one transaction; steps are matched by key so
    their history stays attached. Raises GraphError, WorkflowLocked or (when
    `expected_version`, the version the editor started from, is stale) GraphConflict; saves
    nothing then. The version is compared under the workflow's row lock, so of two concurrent
    saves from the same version exactly one wins.

    `draft=True` (the API's one-step-at-a-time edits, a copy being made) lets a DISABLED
    workflow keep an incomplete graph (a step not yet connected); every other rule still
    holds, and an enabled workflow's graph must be complete whatever the caller. Enabling
    checks completeness (workflow_check_complete), so a run never starts on a draft."""
    steps, edges = graph_validate(document, template_names=template_names, complete=not draft)
    if workflow.pk and _same_graph(workflow, steps, edges):
        return workflow  # nothing changes, so re-saving (or re-importing) is fine while locked
    try:
        with transaction.atomic():
            locked = Workflow.objects.select_for_update().get(pk=workflow.pk)
            if expected_version is not None and locked.graph_version != expected_version:
                raise GraphConflict(locked, expected_version, _differing(locked, steps))
            if draft and locked.enabled:  # under the row lock: enabling waits for this save
                graph_validate(document, template_names=template_names)
            active = workflow_active_count(locked)
            if active and not _only_cosmetic(locked, steps, edges):
                raise WorkflowLocked(locked, active)
            if active:
                # Names and positions change nothing a run depends on (the triggers agree).
                for spec in steps:
                    Step.objects.filter(workflow=locked, key=spec.key).update(
                        name=spec.name, position_x=spec.x, position_y=spec.y
                    )
            else:
                _write_graph(locked, steps, edges)
            Workflow.objects.filter(pk=locked.pk).update(
                graph_version=F("graph_version") + 1,
                graph_saved_by=by[:150],
                graph_saved_at=timezone.now(),
            )
    except IntegrityError as exc:
        # A template named by a step was deleted between validation and commit.
        raise GraphError([{"step": None, "field": "", "message": f"not saved: {exc}"}]) from exc
    workflow.graph_version = Workflow.objects.values_list("graph_version", flat=True).get(
        pk=workflow.pk
    )
    return workflow


def _write_graph(
    workflow: Workflow, steps: list[StepSpec], edges: list[tuple[str, str, str]]
) -> None:
    existing = {s.key: s for s in Step.objects.filter(workflow=workflow)}
    wanted = {spec.template for spec in steps if spec.template}
    templates = {t.name: t for t in Template.objects.filter(name__in=wanted)}
    missing = wanted - set(templates)
    if missing:
        raise GraphError(
            [
                {
                    "step": spec.key,
                    "field": "config.template",
                    "message": f"template {spec.template!r} does not exist",
                }
                for spec in steps
                if spec.template in missing
            ]
        )
    Transition.objects.filter(workflow=workflow).delete()
    Step.objects.filter(workflow=workflow).exclude(key__in=[s.key for s in steps]).delete()
    by_key: dict[str, Step] = {}
    for spec in steps:
        step = existing.get(spec.key) or Step(workflow=workflow, key=spec.key)
        field = STEP_TYPES[spec.type].template_field
        step.type, step.name, step.config = spec.type, spec.name, _stored_config(spec)
        step.template = templates[spec.template] if field and spec.template else None
        step.position_x, step.position_y = spec.x, spec.y
        step.save()
        by_key[spec.key] = step
    Transition.objects.bulk_create(
        Transition(
            workflow=workflow,
            from_step=None if src == TRIGGER else by_key[src],
            to_step=by_key[dst],
            branch=branch,
        )
        for src, branch, dst in edges
    )


def _stored_config(spec: StepSpec) -> dict[str, Any]:
    """The config as stored: without the template's name, which Step.template replaces."""
    field = STEP_TYPES[spec.type].template_field
    return {k: v for k, v in spec.config.items() if k != field} if field else spec.config


def _stored(workflow: Workflow) -> tuple[list[StepSpec], list[tuple[str, str, str]]] | None:
    """The stored graph, parsed; None when it no longer validates (changed behind the
    services' back, or under rules that have since tightened): then it equals nothing."""
    try:
        return graph_validate(
            _graph_document(workflow), template_names=_ANY_TEMPLATE, complete=False
        )
    except GraphError:
        return None


def _differing(workflow: Workflow, steps: list[StepSpec]) -> list[str]:
    current, _ = _stored(workflow) or ([], [])
    theirs = {s.key: s for s in current}
    mine = {s.key: s for s in steps}
    return sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))


def _structure(steps: list[StepSpec], edges: list[tuple[str, str, str]]) -> Any:
    """What runs depend on: everything but names and positions."""
    shape = sorted((s.key, s.type, json.dumps(s.config, sort_keys=True), s.template) for s in steps)
    return shape, sorted(edges)


def _only_cosmetic(
    workflow: Workflow, steps: list[StepSpec], edges: list[tuple[str, str, str]]
) -> bool:
    stored = _stored(workflow)
    return stored is not None and _structure(*stored) == _structure(steps, edges)


def _same_graph(
    workflow: Workflow, steps: list[StepSpec], edges: list[tuple[str, str, str]]
) -> bool:
    stored = _stored(workflow)
    if stored is None:
        return False
    current_steps, current_edges = stored
    return sorted(current_steps, key=lambda s: s.key) == sorted(steps, key=lambda s: s.key) and (
        sorted(current_edges) == sorted(edges)
    )


class _AnyName(set):
    """Accepts every template name: the stored graph was validated when it was saved."""

    def __contains__(self, item) -> bool:
        return True


_ANY_TEMPLATE = _AnyName()


def step_document_config(step: Step) -> dict[str, Any]:
    """A stored step's config as documents show it: with its template's name."""
    field = STEP_TYPES[step.type].template_field if step.type in STEP_TYPES else ""
    if not field or step.template is None:
        return step.config
    return {**step.config, field: step.template.name}


def workflow_graph_snapshot(workflow: Workflow) -> tuple[int, dict[str, Any]]:
    """(graph_version, graph document), read as one consistent snapshot.

    On PostgreSQL the workflow row is share-locked first: every graph change (the service and
    the database triggers alike) locks that row, so a save in flight is either wholly visible
    or not at all, never half. SQLite's transactions are snapshots already."""
    with transaction.atomic():
        query = Workflow.objects.filter(pk=workflow.pk).values_list("graph_version", flat=True)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT graph_version FROM {Workflow._meta.db_table} WHERE id = %s FOR SHARE",
                    [workflow.pk],
                )
                row = cursor.fetchone()
            version = row[0] if row else workflow.graph_version
        else:
            version = query.first() or workflow.graph_version
        return version, _graph_document(workflow)


def workflow_graph_document(workflow: Workflow) -> dict[str, Any]:
    """The graph as a document (the inverse of workflow_save_graph)."""
    return workflow_graph_snapshot(workflow)[1]


def _graph_document(workflow: Workflow) -> dict[str, Any]:
    steps = list(Step.objects.filter(workflow=workflow).select_related("template").order_by("id"))
    keys = {s.pk: s.key for s in steps}
    transitions = Transition.objects.filter(workflow=workflow).order_by("id")
    return {
        "steps": [
            {
                "key": s.key,
                "type": s.type,
                "name": s.name,
                "config": step_document_config(s),
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


def workflow_check_complete(workflow: Workflow) -> None:
    """What enabling requires: the stored graph passes every rule, completeness included (a
    disabled workflow's graph may be a draft: workflow_save_graph(draft=True)). Raises
    GraphError naming the problems."""
    graph_validate(_graph_document(workflow), template_names=_ANY_TEMPLATE)
