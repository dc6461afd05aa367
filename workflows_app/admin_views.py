"""The workflow page's extra admin views: the canvas's JSON endpoints, the Executions tab, the
execution page, cancelling and enable/disable. Thin: each parses input, checks the permission
and calls a service (canvas_save -> workflow_save_graph, engine.execution_cancel /
executions_cancel_all, workflow_update). WorkflowAdmin.get_urls wires them in.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.admin import helpers
from django.core.exceptions import BadRequest, PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_http_methods, require_POST

from contacts_app import safejson
from contacts_app.admin import StrictJSONField
from contacts_app.services import contact_data_size
from workflows_app import engine
from workflows_app.canvas import (
    canvas_field_suggestions,
    canvas_lock,
    canvas_save,
    canvas_state,
    canvas_step_counts,
)
from workflows_app.graph import GraphConflict, GraphError, WorkflowLocked, workflow_active_count
from workflows_app.models import Execution, StepRun, Workflow
from workflows_app.services import workflow_duplicate, workflow_update

if TYPE_CHECKING:
    from workflows_app.admin import WorkflowAdmin

CANCEL_PERMISSION = "workflows_app.cancel_execution"
CHANGE_WORKFLOW_PERMISSION = "workflows_app.change_workflow"
CONTACT_VIEW_PERMISSION = "contacts_app.view_contact"
MAX_ID = 2**63 - 1  # bigint: a larger id in a cursor is not ours
PAGE_SIZE = 50
STATUS_FILTERS = ["active", *(s for s, _ in Execution.STATUS_CHOICES)]


def can_cancel(request: HttpRequest) -> bool:
    return request.user.has_perm(CANCEL_PERMISSION)


def can_view_contacts(request: HttpRequest) -> bool:
    """Contact data, and what runs derive from it (execution context, step outputs), is shown
    only to users who may view contacts; the rest of a run (status, steps, errors) is not."""
    return request.user.has_perm(CONTACT_VIEW_PERMISSION)


# What an error may quote of the contact: an address (a refused recipient), a webhook's reply
# (receivers echo the request, whose default body is the contact), a URL rendered from fields.
_ADDRESS = re.compile(r"[^\s<>'\"(),;:\[\]{}]+@[^\s<>'\"(),;:\[\]{}]+")
_REPLY = re.compile(r"(HTTP \d{3}): .*", re.S)
_RENDERED_URL = re.compile(r"rendered URL (['\"]).*?\1(?=: )", re.S)


def error_redacted(text: str) -> str:
    """An error without the contact data it may quote; the kind of failure stays."""
    text = _REPLY.sub(r"\1: [reply hidden]", text)
    text = _RENDERED_URL.sub("rendered URL [hidden]", text)
    return _ADDRESS.sub("[address hidden]", text)


def error_shown(request: HttpRequest, text: str) -> str:
    """An execution's or a step's error as this user may see it (whole with the contact view
    permission, else error_redacted)."""
    return text if not text or can_view_contacts(request) else error_redacted(text)


def contact_label(request: HttpRequest, contact) -> str:
    """Who a run is for, as this user may see it: the email with the contact view permission,
    else the contact's id (enough to tell runs apart and to ask someone who may look)."""
    return contact.email if can_view_contacts(request) else f"contact #{contact.pk}"


def _workflow(request: HttpRequest, workflow_id: int, *, model_admin: WorkflowAdmin) -> Workflow:
    workflow = get_object_or_404(Workflow, pk=workflow_id)
    if not model_admin.has_view_permission(request, workflow):
        raise PermissionDenied
    return workflow


def _json_error(status: int, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"ok": False, "message": message, **extra}, status=status)


# --- Canvas JSON ------------------------------------------------------------------------------


