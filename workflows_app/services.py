"""Workflow actions used by every path (admin, API, import, shell)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from workflows_app.graph import workflow_save_graph
from workflows_app.models import Workflow


class TriggerImmutable(ValueError):
    pass


def workflow_create(
    *,
    name: str,
    trigger_event: str,
    description: str = "",
    allow_reentry: bool = False,
    enabled: bool = False,
    graph: dict[str, Any] | None = None,
) -> Workflow:
    with transaction.atomic():
        workflow = Workflow.objects.create(
            name=name,
            trigger_event=trigger_event,
            description=description,
            allow_reentry=allow_reentry,
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
) -> Workflow:
    """Changes the fields that stay editable while runs are active. The trigger never changes."""
    stored = Workflow.objects.values_list("trigger_event", flat=True).get(pk=workflow.pk)
    if trigger_event is not None and trigger_event != stored:
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
        }.items()
        if v is not None
    }
    for key, value in changes.items():
        setattr(workflow, key, value)
    if changes:
        workflow.save(update_fields=[*changes, "updated_at"])
    return workflow
