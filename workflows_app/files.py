"""The workflow file format: one JSON document of templates and workflows (docs/workflow-format.md).

Import validates the whole document first and changes nothing if any part is invalid; it obeys
locking (a workflow with active runs keeps its graph, and the import fails saying so).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from templates_app.mjml import mjml_display_html
from templates_app.models import Template
from templates_app.policy import validate_frequency_cap_override
from templates_app.rendering import template_problems
from workflows_app.event_names import current_event_name
from workflows_app.graph import GraphError, WorkflowLocked, graph_validate, workflow_save_graph
from workflows_app.models import Workflow
from workflows_app.services import TriggerImmutable, workflow_create, workflow_update
from workflows_app.steps import STEP_TYPES

TEMPLATE_FIELDS = ("name", "type", "subject", "html", "mjml", "text", "from_email", "reply_to")
WORKFLOW_FIELDS = (
    "name",
    "description",
    "trigger_type",
    "trigger_event",
    "allow_reentry",
    "frequency_cap",
    "enabled",
)


class DocumentError(ValueError):
    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


def _check_template(index: int, raw: Any) -> list[str]:
    where = f"templates[{index}]"
    if not isinstance(raw, dict):
        return [f"{where}: must be an object"]
    errors = []
    for field in ("name", "subject"):
        if not isinstance(raw.get(field), str) or not raw.get(field):
            errors.append(f"{where}.{field}: required text")
    # The body is HTML (`html`) or MJML (`mjml`), one of the two.
    bodies = [f for f in ("html", "mjml") if raw.get(f) is not None]
    if not bodies:
        errors.append(f"{where}.html: required text (or 'mjml', for an MJML template)")
    elif len(bodies) > 1:
        errors.append(f"{where}: 'html' and 'mjml' together: give one of the two")
    elif not isinstance(raw[bodies[0]], str) or not raw[bodies[0]]:
        errors.append(f"{where}.{bodies[0]}: required text")
    if raw.get("type", Template.MARKETING) not in (Template.MARKETING, Template.TRANSACTIONAL):
        errors.append(f"{where}.type: 'marketing' or 'transactional'")
    unknown = set(raw) - set(TEMPLATE_FIELDS)
    if unknown:
        errors.append(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    if not errors:
        for problem in template_problems(
            subject=raw["subject"],
            html_body=raw.get("html") or "",
            text_body=raw.get("text") or "",
            mjml_body=raw.get("mjml") or "",
        ):
            errors.append(f"{where} ({raw['name']}).{problem.field}: {problem.message}")
    return errors


def document_validate(document: Any) -> None:
    if not isinstance(document, dict):
        raise DocumentError(["the document must be an object with 'templates' and 'workflows'"])
    errors: list[str] = []
    unknown = set(document) - {"templates", "workflows"}
    if unknown:
        errors.append(f"unknown top-level keys: {', '.join(sorted(unknown))}")
    templates = document.get("templates", [])
    workflows = document.get("workflows", [])
    if not isinstance(templates, list) or not isinstance(workflows, list):
        raise DocumentError(["'templates' and 'workflows' must be lists"])
    names = set(Template.objects.values_list("name", flat=True))
    for index, raw in enumerate(templates):
        errors += _check_template(index, raw)
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            names.add(raw["name"])
    seen: set[str] = set()
    for index, raw in enumerate(workflows):
        where = f"workflows[{index}]"
        if not isinstance(raw, dict):
            errors.append(f"{where}: must be an object")
            continue
        name, trigger = raw.get("name"), raw.get("trigger_event")
        if not isinstance(name, str) or not name:
            errors.append(f"{where}.name: required text")
            continue
        where = f"workflow '{name}'"
        if name in seen:
            errors.append(f"{where}: appears twice")
        seen.add(name)
        kind = raw.get("trigger_type", Workflow.EVENT)
        existing = Workflow.objects.filter(name=name).first()
        if kind not in (Workflow.EVENT, Workflow.MANUAL):
            errors.append(f"{where}.trigger_type: 'event' (the default) or 'manual'")
        elif kind == Workflow.MANUAL:
            if trigger not in (None, ""):
                errors.append(
                    f"{where}.trigger_event: a manual workflow has none (it is started by the "
                    "API or the admin)"
                )
        elif not isinstance(trigger, str) or not trigger or len(trigger) > 255:
            errors.append(f"{where}.trigger_event: required text (at most 255)")
        if existing and kind in (Workflow.EVENT, Workflow.MANUAL):
            if kind != existing.trigger_type:
                errors.append(
                    f"{where}.trigger_type: cannot change an existing workflow's trigger type "
                    f"({existing.trigger_type!r})"
                )
            elif (
                kind == Workflow.EVENT
                and isinstance(trigger, str)
                and current_event_name(trigger) != existing.trigger_event
            ):
                errors.append(
                    f"{where}.trigger_event: cannot change an existing workflow's trigger "
                    f"({existing.trigger_event!r})"
                )
        for flag in ("allow_reentry", "enabled"):
            if flag in raw and not isinstance(raw[flag], bool):
                errors.append(f"{where}.{flag}: true or false")
        cap = "" if raw.get("frequency_cap") is None else raw["frequency_cap"]
        try:
            if not isinstance(cap, str) or len(cap) > 20:
                raise ValidationError("text of at most 20 characters")
            validate_frequency_cap_override(cap)
        except ValidationError as exc:
            errors.append(f"{where}.frequency_cap: {' '.join(exc.messages)}")
        unknown = set(raw) - set(WORKFLOW_FIELDS) - {"steps", "transitions"}
        if unknown:
            errors.append(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        try:
            graph_validate(raw, template_names=names)
        except GraphError as exc:
            errors += [f"{where}: {e}" for e in str(exc).split("; ")]
    if errors:
        raise DocumentError(errors)


def document_import(document: Any) -> dict[str, int]:
    """Creates or updates templates and workflows by name, all or nothing."""
    document_validate(document)
    counts = {"templates": 0, "workflows": 0}
    try:
        with transaction.atomic():
            for raw in document.get("templates") or []:
                values = {f: raw.get(f) or "" for f in TEMPLATE_FIELDS if f != "name"}
                values["type"] = raw.get("type") or Template.MARKETING
                if values["mjml"]:
                    values["html"] = mjml_display_html(values["mjml"])
                Template.objects.update_or_create(name=raw["name"], defaults=values)
                counts["templates"] += 1
            for raw in document.get("workflows") or []:
                graph = {
                    "steps": raw.get("steps") or [],
                    "transitions": raw.get("transitions") or [],
                }
                workflow = Workflow.objects.filter(name=raw["name"]).first()
                if workflow is None:
                    workflow = workflow_create(
                        name=raw["name"],
                        trigger_type=raw.get("trigger_type", Workflow.EVENT),
                        trigger_event=raw.get("trigger_event") or "",
                        description=raw.get("description") or "",
                        allow_reentry=bool(raw.get("allow_reentry")),
                        frequency_cap=raw.get("frequency_cap") or "",
                        graph=graph,
                    )
                else:
                    workflow_save_graph(workflow=workflow, document=graph)
                workflow_update(
                    workflow=workflow,
                    description=raw.get("description") or "",
                    allow_reentry=bool(raw.get("allow_reentry")),
                    frequency_cap=raw.get("frequency_cap") or "",
                    enabled=bool(raw.get("enabled")),
                )
                counts["workflows"] += 1
    except (WorkflowLocked, TriggerImmutable, GraphError) as exc:
        raise DocumentError([str(exc)]) from exc
    return counts


def document_export(names: list[str] | None = None) -> dict[str, Any]:
    from workflows_app.graph import workflow_graph_document

    workflows = Workflow.objects.order_by("name")
    if names:
        workflows = workflows.filter(name__in=names)
        missing = set(names) - set(workflows.values_list("name", flat=True))
        if missing:
            raise DocumentError([f"no workflow named {n!r}" for n in sorted(missing)])
    out_workflows = []
    used_templates: set[str] = set()
    for workflow in workflows:
        graph = workflow_graph_document(workflow)
        for step in graph["steps"]:
            field = STEP_TYPES[step["type"]].template_field if step["type"] in STEP_TYPES else ""
            if field and step["config"].get(field):
                used_templates.add(step["config"][field])
        # An event workflow's entry stays as it always was; a manual one says so instead.
        trigger = (
            {"trigger_type": Workflow.MANUAL}
            if workflow.trigger_type == Workflow.MANUAL
            else {"trigger_event": workflow.trigger_event}
        )
        out_workflows.append(
            {
                "name": workflow.name,
                "description": workflow.description,
                **trigger,
                "allow_reentry": workflow.allow_reentry,
                # Written only when set: empty (the setting's cap) is what an absent key means.
                **({"frequency_cap": workflow.frequency_cap} if workflow.frequency_cap else {}),
                "enabled": workflow.enabled,
                **graph,
            }
        )
    templates = Template.objects.order_by("name")
    if names:
        templates = templates.filter(name__in=used_templates)
    return {
        "templates": [
            {
                "name": t.name,
                "type": t.type,
                "subject": t.subject,
                # An MJML template is its MJML (its html is derived from it).
                **({"mjml": t.mjml} if t.mjml else {"html": t.html}),
                "text": t.text or None,
                "from_email": t.from_email,
                "reply_to": t.reply_to,
            }
            for t in templates
        ],
        "workflows": out_workflows,
    }