@require_http_methods(["GET", "PUT", "POST"])
def canvas_view(request: HttpRequest, workflow_id: int, *, model_admin: WorkflowAdmin):
    """GET: graph + palette + templates + lock + live counts. PUT/POST {graph, graph_version}:
    saves the whole graph (200), or 400 {errors: [{step, field, message}]}, 409 when locked or
    changed by someone else since graph_version (compared under the workflow's row lock), 403
    without the change permission."""
    workflow = get_object_or_404(Workflow, pk=workflow_id)
    if not model_admin.has_view_permission(request, workflow):
        return _json_error(403, "You may not view this workflow.")
    if request.method == "GET":
        if request.GET.get("only") == "counts":
            return JsonResponse(
                {"counts": canvas_step_counts(workflow), "lock": canvas_lock(workflow)}
            )
        state = canvas_state(workflow)
        state["can_change"] = model_admin.has_change_permission(request, workflow)
        return _canvas_json(state)

    if not model_admin.has_change_permission(request, workflow):
        return _json_error(403, "You may not change this workflow.")
    try:
        body = safejson.loads(request.body or b"")
    except ValueError as exc:
        return _json_error(400, f"The request body is not valid JSON: {exc}", errors=[])
    graph, expected = (
        (body.get("graph"), body.get("graph_version")) if isinstance(body, dict) else (None, None)
    )
    if not isinstance(graph, dict):
        return _json_error(
            400,
            "Send {graph: {steps, transitions}, graph_version}: graph must be an object.",
            errors=[],
        )
    if isinstance(expected, bool) or not isinstance(expected, int):
        return _json_error(
            400,
            "Send the graph_version you started from (a whole number), so a save can not "
            "overwrite someone else's.",
            errors=[],
        )
    try:
        canvas_save(
            workflow=workflow,
            document=graph,
            expected_version=expected,
            by=request.user.get_username(),
        )
    except GraphError as exc:
        return _json_error(
            400, "The graph was not saved; fix the problems shown.", errors=exc.errors
        )
    except WorkflowLocked as exc:
        return _json_error(409, str(exc), locked=True, active=exc.active)
    except GraphConflict as exc:
        return _json_error(409, str(exc), conflict=True, graph_version=exc.current_version)
    state = canvas_state(workflow)
    state["ok"] = True
    return _canvas_json(state)


def _canvas_json(state: dict[str, Any]) -> JsonResponse:
    """Strict JSON: JSON.parse refuses Infinity and NaN, and one in the graph would leave the
    canvas blank for good. The database refuses non-finite positions (migration 0011); a
    number that is not finite all the same goes out as 0, a position the canvas can show."""
    return JsonResponse(_finite(state), json_dumps_params={"allow_nan": False})


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return 0
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def canvas_fields_view(request: HttpRequest, workflow_id: int, *, model_admin: WorkflowAdmin):
    workflow = _workflow(request, workflow_id, model_admin=model_admin)
    fields = canvas_field_suggestions(workflow, contact_keys=can_view_contacts(request))
    return JsonResponse({"fields": fields})


# --- Enable / disable -------------------------------------------------------------------------


@require_POST
def enabled_view(request: HttpRequest, workflow_id: int, *, model_admin: WorkflowAdmin):
    workflow = get_object_or_404(Workflow, pk=workflow_id)
    if not model_admin.has_change_permission(request, workflow):
        raise PermissionDenied
    enabled = request.POST.get("enabled") == "true"
    try:
        workflow_update(workflow=workflow, enabled=enabled)
    except GraphError as exc:  # a draft graph (built step by step through the API)
        messages.error(request, f"Not enabled: the graph is incomplete or invalid: {exc}")
        return redirect(reverse("admin:workflows_app_workflow_change", args=[workflow.pk]))
    if enabled and workflow.trigger_type == Workflow.MANUAL:
        messages.success(request, "Enabled: runs can now be started for contacts.")
    elif enabled:
        messages.success(
            request, f"Enabled: each new '{workflow.trigger_event}' event now starts a run."
        )
    else:
        active = workflow_active_count(workflow)
        messages.success(
            request,
            f"Disabled: no new executions start. The {active} active execution(s) carry on; "
            "cancel them from the Executions tab to stop them.",
        )
    return redirect(reverse("admin:workflows_app_workflow_change", args=[workflow.pk]))


# --- Duplicate --------------------------------------------------------------------------------


def duplicated_message(workflow: Workflow, copy: Workflow) -> str:
    return (
        f"Duplicated '{workflow.name}' as '{copy.name}'. The copy is disabled: check it, then "
        "enable it."
    )


@require_POST
def duplicate_view(request: HttpRequest, workflow_id: int, *, model_admin: WorkflowAdmin):
    """The workflow page's Duplicate button: a disabled copy, then that copy's page."""
    workflow = _workflow(request, workflow_id, model_admin=model_admin)
    if not model_admin.has_add_permission(request):
        raise PermissionDenied
    try:
        copy = workflow_duplicate(workflow=workflow, by=request.user.get_username())
    except GraphError as exc:  # a stored graph that no longer validates (say, a type changed)
        messages.error(request, f"Not duplicated: {exc}")
        return redirect(reverse("admin:workflows_app_workflow_change", args=[workflow.pk]))
    messages.success(request, duplicated_message(workflow, copy))
    return redirect(reverse("admin:workflows_app_workflow_change", args=[copy.pk]))


