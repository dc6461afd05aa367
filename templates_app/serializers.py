"""The Templates API's shapes (Plunk's names): `body` is the HTML, `from` + `fromName` are
stored together as one From header ("Name <address>"), `type` is ours in lower case (Plunk's
upper-case spellings are accepted; HEADLESS is refused)."""

from __future__ import annotations

import re
from email.utils import parseaddr
from typing import Any

from rest_framework import serializers

from contacts_app import safejson
from contacts_app.pagination import StrictQuery
from templates_app.models import Template

TYPES = (Template.MARKETING, Template.TRANSACTIONAL)
TYPE_SPELLINGS = [*TYPES, *(t.upper() for t in TYPES)]
SORTS = {"name": "name", "createdAt": "created_at", "updatedAt": "updated_at"}
_ATOM_TEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ .-]*")
_NAME_MAX = Template._meta.get_field("name").max_length
_SUBJECT_MAX = Template._meta.get_field("subject").max_length
_FROM_MAX: int = Template._meta.get_field("from_email").max_length or 320
_REPLY_MAX = Template._meta.get_field("reply_to").max_length


def storable(value: Any) -> None:
    """Text PostgreSQL can store (no NUL, no lone surrogate): else a 400 on the field."""
    if problem := safejson.unstorable(value):
        raise serializers.ValidationError(f"Not storable: {problem}.")


class TypeField(serializers.ChoiceField):
    """Ours ("marketing"), or Plunk's ("MARKETING"), answered as ours; HEADLESS (a Plunk type
    for templates only its own app renders) has no meaning here and is refused saying so."""

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, str) and data.strip().lower() == "headless":
            raise serializers.ValidationError(
                "HEADLESS templates do not exist here: use MARKETING or TRANSACTIONAL."
            )
        return super().to_internal_value(data).lower()


