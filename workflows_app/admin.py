"""Admin for workflows and executions. Every change goes through the services, so the admin can
not bypass a rule (locking, immutable trigger) that the API and import obey."""

from functools import update_wrapper

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from contacts_app.admin import ContactAdmin as BaseContactAdmin
from contacts_app.models import Contact
from workflows_app import (
    admin_simulate,
    admin_stats,
    admin_system,  # noqa: F401 - registers the System page
    admin_tasks,  # noqa: F401 - replaces django-q2's admin with a read-only one
    admin_views,
    engine,
)
from workflows_app.admin_views import CANCEL_PERMISSION
from workflows_app.graph import GraphError, workflow_active_count, workflow_check_complete
from workflows_app.models import Execution, StepRun, Workflow
from workflows_app.services import (
    WorkflowBusy,
    contact_erase,
    execution_delete,
    workflow_create,
    workflow_delete,
    workflow_duplicate,
    workflow_update,
)


class RefuseBusyDeletes:
    """Deletes through a service that refuses to orphan running work. The single delete page
    says why before asking; a bulk delete removes what it may and names what it kept."""

    def busy_reason(self, obj) -> str:
        raise NotImplementedError

    def delete_one(self, obj) -> None:
        raise NotImplementedError

    def delete_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, object_id)  # type: ignore[attr-defined]
        reason = self.busy_reason(obj) if obj is not None else ""
        if not reason:
            try:
                return super().delete_view(request, object_id, extra_context)  # type: ignore[misc]
            except WorkflowBusy as exc:  # became busy after the confirmation page was shown
                reason = str(exc)
        self.message_user(request, reason, messages.ERROR)  # type: ignore[attr-defined]
        opts = self.model._meta  # type: ignore[attr-defined]
        return HttpResponseRedirect(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        )

    def delete_model(self, request, obj):
        self.delete_one(obj)

    def delete_queryset(self, request, queryset):
        kept = []
        for obj in queryset:
            try:
                self.delete_one(obj)
            except WorkflowBusy as exc:
                kept.append(str(exc))
        for reason in kept:
            self.message_user(request, f"Not deleted: {reason}", messages.ERROR)  # type: ignore[attr-defined]


class WorkflowForm(forms.ModelForm):
    """Name, description and flags; the graph is edited on the canvas (admin_views.canvas_view)
    or imported as a file, both through workflow_save_graph."""

    class Meta:
        model = Workflow
        fields = (
            "name",
            "description",
            "trigger_type",
            "trigger_event",
            "allow_reentry",
            "frequency_cap",
            "enabled",
        )
        widgets = {"trigger_type": forms.RadioSelect}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A user who may only view gets a form without fields (all are read-only then).
        for name in ("trigger_type", "trigger_event"):
            if self.instance.pk and name in self.fields:
                self.fields[name].disabled = True
                self.fields[name].help_text = "Fixed once created."
        if not self.instance.pk and "trigger_event" in self.fields:
            field = self.fields["trigger_event"]
            field.help_text = "The tracked event that starts it; empty for a manual trigger."

    def clean(self):
        super().clean()
        cleaned = self.cleaned_data
        if self.instance.pk:
            return cleaned
        kind, event = cleaned.get("trigger_type"), cleaned.get("trigger_event")
        if kind == Workflow.MANUAL and event:
            self.add_error(
                "trigger_event",
                "A manual workflow has no trigger event (it is started by the API or the "
                "contacts list's action): leave this empty.",
            )
        elif kind == Workflow.EVENT and not event and "trigger_event" not in self.errors:
            self.add_error("trigger_event", "An event trigger needs the event that starts it.")
        return cleaned

    def clean_enabled(self):
        enabled = self.cleaned_data.get("enabled")
        stored = Workflow.objects.filter(pk=self.instance.pk).first() if self.instance.pk else None
        if enabled and stored is not None and not stored.enabled:
            try:  # what workflow_update checks again under the row lock
                workflow_check_complete(stored)
            except GraphError as exc:
                raise forms.ValidationError(f"The graph is incomplete or invalid: {exc}") from exc
        return enabled


