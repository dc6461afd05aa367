"""Admin for workflows and executions. Every change goes through the services, so the admin can
not bypass a rule (locking, immutable trigger) that the API and import obey."""

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.utils.html import format_html

from workflows_app import engine
from workflows_app.graph import (
    GraphError,
    WorkflowLocked,
    graph_validate,
    workflow_active_count,
    workflow_graph_document,
    workflow_save_graph,
)
from workflows_app.models import Execution, StepRun, Workflow
from workflows_app.services import workflow_create, workflow_update

CANCEL_PERMISSION = "workflows_app.cancel_execution"


class WorkflowForm(forms.ModelForm):
    graph = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 24, "style": "font-family: monospace; width: 90%"}),
        help_text="Steps and transitions as JSON (see docs/workflow-format.md). Saved whole; "
        "refused while the workflow has running or waiting executions.",
    )

    class Meta:
        model = Workflow
        fields = ("name", "description", "trigger_event", "allow_reentry", "enabled")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["trigger_event"].disabled = True
            self.fields["trigger_event"].help_text = "Fixed once created."
            self.initial["graph"] = json.dumps(workflow_graph_document(self.instance), indent=2)
        self.graph_document = None

    def clean_graph(self):
        raw = self.cleaned_data.get("graph") or ""
        document: dict[str, Any]
        if not raw.strip():
            document = {"steps": [], "transitions": []}
        else:
            try:
                document = json.loads(raw)
            except ValueError as exc:
                raise forms.ValidationError(f"Not valid JSON: {exc}") from exc
        if self.instance.pk and document == workflow_graph_document(self.instance):
            return raw  # unchanged: editing only the name or flags is allowed while locked
        try:
            graph_validate(document)
        except GraphError as exc:
            raise forms.ValidationError([str(e) for e in _messages(exc)]) from exc
        if self.instance.pk and (active := workflow_active_count(self.instance)):
            raise forms.ValidationError(str(WorkflowLocked(self.instance, active)))
        self.graph_document = document
        return raw


def _messages(exc: GraphError):
    for error in exc.errors:
        where = f"Step '{error['step']}'" if error.get("step") else "Graph"
        field = f" ({error['field']})" if error.get("field") else ""
        yield f"{where}{field}: {error['message']}"


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    form = WorkflowForm
    list_display = (
        "name",
        "trigger_event",
        "enabled",
        "allow_reentry",
        "active_executions",
        "updated_at",
    )
    list_filter = ("enabled",)
    search_fields = ("name", "trigger_event")
    actions = ["enable", "disable", "cancel_all"]
    fieldsets = (
        (None, {"fields": ("name", "description", "trigger_event", "allow_reentry", "enabled")}),
        ("Graph", {"fields": ("graph",)}),
    )

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _active=Count("executions", filter=Q(executions__status__in=Execution.ACTIVE))
            )
        )

    @admin.display(description="Active executions", ordering="_active")
    def active_executions(self, obj):
        return format_html(
            '<a href="/admin/workflows_app/execution/?workflow__id__exact={}'
            '&status__in=RUNNING,WAITING">{}</a>',
            obj.pk,
            obj._active,
        )

    def save_model(self, request, obj, form, change):
        if not change:
            created = workflow_create(
                name=obj.name,
                trigger_event=obj.trigger_event,
                description=obj.description,
                allow_reentry=obj.allow_reentry,
                enabled=obj.enabled,
                graph=form.graph_document,
            )
            obj.pk = created.pk
            return
        workflow = Workflow.objects.get(pk=obj.pk)
        try:
            if form.graph_document is not None:
                workflow_save_graph(workflow=workflow, document=form.graph_document)
        except (WorkflowLocked, GraphError) as exc:
            messages.error(request, f"The graph was not saved: {exc}")
        workflow_update(
            workflow=workflow,
            name=obj.name,
            description=obj.description,
            allow_reentry=obj.allow_reentry,
            enabled=obj.enabled,
        )

    @admin.action(description="Enable (start new executions)", permissions=["change"])
    def enable(self, request, queryset):
        for workflow in queryset:
            workflow_update(workflow=workflow, enabled=True)
        self.message_user(request, f"Enabled {queryset.count()} workflow(s).")

    @admin.action(
        description="Disable (stop new executions; running ones go on)", permissions=["change"]
    )
    def disable(self, request, queryset):
        for workflow in queryset:
            workflow_update(workflow=workflow, enabled=False)
        self.message_user(request, f"Disabled {queryset.count()} workflow(s).")

    @admin.action(description="Cancel all active executions", permissions=["cancel"])
    def cancel_all(self, request, queryset):
        total = sum(
            engine.executions_cancel_all(workflow=w, by=request.user.get_username())
            for w in queryset
        )
        self.message_user(request, f"Cancelled {total} execution(s).")

    def has_cancel_permission(self, request):
        return request.user.has_perm(CANCEL_PERMISSION)


class StepRunInline(admin.TabularInline):
    model = StepRun
    fields = (
        "step_key",
        "step_type",
        "status",
        "branch",
        "attempts",
        "started_at",
        "finished_at",
        "output",
        "error",
        "message",
    )
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "workflow",
        "contact",
        "status",
        "current_step",
        "waiting",
        "started_at",
        "updated_at",
    )
    list_filter = ("status", "workflow")
    search_fields = ("contact__email",)
    list_select_related = ("workflow", "contact", "current_step")
    show_full_result_count = False
    actions = ["cancel"]
    inlines = [StepRunInline]
    readonly_fields = (
        "workflow",
        "contact",
        "trigger",
        "status",
        "current_step",
        "pending_branch",
        "context",
        "wake_at",
        "waiting_for",
        "wait_started_at",
        "lease_until",
        "exit_reason",
        "error",
        "version",
        "started_at",
        "updated_at",
        "finished_at",
    )
    exclude = ("once",)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip().lower()
        if not term:
            return queryset, False
        return queryset.filter(contact__email__contains=term), False

    @admin.display(description="Waiting for")
    def waiting(self, obj):
        if obj.status != Execution.WAITING:
            return ""
        what = f"event '{obj.waiting_for}'" if obj.waiting_for else "timer"
        until = f" until {obj.wake_at:%Y-%m-%d %H:%M:%S}" if obj.wake_at else ""
        return what + until

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_cancel_permission(self, request):
        return request.user.has_perm(CANCEL_PERMISSION)

    @admin.action(description="Cancel selected executions", permissions=["cancel"])
    def cancel(self, request, queryset):
        by = request.user.get_username()
        count = sum(engine.execution_cancel(execution=e, by=by) for e in queryset)
        self.message_user(request, f"Cancelled {count} execution(s).")
