"""One-at-a-time graph edits (Plunk's step and transition endpoints) over the whole-graph save.

Each edit reads the graph document with its version, changes the document and saves it with
graph.workflow_save_graph(expected_version=..., draft=True): validation, locking and lost-update
detection are exactly every other editor's. `draft` lets a disabled workflow hold a graph that
is still being built (a step not yet connected); an enabled one's must stay complete.

A transition's id is "<from>:<branch>" (from being a step key or "trigger"): a step has at most
one transition per branch, so the pair names it, and it survives every save.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.utils.text import slugify

from templates_app.models import Template
from workflows_app.graph import (
    TRIGGER,
    GraphConflict,
    workflow_graph_snapshot,
    workflow_save_graph,
)
from workflows_app.models import Workflow
from workflows_app.steps import STEP_TYPES
from workflows_app.steps.base import ConfigError

Document = dict[str, Any]
STEP_SPACING = 160  # canvas units between a new step and the one above it
MAX_KEY = 64
RETRIES = 3  # an edit is re-applied on a fresh read when someone saved in between


class EditRefused(ValueError):
    """An edit that does not apply to the graph as it is: `status` 400 (`field` at fault), 404
    (no such step or transition) or 409 (`code`: the port is taken)."""

    def __init__(self, status: int, code: str, message: str, field: str = ""):
        self.status, self.code, self.field, self.message = status, code, field, message
        super().__init__(message)


@dataclass
class StepInput:
    type: str | None = None
    name: str | None = None
    key: str | None = None
    position: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    template_id: int | None = None
    # The key a new step got (data.key, or one made up): what the graph's errors name.
    assigned_key: str | None = None


def transition_id(source: str, branch: str) -> str:
    return f"{source}:{branch}"


def graph_edit[T](*, workflow: Workflow, change: Callable[[Document], T], by: str) -> T:
    """Applies `change` (which edits the document in place and returns what the caller
    reports) to the current graph and saves it. Raises EditRefused, GraphError, WorkflowLocked
    or, when others keep saving in between, GraphConflict."""
    for attempt in range(RETRIES):
        version, document = workflow_graph_snapshot(workflow)
        result = change(document)
        try:
            workflow_save_graph(
                workflow=workflow, document=document, expected_version=version, by=by, draft=True
            )
        except GraphConflict:
            if attempt == RETRIES - 1:
                raise
            continue
        return result
    raise AssertionError("unreachable")


# --- reading the document ---------------------------------------------------------------------


def find_step(document: Document, key: str) -> dict[str, Any]:
    for step in document["steps"]:
        if step["key"] == key:
            return step
    raise EditRefused(404, "not_found", f"No step {key[:80]!r} in this workflow.")


def find_transition(document: Document, ident: str) -> dict[str, Any]:
    source, sep, branch = ident.partition(":")
    for transition in document["transitions"]:
        if sep and transition["from"] == source and transition["branch"] == branch:
            return transition
    raise EditRefused(
        404,
        "not_found",
        f"No transition {ident[:140]!r} in this workflow (ids are '<from step>:<branch>', "
        "e.g. 'trigger:next' or 'welcome:next').",
    )


def step_reply(step: dict[str, Any]) -> dict[str, Any]:
    """A step as the API shows it: the document's step with its id (= key) and templateId."""
    kind = STEP_TYPES.get(step["type"])
    field = kind.template_field if kind else ""
    name = step["config"].get(field) if field else None
    template_id = (
        Template.objects.filter(name=name).values_list("pk", flat=True).first() if name else None
    )
    return {
        "id": step["key"],
        "key": step["key"],
        "type": step["type"],
        "name": step["name"],
        "config": step["config"],
        "position": step["position"],
        "templateId": template_id,
    }


def transition_reply(transition: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": transition_id(transition["from"], transition["branch"]),
        "fromStepId": transition["from"],
        "toStepId": transition["to"],
        "branch": transition["branch"],
    }


# --- the edits --------------------------------------------------------------------------------


def _with_template(type_name: str, config: dict[str, Any], template_id: int | None) -> dict:
    """Plunk's top-level templateId, put into the config as the step type names it."""
    if template_id is None:
        return config
    kind = STEP_TYPES.get(type_name)
    if kind is None or not kind.template_field:
        label = kind.label if kind else type_name
        raise EditRefused(400, "validation_error", f"A {label} step has no template.", "templateId")
    name = Template.objects.filter(pk=template_id).values_list("name", flat=True).first()
    if name is None:
        raise EditRefused(
            400, "validation_error", f"Template #{template_id} does not exist.", "templateId"
        )
    rest = {k: v for k, v in config.items() if k not in (kind.template_field, "templateId")}
    return {**rest, kind.template_field: name}


def _new_key(document: Document, wanted: str | None, name: str | None, type_name: str) -> str:
    taken = {step["key"] for step in document["steps"]}
    if wanted is not None:
        if wanted in taken:
            raise EditRefused(
                409, "step_exists", f"This workflow already has a step {wanted!r}.", "key"
            )
        return wanted  # its form is the graph's to check
    base = (slugify(name or "") or slugify(type_name.replace("_", "-")) or "step")[: MAX_KEY - 4]
    key, n = base, 1
    while key in taken or key == TRIGGER:
        n += 1
        key = f"{base}-{n}"
    return key


def _below_last(document: Document) -> dict[str, float]:
    positions = [s["position"] for s in document["steps"]]
    if not positions:
        return {"x": 0, "y": 0}
    lowest = max(positions, key=lambda p: p["y"])
    return {"x": lowest["x"], "y": min(lowest["y"] + STEP_SPACING, 1_000_000)}


