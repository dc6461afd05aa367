from django import forms
from django.contrib import admin

from templates_app.models import Message, Template
from templates_app.rendering import template_check


class TemplateForm(forms.ModelForm):
    class Meta:
        model = Template
        fields = ("name", "type", "subject", "html", "text", "from_email", "reply_to")
        widgets = {
            "html": forms.Textarea(
                attrs={"rows": 18, "style": "font-family: monospace; width: 90%"}
            ),
            "text": forms.Textarea(
                attrs={"rows": 8, "style": "font-family: monospace; width: 90%"}
            ),
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


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    form = TemplateForm
    list_display = ("name", "type", "subject", "updated_at")
    list_filter = ("type",)
    search_fields = ("name", "subject")


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("subject", "to_email", "status", "template", "created_at", "sent_at")
    list_filter = ("status",)
    search_fields = ("to_email", "idempotency_key", "provider_message_id")
    list_select_related = ("template",)
    show_full_result_count = False
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
        "created_at",
        "sent_at",
        "updated_at",
        "text",
        "html",
    )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