@admin.register(Workflow)
class WorkflowAdmin(RefuseBusyDeletes, admin.ModelAdmin):
    form = WorkflowForm
    list_display = (
        "name",
        "trigger",
        "enabled",
        "allow_reentry",
        "active_executions",
        "updated_at",
    )
    list_filter = ("enabled", "trigger_type")
    search_fields = ("name", "trigger_event")
    actions = ["enable", "disable", "duplicate", "cancel_all"]
    fields = WorkflowForm.Meta.fields
    readonly_fields = ("webhook_signing_secret",)
    change_form_template = "admin/workflows_app/workflow/change_form.html"

    def get_urls(self):
        def view(func):
            def wrapper(request, *args, **kwargs):
                return func(request, *args, model_admin=self, **kwargs)

            return self.admin_site.admin_view(update_wrapper(wrapper, func))

        info = "workflows_app_workflow"
        return [
            path("<int:workflow_id>/canvas/", view(admin_views.canvas_view), name=f"{info}_canvas"),
            path(
                "<int:workflow_id>/canvas/fields/",
                view(admin_views.canvas_fields_view),
                name=f"{info}_canvas_fields",
            ),
            path(
                "<int:workflow_id>/canvas/simulate/",
                view(admin_simulate.canvas_simulate_view),
                name=f"{info}_canvas_simulate",
            ),
            path(
                "<int:workflow_id>/canvas/stats/",
                view(admin_stats.canvas_stats_view),
                name=f"{info}_canvas_stats",
            ),
            path(
                "<int:workflow_id>/enabled/", view(admin_views.enabled_view), name=f"{info}_enabled"
            ),
            path(
                "<int:workflow_id>/duplicate/",
                view(admin_views.duplicate_view),
                name=f"{info}_duplicate",
            ),
            path(
                "<int:workflow_id>/executions/",
                view(admin_views.executions_view),
                name=f"{info}_executions",
            ),
            path(
                "<int:workflow_id>/executions/cancel-all/",
                view(admin_views.executions_cancel_all_view),
                name=f"{info}_cancel_all",
            ),
            path(
                "<int:workflow_id>/executions/<int:execution_id>/",
                view(admin_views.execution_view),
                name=f"{info}_execution",
            ),
            path(
                "<int:workflow_id>/executions/<int:execution_id>/cancel/",
                view(admin_views.execution_cancel_view),
                name=f"{info}_execution_cancel",
            ),
            *super().get_urls(),
        ]

    def get_fields(self, request, obj=None):
        return self.fields + (("webhook_signing_secret",) if obj else ())

    @admin.display(description="Trigger", ordering="trigger_event")
    def trigger(self, obj):
        return "Manual" if obj.trigger_type == Workflow.MANUAL else obj.trigger_event

    @admin.display(description="Webhook signing secret")
    def webhook_signing_secret(self, obj):
        return format_html(
            "<code>{}</code><div class='help'>Webhook steps sign their requests with this "
            "(Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature). Verify with "
            "any Standard Webhooks library.</div>",
            obj.signing_secret,
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra = {"tab": "editor", "can_cancel": admin_views.can_cancel(request)}
        if object_id and object_id.isdigit():
            workflow = Workflow.objects.filter(pk=object_id).first()
            if workflow is not None:
                extra["active"] = workflow_active_count(workflow)
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def response_add(self, request, obj, post_url_continue=None):
        # Straight on to the canvas: a new workflow's next step is always its graph.
        if "_addanother" in request.POST:
            return super().response_add(request, obj, post_url_continue)
        self.message_user(request, f"Created {obj.name}. Now build its graph on the canvas.")
        return HttpResponseRedirect(reverse("admin:workflows_app_workflow_change", args=[obj.pk]))

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
            '<a href="{}?status=active">{}</a>',
            reverse("admin:workflows_app_workflow_executions", args=[obj.pk]),
            obj._active,
        )

    def save_model(self, request, obj, form, change):
        if not change:
            created = workflow_create(
                name=obj.name,
                trigger_type=obj.trigger_type,
                trigger_event=obj.trigger_event,
                description=obj.description,
                allow_reentry=obj.allow_reentry,
                frequency_cap=obj.frequency_cap,
                enabled=obj.enabled,
            )
            obj.pk = created.pk
            return
        workflow = Workflow.objects.get(pk=obj.pk)
        workflow_update(
            workflow=workflow,
            name=obj.name,
            description=obj.description,
            allow_reentry=obj.allow_reentry,
            frequency_cap=obj.frequency_cap,
            enabled=obj.enabled,
        )

    @admin.action(description="Enable (start new executions)", permissions=["change"])
    def enable(self, request, queryset):
        enabled = 0
        for workflow in queryset:
            try:
                workflow_update(workflow=workflow, enabled=True)
                enabled += 1
            except GraphError as exc:  # a draft graph (built step by step through the API)
                self.message_user(request, f"Not enabled '{workflow.name}': {exc}", messages.ERROR)
        self.message_user(request, f"Enabled {enabled} workflow(s).")

    @admin.action(
        description="Disable (stop new executions; running ones go on)", permissions=["change"]
    )
    def disable(self, request, queryset):
        for workflow in queryset:
            workflow_update(workflow=workflow, enabled=False)
        self.message_user(request, f"Disabled {queryset.count()} workflow(s).")

    @admin.action(description="Duplicate (as disabled copies)", permissions=["add"])
    def duplicate(self, request, queryset):
        by = request.user.get_username()
        copies = []
        for workflow in queryset:
            try:
                copies.append((workflow, workflow_duplicate(workflow=workflow, by=by)))
            except GraphError as exc:
                self.message_user(request, f"Not duplicated: {exc}", messages.ERROR)
        if len(copies) == 1 and len(queryset) == 1:
            # One copy: straight to it, like the page's Duplicate button.
            self.message_user(request, admin_views.duplicated_message(*copies[0]))
            return HttpResponseRedirect(
                reverse("admin:workflows_app_workflow_change", args=[copies[0][1].pk])
            )
        if copies:
            names = ", ".join(f"'{copy.name}'" for _, copy in copies)
            self.message_user(request, f"Duplicated {len(copies)} workflow(s), disabled: {names}.")
        return None

    @admin.action(description="Cancel all active executions", permissions=["cancel"])
    def cancel_all(self, request, queryset):
        total = sum(
            engine.executions_cancel_all(workflow=w, by=request.user.get_username())
            for w in queryset
        )
        self.message_user(request, f"Cancelled {total} execution(s).")

    def has_cancel_permission(self, request):
        return request.user.has_perm(CANCEL_PERMISSION)

    def busy_reason(self, obj) -> str:
        active = workflow_active_count(obj)
        if not active:
            return ""
        return (
            f"Workflow '{obj.name}' has {active} active execution(s) (running or waiting), so "
            "it cannot be deleted. Disable it and cancel them from its Executions tab (or wait "
            "for them to finish) first."
        )

    def delete_one(self, obj) -> None:
        workflow_delete(workflow=obj)