def step_add(
    document: Document, data: StepInput, *, position: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Adds an unconnected step (connect it with transition_add, or use transition_insert),
    at data.position, else `position`, else below the lowest step."""
    type_name = data.type or ""
    key = _new_key(document, data.key, data.name, type_name)
    data.assigned_key = key
    step = {
        "key": key,
        "type": type_name,
        "name": data.name or "",
        "config": _with_template(type_name, dict(data.config or {}), data.template_id),
        "position": data.position or position or _below_last(document),
    }
    document["steps"].append(step)
    return step


def step_change(document: Document, key: str, data: StepInput) -> dict[str, Any]:
    """Changes a step's name, position, config (replaced whole) or template."""
    step = find_step(document, key)
    if data.name is not None:
        step["name"] = data.name
    if data.position is not None:
        step["position"] = data.position
    if data.config is not None:
        step["config"] = dict(data.config)
    step["config"] = _with_template(step["type"], step["config"], data.template_id)
    return step


def step_remove(document: Document, key: str, *, splice: bool) -> None:
    """Removes a step with its transitions. With `splice`, the transitions that led to it lead
    to where its one outgoing transition went instead."""
    find_step(document, key)
    outgoing = [t for t in document["transitions"] if t["from"] == key]
    if splice and len(outgoing) > 1:
        branches = ", ".join(f"'{t['branch']}' -> {t['to']}" for t in outgoing)
        raise EditRefused(
            400,
            "ambiguous_splice",
            f"Step {key!r} has {len(outgoing)} outgoing branches ({branches}), so there is no "
            "single step to reconnect its predecessors to. Delete the branches you do not "
            "want first (DELETE .../transitions/<id>), or delete without splice.",
            "splice",
        )
    target = outgoing[0]["to"] if splice and outgoing else None
    kept = []
    for transition in document["transitions"]:
        if transition["from"] == key:
            continue
        if transition["to"] == key:
            if target is None:
                continue
            transition = {**transition, "to": target}
        kept.append(transition)
    document["transitions"] = kept
    document["steps"] = [s for s in document["steps"] if s["key"] != key]


def _branches(step: dict[str, Any]) -> tuple[str, ...] | None:
    """A step's branches, or None while its config is invalid (the save will say why)."""
    kind = STEP_TYPES.get(step["type"])
    if kind is None:
        return None
    try:
        return kind.branches_for(kind.parse_config(step["config"]))
    except ConfigError:
        return None


def _check_port(document: Document, source: str, branch: str) -> None:
    if source == TRIGGER:
        if branch != "next":
            raise EditRefused(
                400, "validation_error", "The trigger has only the 'next' branch.", "branch"
            )
    else:
        allowed = _branches(find_step_for(document, source, "fromStepId"))
        if allowed is not None and branch not in allowed:
            label = STEP_TYPES[find_step(document, source)["type"]].label
            raise EditRefused(
                400,
                "validation_error",
                f"A {label} step has no '{branch}' branch"
                + (f"; its branches: {', '.join(allowed)}." if allowed else " (it ends the run)."),
                "branch",
            )
    for transition in document["transitions"]:
        if transition["from"] == source and transition["branch"] == branch:
            raise EditRefused(
                409,
                "transition_exists",
                f"The '{branch}' branch of {source!r} already leads to {transition['to']!r}. "
                f"Delete transition '{transition_id(source, branch)}' first, or insert a step "
                "on it (POST .../transitions/<id>/insert-step).",
                "fromStepId",
            )


def find_step_for(document: Document, key: str, field: str) -> dict[str, Any]:
    """find_step for a step named in the body: a 400 naming the field, not a 404."""
    try:
        return find_step(document, key)
    except EditRefused as exc:
        raise EditRefused(400, "validation_error", exc.message, field) from None


def transition_add(document: Document, source: str, target: str, branch: str) -> dict:
    if source != TRIGGER:
        find_step_for(document, source, "fromStepId")
    find_step_for(document, target, "toStepId")
    _check_port(document, source, branch)
    transition = {"from": source, "to": target, "branch": branch}
    document["transitions"].append(transition)
    return transition


def transition_remove(document: Document, ident: str) -> None:
    found = find_transition(document, ident)
    document["transitions"] = [t for t in document["transitions"] if t is not found]


def transition_insert(
    document: Document, ident: str, data: StepInput, *, branch: str | None = None
) -> dict[str, Any]:
    """Puts a new step on a transition: from -> new -> to. The new step leads on to the old
    target by `branch` (default: `next`, else its first branch; an Exit step leads nowhere)."""
    found = find_transition(document, ident)
    ends = [find_step(document, found["to"])["position"]]
    if found["from"] != TRIGGER:
        ends.append(find_step(document, found["from"])["position"])
    between = {
        "x": sum(p["x"] for p in ends) / len(ends),
        "y": sum(p["y"] for p in ends) / len(ends),
    }
    step = step_add(document, data, position=between)
    found_target = found["to"]
    found["to"] = step["key"]
    allowed = _branches(step)
    if branch is None:
        if allowed is None or "next" in allowed:
            branch = "next"
        elif allowed:
            branch = allowed[0]
    elif allowed is not None and branch not in allowed:
        label = STEP_TYPES[step["type"]].label
        raise EditRefused(
            400,
            "validation_error",
            f"A {label} step has no '{branch}' branch"
            + (f"; its branches: {', '.join(allowed)}." if allowed else " (it ends the run)."),
            "branch",
        )
    if branch is not None:
        document["transitions"].append({"from": step["key"], "to": found_target, "branch": branch})
    return step
