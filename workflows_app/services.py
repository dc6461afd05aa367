"""Workflow actions used by every path (admin, API, import, shell)."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from contacts_app.models import Contact
from templates_app.policy import NO_CAP, validate_frequency_cap_override
from workflows_app import engine
from workflows_app.event_names import current_event_name
from workflows_app.graph import (
    workflow_active_count,
    workflow_check_complete,
    workflow_graph_document,
    workflow_save_graph,
)
from workflows_app.models import Execution, Workflow


class TriggerImmutable(ValueError):
    pass


def _frequency_cap(value: str) -> str:
    """A workflow's frequency cap as stored: "", "none" or a cap like 3/7d (ValidationError
    for anything else)."""
    value = value.strip()
    validate_frequency_cap_override(value)
    return NO_CAP if value.lower() == NO_CAP else value


def workflow_create(
    *,
    name: str,
    trigger_event: str = "",
    trigger_type: str = Workflow.EVENT,
    description: str = "",
    allow_reentry: bool = False,
    enabled: bool = False,
    graph: dict[str, Any] | None = None,
    frequency_cap: str = "",
) -> Workflow:
    """A new workflow. An event trigger names its event; a manual one (started for chosen
    contacts by the API or the admin) has none. Raises ValueError when they disagree."""
    if trigger_type == Workflow.MANUAL and trigger_event:
        raise ValueError("A manual workflow has no trigger event.")
    if trigger_type == Workflow.EVENT and not trigger_event:
        raise ValueError("An event-triggered workflow needs its trigger event.")
    if trigger_type not in (Workflow.EVENT, Workflow.MANUAL):
        raise ValueError(f"Unknown trigger type {trigger_type!r}: event or manual.")
    with transaction.atomic():
        workflow = Workflow.objects.create(
            name=name,
            trigger_type=trigger_type,
            trigger_event=current_event_name(trigger_event) if trigger_event else "",
            description=description,
            allow_reentry=allow_reentry,
            frequency_cap=_frequency_cap(frequency_cap),
            enabled=False,
        )
        if graph is not None:
            workflow_save_graph(workflow=workflow, document=graph)
        if enabled:
            Workflow.objects.filter(pk=workflow.pk).update(enabled=True)
            workflow.enabled = True
    return workflow


def workflow_update(
    *,
    workflow: Workflow,
    name: str | None = None,
    description: str | None = None,
    allow_reentry: bool | None = None,
    enabled: bool | None = None,
    trigger_event: str | None = None,
    frequency_cap: str | None = None,
) -> Workflow:
    """Changes the fields that stay editable while runs are active. The trigger never changes.
    Enabling a disabled workflow raises GraphError when its graph is incomplete or invalid."""
    stored = Workflow.objects.values_list("trigger_event", flat=True).get(pk=workflow.pk)
    if trigger_event is not None and current_event_name(trigger_event) != stored:
        raise TriggerImmutable(
            "The trigger event cannot change after creation; create a new workflow instead."
        )
    changes = {
        k: v
        for k, v in {
            "name": name,
            "description": description,
            "allow_reentry": allow_reentry,
            "enabled": enabled,
            "frequency_cap": None if frequency_cap is None else _frequency_cap(frequency_cap),
        }.items()
        if v is not None
    }
    with transaction.atomic():
        if enabled:
            # Under the row lock a draft save (graph.workflow_save_graph(draft=True)) takes
            # too: a disabled workflow's graph may be incomplete, an enabled one's never.
            locked = Workflow.objects.select_for_update().get(pk=workflow.pk)
            if not locked.enabled:
                workflow_check_complete(locked)
        for key, value in changes.items():
            setattr(workflow, key, value)
        if changes:
            workflow.save(update_fields=[*changes, "updated_at"])
    return workflow


class WorkflowBusy(ValueError):
    """A delete that would orphan running work."""


def workflow_delete(*, workflow: Workflow) -> None:
    """Deletes a workflow with its graph and finished executions. Refused while any execution
    is active: they would vanish mid-run. The row lock keeps a run from starting meanwhile."""
    with transaction.atomic():
        locked = Workflow.objects.select_for_update().filter(pk=workflow.pk).first()
        if locked is None:
            return
        active = workflow_active_count(locked)
        if active:
            raise WorkflowBusy(
                f"Workflow '{locked.name}' has {active} active execution(s) (running or "
                "waiting), so it cannot be deleted. Disable it and cancel them from its "
                "Executions tab (or wait for them to finish) first."
            )
        locked.delete()


def execution_delete(*, execution: Execution) -> None:
    """Deletes an ended execution and its history. Active ones can only be cancelled."""
    with transaction.atomic():
        locked = Execution.objects.select_for_update().filter(pk=execution.pk).first()
        if locked is None:
            return
        if locked.is_active:
            raise WorkflowBusy(
                f"Execution #{locked.pk} is {locked.status.lower()}: cancel it first; active "
                "executions cannot be deleted."
            )
        locked.delete()


def contact_erase(*, contact: Contact, by: str = "") -> dict[str, int]:
    """The privacy erase: cancels the contact's active runs, then removes the contact with
    its events, messages (the send ledger's copies of what it was sent) and executions.
    Returns what was removed, by kind."""
    with transaction.atomic():
        locked = Contact.objects.select_for_update().filter(pk=contact.pk).first()
        if locked is None:
            return {}
        cancelled = engine.executions_cancel_for_contact(contact=locked, by=by or "erase")
        _, removed = locked.delete()
    return {"cancelled": cancelled, **{k.split(".")[-1].lower(): n for k, n in removed.items()}}


def _copy_name(name: str) -> str:
    """ "<name> (Copy)", or "(Copy 2)", "(Copy 3)"... when taken; cut to fit the column."""
    limit = Workflow._meta.get_field("name").max_length or 200
    n = 1
    while True:
        suffix = " (Copy)" if n == 1 else f" (Copy {n})"
        candidate = name[: limit - len(suffix)] + suffix
        if not Workflow.objects.filter(name=candidate).exists():
            return candidate
        n += 1


def workflow_duplicate(*, workflow: Workflow, by: str = "") -> Workflow:
    """A disabled copy of `workflow`: "<name> (Copy)" (or the next free "(Copy N)"), with its
    trigger, description, re-entry, frequency cap and graph. The graph goes through its
    document and workflow_save_graph like any other editor's, so the copy is validated the same
    way and its Send Email steps link the same templates. Executions and history are not
    copied; a locked workflow can be duplicated (the copy has no runs)."""
    source = Workflow.objects.get(pk=workflow.pk)
    document = workflow_graph_document(source)
    attempts = 5
    for attempt in range(attempts):
        name = _copy_name(source.name)
        try:
            with transaction.atomic():
                copy = workflow_create(
                    name=name,
                    trigger_type=source.trigger_type,
                    trigger_event=source.trigger_event,
                    description=source.description,
                    allow_reentry=source.allow_reentry,
                    frequency_cap=source.frequency_cap,
                    enabled=False,
                )
                # A draft is copied as a draft (the copy is disabled).
                workflow_save_graph(workflow=copy, document=document, by=by, draft=True)
            return copy
        except IntegrityError:
            # Someone took the same copy name meanwhile (the name is unique): pick the next.
            if attempt == attempts - 1 or not Workflow.objects.filter(name=name).exists():
                raise
    raise AssertionError("unreachable")