class ContactDataHidden:
    """For users who may not view contacts (admin_views.can_view_contacts): the fields that
    carry contact data are left out (`contact_hidden`) or shown through a read-only stand-in
    (`contact_swapped`: field -> method), e.g. a contact's number for its email."""

    contact_hidden: tuple[str, ...] = ()
    contact_swapped: dict[str, str] = {}

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)  # type: ignore[misc]
        if admin_views.can_view_contacts(request):
            return fields
        swapped = self.contact_swapped
        return [swapped.get(f, f) for f in fields if f not in self.contact_hidden]

    def get_readonly_fields(self, request, obj=None):
        readonly = super().get_readonly_fields(request, obj)  # type: ignore[misc]
        return (*readonly, *self.contact_swapped.values())

    @admin.display(description="Error")
    def error_redacted(self, obj):
        """An error may quote contact data (admin_views.error_redacted)."""
        return admin_views.error_redacted(obj.error)


class StepRunInline(ContactDataHidden, admin.TabularInline):
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

    # A step's output carries contact data (Update Contact's result, a Condition's value), and
    # a message is named by its recipient: its number instead.
    contact_hidden = ("output",)
    contact_swapped = {"message": "message_ref", "error": "error_redacted"}

    @admin.display(description="Message")
    def message_ref(self, obj):
        return f"message #{obj.message_id}" if obj.message_id else "-"


