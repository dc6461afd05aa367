import uuid

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseForbidden, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse

from contacts_app import safejson
from contacts_app.models import Contact
from templates_app.lint import check_template, known_variables, sample_render_html
from templates_app.mjml import mjml_display_html
from templates_app.models import Message, Template
from templates_app.rendering import TemplateError, template_problems
from templates_app.services import (
    ResendRefused,
    SendPermanentError,
    SendTransientError,
    message_resend,
    template_preview,
    template_problems_of,
    template_send_test,
)

SAMPLE_DATA = {"firstName": "Ada", "lastName": "Lovelace", "plan": "pro"}
# The editor's variable list: the variables every render has (services.template_variables).
RESERVED_VARIABLES = (
    "email",
    "id",
    "subscribed",
    "unsubscribeUrl",
    "subscribeUrl",
    "manageUrl",
    "workflow.name",
)


def variable_suggestions(*, contact_keys: bool) -> list[dict[str, str]]:
    """Variables for the editor's list: the keys of recent contacts' and events' data
    (lint.known_variables, what the unknown-variable check accepts), only for users who may
    view contacts (the sample data's keys otherwise), then the ones every render has."""
    if contact_keys:
        known = known_variables()
        groups = [("Contact data", known.contact_keys), ("Event data", known.event_keys)]
    else:
        groups = [("Sample data", set(SAMPLE_DATA))]
    return [
        {"name": name, "group": group}
        for group, names in groups
        for name in sorted(names, key=str.lower)
    ] + [{"name": name, "group": "Every email"} for name in RESERVED_VARIABLES]


class TemplateForm(forms.ModelForm):
    class Meta:
        model = Template
        fields = (
            "name",
            "description",
            "type",
            "subject",
            "html",
            "mjml",
            "text",
            "from_email",
            "reply_to",
        )
        widgets = {
            "html": forms.Textarea(attrs={"rows": 18, "class": "vLargeTextField mono"}),
            "mjml": forms.Textarea(attrs={"rows": 18, "class": "vLargeTextField mono"}),
            "text": forms.Textarea(attrs={"rows": 8, "class": "vLargeTextField mono"}),
        }

    def clean(self):
        data = super().clean() or {}
        mjml = data.get("mjml") or ""
        problems = template_problems(
            subject=data.get("subject") or "",
            html_body=data.get("html") or "",
            text_body=data.get("text") or "",
            mjml_body=mjml,
        )
        for problem in problems:
            if problem.field in self.fields and problem.field not in self.errors:
                self.add_error(problem.field, problem.message)
        if not mjml and not (data.get("html") or "").strip() and "html" not in self.errors:
            self.add_error("html", "Give the HTML body, or the MJML source.")
        if mjml and not problems:
            # An MJML template's HTML is derived from it (see Template.html).
            data["html"] = mjml_display_html(mjml)
        return data


CONTACT_VIEW_PERMISSION = "contacts_app.view_contact"
CONTACT_REFUSED = (
    "Rendering for a real contact shows their data: it needs permission to view contacts. "
    "Leave the contact empty to use sample data."
)


def _contact_refused(fields, user) -> bool:
    """A real contact asked for by a user who may not see contact data (nor learn who exists)."""
    asked = any(str(fields.get(name) or "").strip() for name in ("contact", "contact_id"))
    return asked and not user.has_perm(CONTACT_VIEW_PERMISSION)


def _preview_input(fields):
    """(contact or None, sample data, error message) from the preview controls: `contact` (an
    email) or `contact_id`, else `sample` (a JSON object, or its text)."""
    email = str(fields.get("contact") or "").strip().lower()
    if email and (len(email) > 254 or safejson.unstorable(email)):
        return None, {}, "That is not an email address."
    raw_id = str(fields.get("contact_id") or "").strip()
    try:
        contact_id = uuid.UUID(raw_id) if raw_id else None
    except ValueError:
        return None, {}, "contact_id must be a contact's id (a UUID)."
    if email:
        contact = Contact.objects.filter(email=email).first()
        if contact is None:
            return None, {}, f"No contact with email {email}."
    elif contact_id:
        contact = Contact.objects.filter(pk=contact_id).first()
        if contact is None:
            return None, {}, f"No contact with id {raw_id}."
    else:
        contact = None
    sample = fields.get("sample") or "{}"
    if isinstance(sample, str):
        try:
            sample = safejson.loads(sample)
        except ValueError as exc:
            return None, {}, f"Sample data is not valid JSON: {exc}."
    if safejson.unstorable(sample):
        return None, {}, "Sample data can not hold NUL characters or invalid Unicode."
    if not isinstance(sample, dict):
        return None, {}, "Sample data must be a JSON object."
    return contact, sample or SAMPLE_DATA, ""


def _preview_fields(request):
    """(fields, error message): the form's fields, or a JSON object's (Content-Type
    application/json), whose text fields must be strings."""
    if request.content_type != "application/json":
        return request.POST, ""
    try:
        body = safejson.loads(request.body or b"{}")
    except ValueError as exc:
        return {}, f"The body is not valid JSON: {exc}."
    if not isinstance(body, dict):
        return {}, "The body must be a JSON object."
    for name in ("subject", "html", "mjml", "text", "type", "contact"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return {}, f"{name} must be a string."
    if safejson.unstorable({k: v for k, v in body.items() if k != "sample"}):
        return {}, "The body can not hold NUL characters or invalid Unicode."
    return body, ""


def _error(field: str, message: str, line: int | None = None) -> dict:
    return {"field": field, "line": line, "message": message}


def _preview_reply(*, subject="", html="", text="", checks=(), errors=(), status=200):
    return JsonResponse(
        {
            "subject": subject,
            "html": html,
            "text": text,
            "checks": list(checks),
            "errors": list(errors),
        },
        status=status,
    )


def _checks(request, template: Template, *, rendered_html: str | None = None) -> list:
    """The pre-send checks for this user: the unknown-variable one only for users who may see
    contact data (it tells which keys contacts have)."""
    if rendered_html is None:
        rendered_html = sample_render_html(template)
    known = known_variables() if request.user.has_perm(CONTACT_VIEW_PERMISSION) else None
    return check_template(template, rendered_html=rendered_html, known=known)


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    form = TemplateForm
    list_display = ("name", "type", "subject", "updated_at")
    list_filter = ("type",)
    search_fields = ("name", "subject")
    change_form_template = "admin/templates_app/template/change_form.html"

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # The pre-send checks (templates_app.lint): warnings, the template is saved.
        for found in _checks(request, obj):
            messages.warning(request, f"{obj.name}: {found['message']}")

    def get_urls(self):
        return [
            path(
                "preview/",
                self.admin_site.admin_view(self.preview_view),
                name="templates_app_template_preview",
            ),
            path(
                "variables/",
                self.admin_site.admin_view(self.variables_view),
                name="templates_app_template_variables",
            ),
            path(
                "<int:pk>/send-test/",
                self.admin_site.admin_view(self.send_test_view),
                name="templates_app_template_send_test",
            ),
            *super().get_urls(),
        ]

    def variables_view(self, request):
        """The editor's "Insert a variable" list."""
        if not self.has_view_permission(request):
            return JsonResponse({"error": "View permission required."}, status=403)
        contact_keys = request.user.has_perm(CONTACT_VIEW_PERMISSION)
        return JsonResponse({"variables": variable_suggestions(contact_keys=contact_keys)})

    def preview_view(self, request):
        """Renders the editor's current (unsaved) template, with its pre-send checks; the live
        preview calls it as you type. The request and the answer are in the README ("The
        template editor's preview")."""
        if request.method != "POST" or not self.has_view_permission(request):
            return JsonResponse({"error": "POST with view permission required."}, status=405)
        fields, problem = _preview_fields(request)
        if problem:
            return _preview_reply(errors=[_error("body", problem)], status=400)
        if _contact_refused(fields, request.user):
            return _preview_reply(errors=[_error("contact", CONTACT_REFUSED)], status=403)
        contact, sample, problem = _preview_input(fields)
        if problem:
            return _preview_reply(errors=[_error("contact", problem)], status=400)
        template = Template(
            subject=fields.get("subject") or "",
            html=fields.get("html") or "",
            mjml=fields.get("mjml") or "",
            text=fields.get("text") or "",
            type=Template.TRANSACTIONAL
            if fields.get("type") == Template.TRANSACTIONAL
            else Template.MARKETING,
        )
        problems = template_problems_of(template)
        if problems:
            errors = [_error(p.field, p.message, p.line) for p in problems]
            return _preview_reply(errors=errors, checks=_checks(request, template), status=400)
        try:
            rendered = template_preview(
                subject=template.subject,
                html_body=template.html,
                text_body=template.text,
                mjml_body=template.mjml,
                contact=contact,
                sample=sample,
            )
        except TemplateError as exc:
            errors = [_error(field, message) for field, message in exc.errors.items()]
            return _preview_reply(errors=errors, checks=_checks(request, template), status=400)
        checks = _checks(request, template, rendered_html=rendered.html)
        return _preview_reply(
            subject=rendered.subject, html=rendered.html, text=rendered.text, checks=checks
        )

    def send_test_view(self, request, pk):
        template = get_object_or_404(Template, pk=pk)
        change_url = reverse("admin:templates_app_template_change", args=[pk])
        if request.method != "POST" or not self.has_change_permission(request, template):
            return redirect(change_url)
        if not request.user.email:
            messages.error(request, "Your user has no email address; add one to get test emails.")
            return redirect(change_url)
        if _contact_refused(request.POST, request.user):
            messages.error(request, f"Not sent. {CONTACT_REFUSED}")
            return redirect(change_url)
        contact, sample, problem = _preview_input(request.POST)
        if problem:
            messages.error(request, problem)
            return redirect(change_url)
        # What the editor shows now, saved or not.
        for name in ("subject", "html", "mjml", "text"):
            if name in request.POST:
                setattr(template, name, request.POST[name])
        problems = template_problems_of(template)
        if problems:
            listed = "; ".join(f"{p.field}: {p.message}" for p in problems)
            messages.error(request, f"Not sent: fix the template first ({listed}).")
            return redirect(change_url)
        try:
            template_send_test(
                template=template, to_email=request.user.email, contact=contact, sample=sample
            )
        except Exception as exc:  # noqa: BLE001 - show the provider's words to the person
            messages.error(request, f"The test email was not sent: {exc}")
        else:
            messages.success(request, f"Test email sent to {request.user.email}.")
        return redirect(change_url)


class NeedsDecisionFilter(admin.SimpleListFilter):
    """The ops list: sends a worker died in the middle of (and failed ones) not resent yet."""

    title = "needs a decision"
    parameter_name = "decision"

    def lookups(self, request, model_admin):
        return [
            ("unknown", "Unknown: a worker stopped while sending"),
            ("resendable", "Unknown or failed, not resent yet"),
        ]

    def queryset(self, request, queryset):
        if self.value() == "unknown":
            return queryset.filter(status=Message.UNKNOWN)
        if self.value() == "resendable":
            return queryset.filter(status__in=Message.RESENDABLE, resends__isnull=True)
        return queryset


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("subject", "to_email", "status", "template", "created_at", "sent_at")
    list_filter = (NeedsDecisionFilter, "status")
    search_fields = ("to_email", "idempotency_key", "provider_message_id")
    list_select_related = ("template",)
    show_full_result_count = False
    change_form_template = "admin/templates_app/message/change_form.html"
    actions = ("resend_selected",)
    readonly_fields = (
        "idempotency_key",
        "contact",
        "template",
        "to_email",
        "from_email",
        "subject",
        "status",
        "provider_message_id",
        "error",
        "resend_of",
        "resent_by",
        "created_at",
        "sent_at",
        "updated_at",
        "text",
        "html",
        "attachment_list",
    )
    # The attachments by name and size, never their content (base64 of up to 10 MB).
    exclude = ("token", "attachments", "attachment_content")

    @admin.display(description="attachments")
    def attachment_list(self, obj: Message) -> str:
        listed = [
            f"{item.get('filename', '')} ({item.get('contentType', '')}, "
            f"{filesizeformat(item.get('size') or 0)})"
            for item in obj.attachments or []
            if isinstance(item, dict)
        ]
        return "; ".join(listed) or "none"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        # A message is contact data (its address, and a subject and body rendered from the
        # contact's data): it takes the contact permission too.
        return super().has_view_permission(request, obj) and request.user.has_perm(
            CONTACT_VIEW_PERMISSION
        )

    def has_resend_permission(self, request, obj=None):
        return request.user.has_perm("templates_app.resend_message") and self.has_view_permission(
            request, obj
        )

    def get_urls(self):
        return [
            path(
                "<int:pk>/resend/",
                self.admin_site.admin_view(self.resend_view),
                name="templates_app_message_resend",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        message = self.get_object(request, object_id)
        extra_context = {
            **(extra_context or {}),
            "can_resend": message is not None
            and message.status in Message.RESENDABLE
            and self.has_resend_permission(request),
            "resends": list(message.resends.all()) if message is not None else [],
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def _resend(self, request, message: Message) -> Message | None:
        try:
            new = message_resend(message=message, user=request.user)
        except ResendRefused as exc:
            self.message_user(request, f"Message {message.pk} not resent: {exc}", messages.ERROR)
        except (SendTransientError, SendPermanentError) as exc:
            self.message_user(
                request,
                f"Message {message.pk}: the provider refused the resend: {exc}",
                messages.ERROR,
            )
        else:
            self.message_user(
                request, f"Message {message.pk} resent as message {new.pk}.", messages.SUCCESS
            )
            return new
        return None

    def resend_view(self, request, pk):
        message = get_object_or_404(Message, pk=pk)
        change_url = reverse("admin:templates_app_message_change", args=[pk])
        if request.method != "POST" or not self.has_resend_permission(request, message):
            return HttpResponseForbidden("Resending needs the 'Can resend a message' permission.")
        new = self._resend(request, message)
        if new is None:
            return redirect(change_url)
        return redirect(reverse("admin:templates_app_message_change", args=[new.pk]))

    @admin.action(
        description="Resend the selected unknown or failed messages", permissions=["resend"]
    )
    def resend_selected(self, request, queryset):
        for message in queryset:
            self._resend(request, message)