# --- Executions tab ---------------------------------------------------------------------------


def _cursor(execution: Execution) -> str:
    return f"{execution.started_at.isoformat()}_{execution.pk}"


def _parse_cursor(raw: str) -> tuple[datetime, int] | None:
    """None without a cursor; BadRequest (400) for one that _cursor did not make."""
    if not raw:
        return None
    when, _, pk = raw.rpartition("_")
    try:
        parsed = parse_datetime(when) if when else None
        if parsed is not None:
            # In UTC (a cursor without an offset is UTC already): Python takes offsets up to
            # ±23:59, PostgreSQL only up to ±15:59, and the same instant in UTC is fine.
            parsed = timezone.make_aware(parsed, UTC) if timezone.is_naive(parsed) else parsed
            parsed = parsed.astimezone(UTC)
    except ValueError:  # well-formed but impossible, e.g. month 13
        parsed = None
    except OverflowError:  # in UTC, outside datetime's years 1-9999 (9999-12-31T23:59-23:59)
        parsed = None
    if parsed is None or not (pk.isascii() and pk.isdigit()) or int(pk) > MAX_ID:
        raise BadRequest("That page link is damaged: start again from the first page.")
    return parsed, int(pk)


def _waiting_text(execution: Execution) -> str:
    if execution.status != Execution.WAITING:
        return ""
    if execution.pending_branch.startswith(engine.HOLD_PREFIX):  # a held step: quiet hours
        return f"{execution.pending_branch.removeprefix(engine.HOLD_PREFIX)} (held)"
    return f"event '{execution.waiting_for}'" if execution.waiting_for else "timer"


def _keyset_page(
    queryset, statuses: list[str], before, after
) -> tuple[list[Execution], bool, bool]:
    """One page, newest first, as (rows, has_newer, has_older). Each status is read through
    the (workflow, status, started_at) index and the pages merged, so "all statuses" costs
    six short index range scans rather than sorting every execution of the workflow."""
    newer = after is not None
    if newer:
        when, pk = after
        queryset = queryset.filter(Q(started_at__gt=when) | Q(started_at=when, pk__gt=pk))
        order = ("started_at", "id")
    else:
        if before:
            when, pk = before
            queryset = queryset.filter(Q(started_at__lt=when) | Q(started_at=when, pk__lt=pk))
        order = ("-started_at", "-id")
    rows: list[Execution] = []
    for status in statuses:
        rows += queryset.filter(status=status).order_by(*order)[: PAGE_SIZE + 1]
    rows.sort(key=lambda e: (e.started_at, e.pk), reverse=not newer)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    if newer:
        return rows[::-1], more, True
    return rows, before is not None, more


def executions_view(request: HttpRequest, workflow_id: int, *, model_admin: WorkflowAdmin):
    """Newest first, keyset-paginated on (started_at, id): a page costs the same at row 50 or
    100,000, and nothing counts the whole table."""
    workflow = _workflow(request, workflow_id, model_admin=model_admin)
    status = request.GET.get("status", "")
    if status not in STATUS_FILTERS:
        status = ""
    show_contacts = can_view_contacts(request)
    # Searching by email would tell a user without the contact view whose runs these are.
    q = request.GET.get("q", "").strip() if show_contacts else ""
    try:  # (NUL anywhere in the query string is refused earlier, by RejectNulQueryMiddleware)
        before = _parse_cursor(request.GET.get("before", ""))
        after = _parse_cursor(request.GET.get("after", ""))
    except BadRequest as exc:
        return _bad_request(request, workflow, str(exc), model_admin=model_admin)
    queryset = Execution.objects.filter(workflow=workflow).select_related("contact", "current_step")
    if q:
        queryset = queryset.filter(contact__email__contains=q.lower())
    if status == "active":
        statuses = list(Execution.ACTIVE)
    elif status:
        statuses = [status]
    else:
        statuses = [s for s, _ in Execution.STATUS_CHOICES]
    page, has_newer, has_older = _keyset_page(queryset, statuses, before, after)

    def link(**params: str) -> str:
        keep = {"status": status, "q": q, **params}
        return "?" + "&".join(f"{k}={v}" for k, v in ((k, _quote(v)) for k, v in keep.items()) if v)

    rows = [
        {"execution": e, "waiting": _waiting_text(e), "contact": contact_label(request, e.contact)}
        for e in page
    ]
    active = workflow_active_count(workflow)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": Workflow._meta,
        "original": workflow,
        "workflow": workflow,
        "title": f"Executions of {workflow.name}",
        "tab": "executions",
        "rows": rows,
        "status": status,
        "q": q,
        "statuses": [("", "All"), ("active", "Active"), *Execution.STATUS_CHOICES],
        "status_links": [
            (value, label, link(status=value) if value else link(status=""))
            for value, label in [("", "All"), ("active", "Active"), *Execution.STATUS_CHOICES]
        ],
        "older_url": link(before=_cursor(page[-1])) if has_older and page else "",
        "newer_url": link(after=_cursor(page[0])) if has_newer and page else "",
        "first_url": link() if before or after else "",
        "active": active,
        "can_cancel": can_cancel(request),
        "show_contacts": show_contacts,
    }
    return TemplateResponse(request, "admin/workflows_app/workflow/executions.html", context)