def from_header(name: str, address: str) -> str:
    """ "Name <address>", the name quoted when it needs it; just the address without a name."""
    if not name:
        return address
    if not _ATOM_TEXT.fullmatch(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def split_from(stored: str) -> tuple[str | None, str | None]:
    """(fromName, from) of a stored From header; anything unparsable is returned whole."""
    if not stored:
        return None, None
    name, address = parseaddr(stored)
    if not address:
        return None, stored
    return name or None, address


class TemplateSerializer(serializers.Serializer):
    """A template as the API shows it."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField(allow_null=True)
    subject = serializers.CharField()
    body = serializers.CharField(
        help_text="The HTML body (Liquid); of an MJML template, its MJML compiled (derived)."
    )
    mjml = serializers.CharField(
        allow_null=True,
        help_text="The MJML source (Liquid), what is sent, compiled per email; null: an HTML "
        "template.",
    )
    text = serializers.CharField(
        allow_null=True, help_text="The text body (Liquid); null: derived from the HTML."
    )
    type = serializers.ChoiceField(choices=TYPES)
    fromName = serializers.CharField(allow_null=True)
    replyTo = serializers.CharField(allow_null=True)
    createdAt = serializers.DateTimeField()
    updatedAt = serializers.DateTimeField()

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.CharField(
            allow_null=True, help_text="The sender's address; null: the server's default."
        )
        return fields

    def to_representation(self, instance: Template) -> dict[str, Any]:
        from_name, from_address = split_from(instance.from_email)
        return {
            "id": instance.pk,
            "name": instance.name,
            "description": instance.description or None,
            "subject": instance.subject,
            "body": instance.html,
            "mjml": instance.mjml or None,
            "text": instance.text or None,
            "type": instance.type,
            "from": from_address,
            "fromName": from_name,
            "replyTo": instance.reply_to or None,
            "createdAt": instance.created_at.isoformat(),
            "updatedAt": instance.updated_at.isoformat(),
        }


class StrictCharField(serializers.CharField):
    """Text only: a number or a boolean is a 400 (DRF would turn 0 into "0")."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictEmailField(serializers.EmailField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def _text(max_length: int | None = None, **kwargs: Any) -> serializers.CharField:
    return StrictCharField(
        max_length=max_length, trim_whitespace=False, validators=[storable], **kwargs
    )


class TemplateWriteSerializer(serializers.Serializer):
    """Create (name, subject and body required) or, with partial=True, change a template."""

    name = StrictCharField(max_length=_NAME_MAX, validators=[storable])
    description = _text(
        10_000, required=False, allow_blank=True, allow_null=True, help_text="Not sent."
    )
    subject = _text(_SUBJECT_MAX)
    body = _text(help_text="The HTML body (Liquid). Required unless `mjml` is given.")
    mjml = _text(
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="The MJML source (Liquid), instead of `body`: compiled for every email; the "
        "template's `body` becomes its compiled HTML. A compile error is a 400 naming `mjml` "
        "and the line. Empty or null: the template is HTML (`body`).",
    )
    text = _text(
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="The text body (Liquid); empty or null: derived from the HTML.",
    )
    type = TypeField(
        choices=TYPE_SPELLINGS,
        required=False,
        help_text="marketing (default; never sent to unsubscribed contacts) or transactional. "
        "Plunk's upper-case spellings are accepted; HEADLESS is refused.",
    )
    fromName = StrictCharField(
        max_length=200,
        required=False,
        allow_blank=True,
        allow_null=True,
        validators=[storable],
        help_text="The sender's name, with `from`.",
    )
    replyTo = StrictEmailField(
        max_length=_REPLY_MAX, required=False, allow_blank=True, allow_null=True
    )

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = StrictEmailField(
            max_length=254,
            required=False,
            allow_blank=True,
            allow_null=True,
            help_text="The sender's address; empty or null: the server's default.",
        )
        data = getattr(self, "initial_data", None)
        if isinstance(data, dict) and data.get("mjml"):
            fields["body"].required = False  # an MJML template's body is derived
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        body, mjml = attrs.get("body"), attrs.get("mjml")
        if body and mjml:
            raise serializers.ValidationError({"mjml": ["Give `body` (HTML) or `mjml`, not both."]})
        return attrs

    def validate_fromName(self, value: str | None) -> str:  # noqa: N802 - the JSON name
        if value and ("\r" in value or "\n" in value):
            raise serializers.ValidationError("fromName can not contain line breaks.")
        return (value or "").strip()

    def to_service(self, current: Template | None = None) -> dict[str, Any]:
        """The service's keyword arguments for what was sent (all of them on create)."""
        data = self.validated_data
        out: dict[str, Any] = {}
        for ours, theirs in (("name", "name"), ("subject", "subject"), ("html", "body")):
            if theirs in data:
                out[ours] = data[theirs]
        if "mjml" in data:
            out["mjml"] = data["mjml"] or ""
        elif "html" in out and current is not None and current.mjml:
            raise serializers.ValidationError(
                {
                    "body": [
                        "This template is MJML (its body is derived): change `mjml`, or send "
                        "`mjml: null` with `body` to make it an HTML template."
                    ]
                }
            )
        if "text" in data:
            out["text"] = data["text"] or ""
        if "description" in data:
            out["description"] = data["description"] or ""
        if "type" in data:
            out["type"] = data["type"]
        if "replyTo" in data:
            out["reply_to"] = data["replyTo"] or ""
        if "from" in data or "fromName" in data:
            out["from_email"] = self._from_header(current)
        return out

    def _from_header(self, current: Template | None) -> str:
        data = self.validated_data
        old_name, old_address = split_from(current.from_email if current else "")
        address = (data["from"] or "") if "from" in data else (old_address or "")
        name = (data["fromName"] or "") if "fromName" in data else (old_name or "")
        if name and not address:
            raise serializers.ValidationError(
                {"fromName": ["A sender's name needs a `from` address."]}
            )
        header = from_header(name, address) if address else ""
        if len(header) > _FROM_MAX:
            raise serializers.ValidationError(
                {"fromName": [f"fromName and from together exceed {_FROM_MAX} characters."]}
            )
        return header


class TemplateListQuery(StrictQuery):
    """GET /v1/templates's filters (page and pageSize are the paging's)."""

    search = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        validators=[storable],
        help_text="Part of the name or subject (any case).",
    )
    type = TypeField(choices=TYPE_SPELLINGS, required=False)
    sort = serializers.ChoiceField(choices=list(SORTS), required=False, default="createdAt")
    dir = serializers.ChoiceField(choices=["asc", "desc"], required=False, default="desc")


class TemplatePreviewSerializer(serializers.Serializer):
    data = serializers.DictField(  # type: ignore[assignment]  # a field named data
        required=False,
        help_text="Sample contact data; with `email`, the event context (`event.*`).",
    )
    email = StrictEmailField(
        required=False,
        max_length=254,
        help_text="Render with this contact's data (and unsubscribe links).",
    )

    def validate_data(self, value: dict) -> dict:
        storable(value)
        return value


class TemplateUsageStepSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    key = serializers.CharField()
    name = serializers.CharField(allow_blank=True)


class TemplateUsageWorkflowSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    enabled = serializers.BooleanField()
    steps = TemplateUsageStepSerializer(many=True)


class TemplateUsageSerializer(serializers.Serializer):
    workflowSteps = serializers.IntegerField(help_text="Steps that send this template.")
    emailsSent = serializers.IntegerField(help_text="Emails sent with it (the ledger).")
    workflows = TemplateUsageWorkflowSerializer(
        many=True, help_text="The workflows of those steps (up to 1000 steps listed)."
    )


class RenderedSerializer(serializers.Serializer):
    subject = serializers.CharField(allow_blank=True)
    html = serializers.CharField(allow_blank=True)
    text = serializers.CharField(allow_blank=True)
