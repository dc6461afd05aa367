import json

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.forms.fields import InvalidJSONInput
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html

from contacts_app import safejson
from contacts_app.jobs import (
    IMPORT_MAX_BYTES,
    ImportRefused,
    contact_import_start,
    contact_job_status,
)
from contacts_app.models import ApiKey, Contact, ContactJob, Event
from contacts_app.services import (
    ContactDataTooLarge,
    apikey_create,
    apikey_revoke,
    contact_replace,
    contact_upsert,
)


class EventInline(admin.TabularInline):
    model = Event
    fields = ("name", "data", "created_at")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    ordering = ("-created_at",)

    def get_queryset(self, request):
        # The newest 50: a contact may have thousands of events.
        qs = super().get_queryset(request)
        ids = list(qs.order_by("-created_at").values_list("id", flat=True)[:50])
        return qs.filter(id__in=ids)


class StrictJSONField(forms.JSONField):
    """The admin's JSON input with the API's rules: no NaN/Infinity, no out-of-range numbers,
    no deep nesting; the reason is shown instead of a generic "Enter a valid JSON"."""

    def to_python(self, value):
        if self.disabled or value in self.empty_values or not isinstance(value, str):
            return super().to_python(value)
        try:
            safejson.loads(value)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}", code="invalid") from None
        return super().to_python(value)

    def bound_data(self, data, initial):
        # Redisplaying refused input must not parse it with plain json (100,000 "[" would
        # raise RecursionError there): shown back as typed.
        if self.disabled:
            return initial
        if data is None:
            return None
        try:
            return safejson.loads(data)
        except ValueError:
            return InvalidJSONInput(data)

    def has_changed(self, initial, data):
        try:
            return super().has_changed(initial, data)
        except (forms.ValidationError, ValueError, RecursionError):
            return True


class ContactForm(forms.ModelForm):
    class Meta:
        model = Contact
        fields = ("email", "subscribed", "data")
        field_classes = {"data": StrictJSONField}

    def clean_data(self):
        value = self.cleaned_data.get("data")
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("Contact data must be a JSON object.")
        if problem := safejson.unstorable(value):
            raise forms.ValidationError(f"Contact data can not be stored: {problem}.")
        cap = getattr(settings, "CONTACT_MAX_DATA_BYTES", 256 * 1024)
        if len(json.dumps(value)) > cap:
            raise forms.ValidationError(f"Contact data is larger than {cap} bytes.")
        return value


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    form = ContactForm
    list_display = ("email", "subscribed", "created_at", "updated_at")
    list_filter = ("subscribed",)
    search_fields = ("email",)
    readonly_fields = ("created_at", "updated_at", "executions_link")
    fields = ("email", "subscribed", "data", "executions_link", "created_at", "updated_at")
    inlines = [EventInline]
    show_full_result_count = False

    def save_model(self, request, obj, form, change):
        # Through the services, like every other write: the contact data rules (null removes a
        # key, "" leaves it, reserved keys are dropped) and the contact.subscribed /
        # contact.unsubscribed events on a real change.
        data = form.cleaned_data.get("data") or {}
        try:
            if change:
                saved = contact_replace(
                    contact=obj, email=obj.email, subscribed=obj.subscribed, data=data
                )
            else:
                saved, _ = contact_upsert(email=obj.email, subscribed=obj.subscribed, data=data)
        except ContactDataTooLarge as exc:  # clean_data checked the size: only a race gets here
            messages.error(request, str(exc))
            return
        for field in ("pk", "email", "subscribed", "data", "created_at", "updated_at"):
            setattr(obj, field, getattr(saved, field))

    def get_search_results(self, request, queryset, search_term):
        # Emails are stored lower-case: a case-insensitive search is a plain one on the term.
        term = search_term.strip().lower()
        if not term:
            return queryset, False
        return queryset.filter(email__contains=term), False

    @admin.display(description="Executions")
    def executions_link(self, obj):
        if not obj.pk:
            return "-"
        count = obj.executions.count()
        return format_html(
            '<a href="/admin/workflows_app/execution/?contact__id__exact={}">{} execution(s)</a>',
            obj.pk,
            count,
        )


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("name", "contact", "created_at")
    list_filter = ("name",)
    search_fields = ("contact__email", "name")
    readonly_fields = ("contact", "name", "data", "created_at")
    list_select_related = ("contact",)
    show_full_result_count = False
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_view_permission(self, request, obj=None):
        # An event's data is contact data: it takes the contact permission too.
        return super().has_view_permission(request, obj) and request.user.has_perm(
            "contacts_app.view_contact"
        )

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "kind",
        "prefix",
        "rate_limit_per_minute",
        "created_at",
        "last_used_at",
        "state",
    )
    list_filter = ("kind",)
    search_fields = ("name", "prefix")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke_keys"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "kind", "rate_limit_per_minute")
        return (
            "name",
            "kind",
            "prefix",
            "rate_limit_per_minute",
            "created_at",
            "last_used_at",
            "revoked_at",
        )

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields + (("kind",) if obj else ())

    @admin.display(description="State")
    def state(self, obj):
        return "revoked" if obj.revoked_at else "active"

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        key, raw = apikey_create(
            name=obj.name, kind=obj.kind, rate_limit_per_minute=obj.rate_limit_per_minute
        )
        obj.pk = key.pk
        messages.warning(
            request,
            format_html("New key (shown once, copy it now): <code>{}</code>", raw),
        )

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        count = 0
        for key in queryset.filter(revoked_at__isnull=True):
            apikey_revoke(key=key)
            count += 1
        self.message_user(
            request, f"Revoked {count} key(s) at {timezone.now():%Y-%m-%d %H:%M:%S} UTC."
        )