@admin.register(Execution)
class ExecutionAdmin(ContactDataHidden, RefuseBusyDeletes, admin.ModelAdmin):
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
    list_select_related = ("workflow", "contact", "current_step__workflow")
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

    # Who a run is for is contact data: users who may not view contacts see the contact's
    # number (admin_views.contact_label), never its email, context or search by email.
    contact_hidden = ("context",)
    contact_swapped = {"contact": "contact_ref", "error": "error_redacted"}

    def get_list_display(self, request):
        shown = super().get_list_display(request)
        if admin_views.can_view_contacts(request):
            return shown
        return ["contact_ref" if field == "contact" else field for field in shown]

    def get_search_fields(self, request):
        return super().get_search_fields(request) if admin_views.can_view_contacts(request) else ()

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip().lower()
        if not term or not admin_views.can_view_contacts(request):
            return queryset, False
        return queryset.filter(contact__email__contains=term), False

    @admin.display(description="Contact")
    def contact_ref(self, obj):
        return f"contact #{obj.contact_id}"

    @admin.display(description="Waiting for")
    def waiting(self, obj):
        if obj.status != Execution.WAITING:
            return ""
        what = f"event '{obj.waiting_for}'" if obj.waiting_for else "timer"
        if obj.pending_branch.startswith(engine.HOLD_PREFIX):  # a held step, e.g. quiet hours
            what = f"{obj.pending_branch.removeprefix(engine.HOLD_PREFIX)} (held)"
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
        count = engine.executions_cancel(
            ids=list(queryset.values_list("id", flat=True)), by=request.user.get_username()
        )
        self.message_user(request, f"Cancelled {count} execution(s).")

    def busy_reason(self, obj) -> str:
        if not obj.is_active:
            return ""
        return (
            f"Execution #{obj.pk} is {obj.status.lower()}: active executions cannot be deleted, "
            "only cancelled (the Cancel action, or its workflow's Executions tab)."
        )

    def delete_one(self, obj) -> None:
        execution_delete(execution=obj)


# Deleting a contact is the privacy erase: its active runs are cancelled first (the engine's
# cancel), then the contact goes with its events, messages and executions. Registered here,
# not in contacts_app, because cancelling runs is workflows_app's business (imports go down).
admin.site.unregister(Contact)


@admin.register(Contact)
class ContactAdmin(BaseContactAdmin):
    # Whatever contacts_app's own admin offers, plus this app's action.
    actions = [*(getattr(BaseContactAdmin, "actions", None) or ()), "start_manual_workflow"]

    @admin.action(
        description="Start a manual workflow for these contacts", permissions=["start_workflow"]
    )
    def start_manual_workflow(self, request, queryset):
        return admin_views.start_manual_action(self, request, queryset)

    def has_start_workflow_permission(self, request):
        return admin_views.can_start_manual(request, self)

    def delete_model(self, request, obj):
        contact_erase(contact=obj, by=request.user.get_username())

    def delete_queryset(self, request, queryset):
        for contact in queryset:
            contact_erase(contact=contact, by=request.user.get_username())

    def get_deleted_objects(self, objs, request):
        # Erasing is one permission (delete contact): what goes with the contact (its events,
        # messages, executions) is part of the erase, not separate deletes to authorise.
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected
