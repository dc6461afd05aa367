from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseForbidden, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse

from contacts_app import safejson
from contacts_app.models import Contact
from templates_app.models import Message, Template
from templates_app.rendering import TemplateError, template_check
from templates_app.services import (
    ResendRefused,
    SendPermanentError,
    SendTransientError,
    message_resend,
    template_preview,
    template_send_test,
)

SAMPLE_DATA = {"firstName": "Ada", "lastName": "Lovelace", "plan": "pro"}


class TemplateForm(forms.ModelForm):
    class Meta:
        model = Template
        fields = (
            "name",
            "description",
            "type",
            "subject",
            "html",
            "text",
            "from_email",
            "reply_to",
        )
        widgets = {
            "html": forms.Textarea(attrs={"rows": 18, "class": "vLargeTextField mono"}),
            "text": forms.Textarea(attrs={"rows": 8, "class": "vLargeTextField mono"}),
        }

    def clean(self):
        data = super().clean() or {}
        errors = template_check(
            subject=data.get("subject") or "",
            html_body=data.get("html") or "",
            text_body=data.get("text") or "",
        )
        for field, problem in errors.items():
            self.add_error(field, f"Liquid syntax error, {problem}")
        return data


CONTACT_VIEW_PERMISSION = "contacts_app.view_contact"
CONTACT_REFUSED = (
    "Rendering for a real contact shows their data: it needs permission to view contacts. "
    "Leave the contact empty to use sample data."
)


def _contact_refused(request) -> bool:
    """A real contact asked for by a user who may not see contact data (nor learn who exists)."""
    asked = bool((request.POST.get("contact") or "").strip())
    return asked and not request.user.has_perm(CONTACT_VIEW_PERMISSION)


def _preview_input(request):
    """(contact or None, sample data, error message) from the preview controls."""
    email = (request.POST.get("contact") or "").strip().lower()
    if email and (len(email) > 254 or safejson.unstorable(email)):
        return None, {}, "That is not an email address."
    contact = Contact.objects.filter(email=email).first() if email else None
    if email and contact is None:
        return None, {}, f"No contact with email {email}."
    try:
        sample = safejson.loads(request.POST.get("sample") or "{}")
    except ValueError as exc:
        return None, {}, f"Sample data is not valid JSON: {exc}."
    if safejson.unstorable(sample):
        return None, {}, "Sample data can not hold NUL characters or invalid Unicode."
    if not isinstance(sample, dict):
        return None, {}, "Sample data must be a JSON object."
    return contact, sample or SAMPLE_DATA, ""


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    form = TemplateForm
    list_display = ("name", "type", "subject", "updated_at")
    list_filter = ("type",)
    search_fields = ("name", "subject")
    change_form_template = "admin/templates_app/template/change_form.html"

    def get_urls(self):
        return [
            path(
                "preview/",
                self.admin_site.admin_view(self.preview_view),
                name="templates_app_template_preview",
            ),
            path(
                "<int:pk>/send-test/",
                self.admin_site.admin_view(self.send_test_view),
                name="templates_app_template_send_test",
            ),
            *super().get_urls(),
        ]

    def preview_view(self, request):
        """Renders the editor's current (unsaved) text; the live preview calls it as you type."""
        if request.method != "POST" or not self.has_view_permission(request):
            return JsonResponse({"error": "POST with view permission required."}, status=405)
        if _contact_refused(request):
            return JsonResponse({"errors": {"contact": CONTACT_REFUSED}}, status=403)
        contact, sample, problem = _preview_input(request)
        if problem:
            return JsonResponse({"errors": {"contact": problem}}, status=400)
        subject, html_body = request.POST.get("subject", ""), request.POST.get("html", "")
        text_body = request.POST.get("text", "")
        errors = template_check(subject=subject, html_body=html_body, text_body=text_body)
        if errors:
            return JsonResponse({"errors": errors}, status=400)
        try:
            rendered = template_preview(
                subject=subject,
                html_body=html_body,
                text_body=text_body,
                contact=contact,
                sample=sample,
            )
        except TemplateError as exc:
            return JsonResponse({"errors": exc.errors}, status=400)
        return JsonResponse(
            {"subject": rendered.subject, "html": rendered.html, "text": rendered.text}
        )

    def send_test_view(self, request, pk):
        template = get_object_or_404(Template, pk=pk)
        change_url = reverse("admin:templates_app_template_change", args=[pk])
        if request.method != "POST" or not self.has_change_permission(request, template):
            return redirect(change_url)
        if not request.user.email:
            messages.error(request, "Your user has no email address; add one to get test emails.")
            return redirect(change_url)
        if _contact_refused(request):
            messages.error(request, f"Not sent. {CONTACT_REFUSED}")
            return redirect(change_url)
        contact, sample, problem = _preview_input(request)
        if problem:
            messages.error(request, problem)
            return redirect(change_url)
        # What the editor shows now, saved or not.
        for name in ("subject", "html", "text"):
            if name in request.POST:
                setattr(template, name, request.POST[name])
        errors = template_check(
            subject=template.subject, html_body=template.html, text_body=template.text
        )
        if errors:
            messages.error(request, f"Not sent: fix the template first ({errors}).")
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