# --- Contact jobs: CSV import from the admin, with a progress page -----------------------------
# The Contact list's "Import CSV" button (templates/admin/contacts_app/contact/change_list.html)
# leads here. Importing takes the permission to add contacts; the job itself runs in the worker
# (contacts_app.jobs), exactly as an import through the API does.

# An import adds contacts and changes existing ones (data, subscription): both permissions.
IMPORT_PERMISSIONS = ("contacts_app.add_contact", "contacts_app.change_contact")


class CsvImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text=(
            "At most 5 MB, UTF-8. The first row names the columns: email (required), "
            "subscribed (optional: true/false, 1/0, yes/no); every other column becomes a "
            "contact data key. Empty cells change nothing."
        ),
    )


@admin.register(ContactJob)
class ContactJobAdmin(admin.ModelAdmin):
    """Imports and bulk changes, read-only: they are started from the Contact list or the API."""

    list_display = ("created_at", "kind", "state", "progress_shown", "created_by", "finished_at")
    list_filter = ("kind", "state")
    fields = (
        "id",
        "kind",
        "state",
        "progress_shown",
        "filename",
        "created_by",
        "result_shown",
        "failed_reason",
        "created_at",
        "updated_at",
        "finished_at",
    )
    readonly_fields = fields
    show_full_result_count = False

    def get_queryset(self, request):
        return super().get_queryset(request).defer("csv_text")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        # A job's result names contacts (refused rows, their addresses): contact data, so it
        # takes the contact permission too.
        return super().has_view_permission(request, obj) and request.user.has_perm(
            "contacts_app.view_contact"
        )

    @admin.display(description="Progress")
    def progress_shown(self, obj):
        return f"{obj.progress}% ({obj.done} of {obj.total})"

    @admin.display(description="Result")
    def result_shown(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.result, indent=2))

    def get_urls(self):
        def view(func):
            return self.admin_site.admin_view(func)

        return [
            path("import/", view(self.import_view), name="contacts_app_contactjob_import"),
            path(
                "<uuid:job_id>/progress/",
                view(self.progress_view),
                name="contacts_app_contactjob_progress",
            ),
            path(
                "<uuid:job_id>/progress.json",
                view(self.progress_json_view),
                name="contacts_app_contactjob_progress_json",
            ),
            *super().get_urls(),
        ]

    def _may_import(self, request) -> None:
        if not request.user.has_perms(IMPORT_PERMISSIONS):
            raise PermissionDenied

    def _context(self, request, title: str, **extra):
        return {
            **self.admin_site.each_context(request),
            "opts": Contact._meta,
            "title": title,
            **extra,
        }

    def import_view(self, request):
        """The upload form; a good file queues its import and goes to its progress page."""
        self._may_import(request)
        posted = request.method == "POST"
        form = CsvImportForm(request.POST, request.FILES) if posted else CsvImportForm()
        if posted and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                job = contact_import_start(
                    content=upload.read(IMPORT_MAX_BYTES + 1),
                    filename=upload.name or "",
                    by=f"admin: {request.user.get_username()}",
                )
            except ImportRefused as exc:
                form.add_error("file", str(exc))
            else:
                return redirect("admin:contacts_app_contactjob_progress", job_id=job.pk)
        context = self._context(request, "Import contacts from a CSV file", form=form)
        return TemplateResponse(request, "admin/contacts_app/contact/import.html", context)

    def progress_view(self, request, job_id):
        self._may_import(request)
        job = get_object_or_404(ContactJob.objects.defer("csv_text"), pk=job_id)
        context = self._context(
            request,
            f"{job.get_kind_display()}: {job.filename}" if job.filename else str(job),
            job=job,
            status=contact_job_status(job),
        )
        return TemplateResponse(request, "admin/contacts_app/contact/import_progress.html", context)

    def progress_json_view(self, request, job_id):
        """What the progress page polls: the job as the API shows it."""
        self._may_import(request)
        job = get_object_or_404(ContactJob.objects.defer("csv_text"), pk=job_id)
        return JsonResponse(contact_job_status(job))