def _bad_request(
    request: HttpRequest, workflow: Workflow, message: str, *, model_admin: WorkflowAdmin
) -> TemplateResponse:
    """A malformed query parameter: 400 with the reason, in the admin's look."""
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": Workflow._meta,
        "original": workflow,
        "workflow": workflow,
        "title": "Bad request",
        "tab": "executions",
        "message": message,
        "back": reverse("admin:workflows_app_workflow_executions", args=[workflow.pk]),
    }
    return TemplateResponse(
        request, "admin/workflows_app/workflow/bad_request.html", context, status=400
    )


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def execution_view(
    request: HttpRequest, workflow_id: int, execution_id: int, *, model_admin: WorkflowAdmin
):
    workflow = _workflow(request, workflow_id, model_admin=model_admin)
    execution = get_object_or_404(
        Execution.objects.select_related("contact", "current_step", "trigger"),
        pk=execution_id,
        workflow=workflow,
    )
    runs = list(
        StepRun.objects.filter(execution=execution).select_related("step", "message").order_by("id")
    )
    show_data = can_view_contacts(request)  # context and outputs carry contact data
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": Workflow._meta,
        "original": workflow,
        "workflow": workflow,
        "execution": execution,
        "title": f"Execution #{execution.pk}",
        "tab": "executions",
        "runs": [
            {
                "run": run,
                "name": (run.step.name or run.step.key) if run.step else run.step_key,
                "output": _pretty(run.output) if run.output is not None and show_data else "",
                "error": error_shown(request, run.error),
            }
            for run in runs
        ],
        "waiting": _waiting_text(execution),
        "show_data": show_data,
        "execution_error": error_shown(request, execution.error),
        "contact": contact_label(request, execution.contact),
        "context_json": _pretty(execution.context) if show_data else "",
        "contact_data_json": _pretty(execution.contact.data) if show_data else "",
        "can_cancel": can_cancel(request),
    }
    return TemplateResponse(request, "admin/workflows_app/workflow/execution.html", context)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


# --- Cancelling (GET: a confirmation stating the number; POST: do it) -------------------------


@require_http_methods(["GET", "POST"])
def execution_cancel_view(
    request: HttpRequest, workflow_id: int, execution_id: int, *, model_admin: WorkflowAdmin
):
    workflow = _workflow(request, workflow_id, model_admin=model_admin)
    if not can_cancel(request):
        raise PermissionDenied
    execution = get_object_or_404(
        Execution.objects.select_related("contact"), pk=execution_id, workflow=workflow
    )
    back = reverse("admin:workflows_app_workflow_execution", args=[workflow.pk, execution.pk])
    if request.method == "POST":
        done = engine.execution_cancel(execution=execution, by=request.user.get_username())
        if done:
            messages.success(request, f"Cancelled execution #{execution.pk}.")
        else:
            messages.warning(request, f"Execution #{execution.pk} had already ended.")
        return redirect(_safe_next(request) or back)
    who = contact_label(request, execution.contact)
    return _confirm(
        model_admin,
        request,
        workflow,
        count=1 if execution.is_active else 0,
        question=f"Cancel execution #{execution.pk} of {who}?",
        back=_safe_next(request) or back,
    )


@require_http_methods(["GET", "POST"])
def executions_cancel_all_view(
    request: HttpRequest, workflow_id: int, *, model_admin: WorkflowAdmin
):
    workflow = _workflow(request, workflow_id, model_admin=model_admin)
    if not can_cancel(request):
        raise PermissionDenied
    back = reverse("admin:workflows_app_workflow_executions", args=[workflow.pk])
    if request.method == "POST":
        count = engine.executions_cancel_all(workflow=workflow, by=request.user.get_username())
        messages.success(request, f"Cancelled {count} execution(s) of {workflow.name}.")
        return redirect(back)
    active = workflow_active_count(workflow)
    return _confirm(
        model_admin,
        request,
        workflow,
        count=active,
        question=f"Cancel all active executions of {workflow.name}?",
        back=back,
    )


def _safe_next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    return target if target.startswith("/admin/") else ""


def _confirm(model_admin, request, workflow, *, count: int, question: str, back: str):
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": Workflow._meta,
        "original": workflow,
        "workflow": workflow,
        "title": question,
        "tab": "executions",
        "count": count,
        "back": back,
    }
    return TemplateResponse(request, "admin/workflows_app/workflow/cancel_confirm.html", context)


# --- Starting a manual workflow for chosen contacts (the contacts list's action) ---------------

START_LISTED = 20  # contacts named on the confirmation page; the rest are counted
START_MAX = 1000  # contacts one admin action may start runs for


def _startable():
    """The workflows a person may start by hand: enabled, with a manual trigger."""
    return Workflow.objects.filter(trigger_type=Workflow.MANUAL, enabled=True)


class StartManualForm(forms.Form):
    workflow = forms.ModelChoiceField(
        queryset=_startable(),
        empty_label=None,
        help_text="Enabled workflows with a manual trigger.",
    )
    context = StrictJSONField(
        required=False,
        help_text="Optional JSON object: the run's context, as the trigger event's data is for "
        'an event workflow ({{ orderId }} and {{ event.orderId }} for {"orderId": "A-1"}).',
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
    )

    def clean_context(self):
        value = self.cleaned_data.get("context")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("The context must be a JSON object.")
        if problem := safejson.unstorable(value):
            raise forms.ValidationError(f"The context can not be stored: {problem}.")
        limit = settings.CONTACT_MAX_DATA_BYTES
        if limit and contact_data_size(value) > limit:
            raise forms.ValidationError(f"The context is larger than {limit} bytes.")
        return value


def can_start_manual(request: HttpRequest, model_admin) -> bool:
    """Starting runs changes workflows' state (change workflow) and is chosen from the contacts
    list (view contact)."""
    return request.user.has_perm(CHANGE_WORKFLOW_PERMISSION) and model_admin.has_view_permission(
        request
    )


def start_manual_action(model_admin, request: HttpRequest, queryset):
    """The admin action: a page choosing the workflow and context, then one start per contact
    through engine.execution_start_manual (the API's rules: enabled, re-entry). Reports how
    many started and why the others were refused."""
    if not can_start_manual(request, model_admin):
        raise PermissionDenied
    total = queryset.count()
    if total > START_MAX:
        # Each start is its own transaction, in this request: a bounded number of them.
        messages.error(
            request,
            f"{total} contacts are selected; the admin starts runs for at most {START_MAX} at a "
            "time. Select fewer, or start them with POST /v1/workflows/<id>/executions.",
        )
        return None
    form = StartManualForm(request.POST if "apply" in request.POST else None)
    if form.is_bound and form.is_valid():
        workflow = form.cleaned_data["workflow"]
        started, refused = 0, []
        for contact in queryset.order_by("pk").iterator():
            try:
                engine.execution_start_manual(
                    workflow=workflow,
                    contact=contact,
                    context=form.cleaned_data["context"],
                    now=timezone.now(),
                )
                started += 1
            except engine.StartRefused as exc:
                refused.append(str(exc))
        messages.success(request, f"Started {started} run(s) of '{workflow.name}'.")
        if refused:
            more = f" (and {len(refused) - 3} more)" if len(refused) > 3 else ""
            shown = "; ".join(refused[:3]) + more
            messages.warning(request, f"Refused {len(refused)}: {shown}")
        return None  # back to the contacts list
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": "Start a manual workflow",
        "form": form,
        "total": total,
        "listed": list(queryset.order_by("email").values_list("email", flat=True)[:START_LISTED]),
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "has_workflows": _startable().exists(),
    }
    return TemplateResponse(request, "admin/workflows_app/start_manual.html", context)
