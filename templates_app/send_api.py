"""POST /v1/send, compatible with Plunk's transactional send: the body is validated here (every
field at fault named, `to.2.email`, `headers.X-Foo`, `attachments.0.content`), then
templates_app.sending records the send; a worker delivers it."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts_app import safejson
from contacts_app.api_errors import ApiError
from contacts_app.api_schema import error_responses
from contacts_app.emails import email_error
from contacts_app.parsers import _text_encoding, read_limited, strict_loads
from contacts_app.services import normalize_email
from templates_app import sending
from templates_app.models import Template
from templates_app.rendering import template_check

# Headers the message sets itself, or that would change who gets it or how it is read.
REFUSED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "reply-to",
        "sender",
        "return-path",
        "message-id",
        "date",
        "received",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-id",
        "mime-version",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "dkim-signature",
        "idempotency-key",
    }
)
# Headers an email provider reads as instructions to itself (change the recipients, the
# tracking, the template, the sending account...), which a caller must not give: X-SMTPAPI
# (SendGrid), and any name starting with one of PROVIDER_HEADER_PREFIXES (Mailgun, Amazon SES,
# Postmark, Mandrill / Mailchimp, SparkPost, Resend).
PROVIDER_HEADERS = frozenset({"x-smtpapi"})
PROVIDER_HEADER_PREFIXES = (
    "x-mailgun-",
    "x-ses-",
    "x-pm-",
    "x-mc-",
    "x-msys-",
    "x-postmark-",
    "x-resend-",
)
MAX_HEADERS = 50
_HEADER_NAME = re.compile(r"[!-9;-~]{1,100}")  # RFC 5322 field name: printable ASCII but ':'
_CONTENT_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}"
)
_CONTENT_ID = re.compile(r"[!-;=?-~]{1,200}")  # printable ASCII without spaces, '<' and '>'
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class SendParser(BaseParser):
    """StrictJSONParser's rules with room for attachments (MAX_REQUEST_BYTES instead of
    DATA_UPLOAD_MAX_MEMORY_SIZE). Not a JSONParser subclass: DRF reads `request.body` for
    those, which Django refuses past DATA_UPLOAD_MAX_MEMORY_SIZE; this one reads the stream."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = _text_encoding(parser_context or {})
        if stream is None:
            return None
        return strict_loads(read_limited(stream, sending.MAX_REQUEST_BYTES), encoding)


class _Errors(dict):
    def add(self, path: str, message: str) -> None:
        self.setdefault(path, message)


def _line(value: str) -> bool:
    """True when the text is not one clean line: Python's email package also breaks lines at
    \v \f \x1c-\x1e \x85 \u2028 \u2029 (str.splitlines), and no other control character
    (but tab) belongs in a header."""
    return (
        (bool(value) and value.splitlines() != [value])
        or any(ord(c) < 32 and c != "\t" for c in value)
        or bool(safejson.unstorable(value))
    )


def _email(value: Any, path: str, errors: _Errors) -> str:
    if not isinstance(value, str) or not value.strip():
        errors.add(path, "Required: an email address.")
        return ""
    if len(value) > 1000:
        errors.add(path, "Not a valid email address.")
        return ""
    address = normalize_email(value)
    if problem := email_error(address):
        errors.add(path, problem)
        return ""
    if _line(address):  # a quoted local part may hold control characters: not in a header
        errors.add(path, "Not a valid email address: it must not contain control characters.")
        return ""
    return address


def _name(value: Any, path: str, errors: _Errors) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 200 or _line(value):
        errors.add(path, "A name: text of at most 200 characters, on one line.")
        return ""
    return value.strip()


def _recipients(value: Any, errors: _Errors) -> list[sending.Recipient]:
    if value is None:
        errors.add("to", "Required: an email address, {name, email}, or a list of them.")
        return []
    single = not isinstance(value, list)
    items = [value] if single else value
    if not single and not 1 <= len(items) <= sending.MAX_RECIPIENTS:
        errors.add("to", f"From 1 to {sending.MAX_RECIPIENTS} recipients.")
        return []
    out = []
    for index, item in enumerate(items):
        path = "to" if single else f"to.{index}"
        if isinstance(item, dict):
            address = _email(item.get("email"), f"{path}.email", errors)
            name = _name(item.get("name"), f"{path}.name", errors)
        elif isinstance(item, str):
            address, name = _email(item, path, errors), ""
        else:
            errors.add(path, "An email address or {name, email}.")
            continue
        if address:
            out.append(sending.Recipient(address, name))
    return out


def _template(value: Any, errors: _Errors) -> Template | None:
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 19:
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 2**63:
        errors.add("template", "A template id: a positive integer.")
        return None
    template = Template.objects.filter(pk=value).first()
    if template is None:
        errors.add("template", f"No template with id {value}.")
    return template


def _data(value: Any, errors: _Errors) -> tuple[dict[str, Any], dict[str, Any]]:
    """(contact data: persistent values, context: every value), as /v1/track reads `data`."""
    if value is None:
        return {}, {}
    if not isinstance(value, dict):
        errors.add("data", "Must be an object.")
    elif safejson.depth(value) > settings.TRACK_MAX_DATA_DEPTH:
        errors.add("data", f"Nested deeper than {settings.TRACK_MAX_DATA_DEPTH} levels.")
    elif safejson.unstorable(value):
        errors.add("data", "Strings must not contain NUL characters or invalid Unicode.")
    elif len(json.dumps(value)) > settings.TRACK_MAX_DATA_BYTES:
        errors.add("data", f"Larger than {settings.TRACK_MAX_DATA_BYTES} bytes.")
    else:
        contact_data, context = {}, {}
        for key, item in value.items():
            wrapped = (
                isinstance(item, dict)
                and set(item) == {"value", "persistent"}
                and isinstance(item["persistent"], bool)
            )
            context[key] = item["value"] if wrapped else item
            if not wrapped or item["persistent"]:
                contact_data[key] = context[key]
        return contact_data, context
    return {}, {}


def _headers(value: Any, errors: _Errors) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.add("headers", "Must be an object of header names to text values.")
        return {}
    if len(value) > MAX_HEADERS:
        errors.add("headers", f"At most {MAX_HEADERS} headers.")
        return {}
    out: dict[str, str] = {}
    for name, text in value.items():
        path = f"headers.{name[:100]}"
        if not _HEADER_NAME.fullmatch(name):
            errors.add(path, "Not a header name (printable ASCII without ':' or spaces).")
        elif name.lower() in REFUSED_HEADERS:
            errors.add(path, f"{name} is set by the message itself and can not be given.")
        elif name.lower() in PROVIDER_HEADERS or name.lower().startswith(PROVIDER_HEADER_PREFIXES):
            errors.add(path, f"{name} is an instruction to the email provider; not allowed.")
        elif not isinstance(text, str) or len(text) > 998 or _line(text):
            errors.add(path, "A header value: text of at most 998 characters, on one line.")
        else:
            out[name] = text
    return out


def _attachments(value: Any, errors: _Errors) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > sending.MAX_ATTACHMENTS:
        errors.add("attachments", f"A list of at most {sending.MAX_ATTACHMENTS} attachments.")
        return []
    out, total = [], 0
    for index, item in enumerate(value):
        path = f"attachments.{index}"
        if not isinstance(item, dict):
            errors.add(path, "An object: {filename, content, contentType, ...}.")
            continue
        filename = item.get("filename")
        if not isinstance(filename, str) or not 1 <= len(filename) <= 255 or _line(filename):
            errors.add(
                f"{path}.filename", "Required: a file name of 1 to 255 characters, on one line."
            )
        content, size = item.get("content"), 0
        if not isinstance(content, str) or not content or not _BASE64.fullmatch(content):
            errors.add(f"{path}.content", "Required: the file's content in base64.")
        else:
            try:
                size = len(base64.b64decode(content, validate=True))
            except (binascii.Error, ValueError):
                errors.add(f"{path}.content", "Not valid base64.")
        content_type = item.get("contentType")
        if not isinstance(content_type, str) or not _CONTENT_TYPE.fullmatch(content_type):
            errors.add(f"{path}.contentType", "Required: a MIME type such as application/pdf.")
        elif content_type.lower().startswith(("multipart/", "message/")):
            errors.add(f"{path}.contentType", "A file's type; not multipart/* or message/*.")
        disposition = item.get("disposition") or "attachment"
        if disposition not in ("attachment", "inline"):
            errors.add(f"{path}.disposition", 'Either "attachment" or "inline".')
        content_id = item.get("contentId")
        if content_id is not None and (
            not isinstance(content_id, str) or not _CONTENT_ID.fullmatch(content_id)
        ):
            errors.add(f"{path}.contentId", "Printable ASCII without spaces or <>, 1-200.")
        elif disposition == "inline" and not content_id:
            errors.add(f"{path}.contentId", "Required for an inline attachment.")
        total += size
        out.append(
            {
                "filename": filename,
                "content": content,
                "contentType": content_type,
                "disposition": disposition,
                "contentId": content_id or "",
                "size": size,
            }
        )
    if total > sending.MAX_ATTACHMENT_BYTES:
        errors.add(
            "attachments",
            f"{total} bytes in all; at most {sending.MAX_ATTACHMENT_BYTES} bytes (decoded).",
        )
    return out


def send_parse(body: Any) -> sending.SendRequest:
    """Validates a decoded /v1/send body; raises ApiError(400) naming every field at fault."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "The body must be a JSON object.")
    errors = _Errors()
    recipients = _recipients(body.get("to"), errors)

    template = None
    if body.get("template") is not None:
        template = _template(body["template"], errors)
    subject = body.get("subject")
    if subject is not None and (
        not isinstance(subject, str) or not 1 <= len(subject) <= 998 or _line(subject)
    ):
        errors.add("subject", "Text of 1 to 998 characters, on one line.")
        subject = None
    text = body.get("body")
    if text is not None and (not isinstance(text, str) or not text or safejson.unstorable(text)):
        errors.add("body", "Text (HTML, or Markdown with type markdown), not empty.")
        text = None
    elif isinstance(text, str) and len(text) > sending.MAX_BODY_CHARS:
        errors.add("body", f"At most {sending.MAX_BODY_CHARS} characters.")
        text = None
    kind = body.get("type", "html")
    if kind not in ("html", "markdown"):
        errors.add("type", 'Either "html" (the default) or "markdown".')
    if "template" in body and body["template"] is not None:
        if body.get("body") is not None:
            errors.add("body", "Give either a template or a body, not both.")
    elif body.get("subject") is None and body.get("body") is None:
        errors.add("template", "Give a template id, or a subject and a body.")
    elif body.get("subject") is None:
        errors.add("subject", "Required with a body (or give a template).")
    elif body.get("body") is None:
        errors.add("body", "Required with a subject (or give a template).")
    if template is None and subject is not None and text is not None:
        for part, problem in template_check(subject=subject, html_body=text).items():
            errors.add("body" if part == "html" else part, problem)
    elif template is not None and subject is not None:
        subject_problem = template_check(subject=subject, html_body="").get("subject")
        if subject_problem:
            errors.add("subject", subject_problem)

    contact_data, context = _data(body.get("data"), errors)

    from_address, from_name = "", ""
    sender = body.get("from")
    if isinstance(sender, dict):
        from_address = _email(sender.get("email"), "from.email", errors)
        from_name = _name(sender.get("name"), "from.name", errors)
    elif sender is not None:
        from_address = _email(sender, "from", errors)
    if body.get("name") is not None and not from_name:
        from_name = _name(body.get("name"), "name", errors)
    reply_to = _email(body["reply"], "reply", errors) if body.get("reply") is not None else ""
    headers = _headers(body.get("headers"), errors)
    attachments = _attachments(body.get("attachments"), errors)
    subscribed = body.get("subscribed")
    if subscribed is not None and not isinstance(subscribed, bool):
        errors.add("subscribed", "Must be true or false.")

    if errors:
        raise ApiError(400, "validation_error", "Invalid request: " + ", ".join(errors), errors)
    return sending.SendRequest(
        recipients=recipients,
        template=template,
        subject=subject,
        body=text,
        markdown=kind == "markdown",
        contact_data=contact_data,
        context=context,
        from_address=from_address,
        from_name=from_name,
        reply_to=reply_to,
        headers=headers,
        attachments=attachments,
        subscribed=subscribed,
    )


# --- OpenAPI ------------------------------------------------------------------------------------

_ADDRESS = {"type": "string", "format": "email", "maxLength": 254}
_PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 200}, "email": _ADDRESS},
    "required": ["email"],
}


@extend_schema_field(
    {
        "oneOf": [
            _ADDRESS,
            _PERSON,
            {
                "type": "array",
                "minItems": 1,
                "maxItems": sending.MAX_RECIPIENTS,
                "items": {"oneOf": [_ADDRESS, _PERSON]},
            },
        ],
        "description": "One recipient (an address or {name, email}) or a list of 1 to 100.",
    }
)
class _ToField(serializers.JSONField):
    pass


@extend_schema_field(
    {"oneOf": [_ADDRESS, _PERSON], "description": "The sender: an address or {name, email}."}
)
class _FromField(serializers.JSONField):
    pass


class AttachmentSerializer(serializers.Serializer):
    filename = serializers.CharField(max_length=255)
    content = serializers.CharField(help_text="The file, base64-encoded.")
    contentType = serializers.CharField(max_length=128, help_text="e.g. application/pdf")  # noqa: N815
    contentId = serializers.CharField(  # noqa: N815
        required=False, max_length=200, help_text="Needed for inline (cid:) attachments."
    )
    disposition = serializers.ChoiceField(
        choices=["attachment", "inline"], required=False, default="attachment"
    )


class SendSerializer(serializers.Serializer):
    to = _ToField()
    template = serializers.IntegerField(
        required=False, min_value=1, help_text="A template's id (instead of subject + body)."
    )
    subject = serializers.CharField(
        required=False, max_length=998, help_text="With a template: replaces its subject."
    )
    body = serializers.CharField(
        required=False,
        max_length=sending.MAX_BODY_CHARS,
        help_text="HTML, or Markdown with type markdown; Liquid first, then Markdown.",
    )
    type = serializers.ChoiceField(choices=["html", "markdown"], required=False, default="html")
    subscribed = serializers.BooleanField(
        required=False,
        help_text="For new contacts only (default false); existing ones keep theirs.",
    )
    name = serializers.CharField(required=False, max_length=200, help_text="The sender's name.")
    reply = serializers.EmailField(required=False, help_text="Reply-To address.")
    headers = serializers.DictField(
        child=serializers.CharField(max_length=998),
        required=False,
        help_text="Extra headers; those the message sets itself (From, To, Subject, "
        "Content-Type, MIME-Version, List-Unsubscribe...) and provider instructions (X-SMTPAPI, "
        "X-Mailgun-*, X-SES-*, X-PM-*, X-MC-*, X-MSYS-*, X-Postmark-*, X-Resend-*) are refused.",
    )
    attachments = serializers.ListField(
        child=AttachmentSerializer(), required=False, max_length=sending.MAX_ATTACHMENTS
    )

    def get_fields(self):
        # `from` is a keyword and `data` is a Serializer's own attribute: named here.
        fields = super().get_fields()
        fields["data"] = serializers.DictField(
            required=False,
            help_text='Merged into each recipient\'s contact data (null deletes a key, "" is '
            "ignored, {value, persistent: false} is not stored) and given to the template "
            "as the event (`{{ event.x }}`, `{{ x }}`).",
        )
        fields["from"] = _FromField(required=False)
        return fields


_EMAIL_RESULT = inline_serializer(
    name="SendEmailResult",
    fields={
        "contact": inline_serializer(
            name="SendContact",
            fields={"id": serializers.UUIDField(), "email": serializers.EmailField()},
        ),
        "email": serializers.CharField(
            allow_null=True, help_text="The message's id; null when it was refused."
        ),
        "error": inline_serializer(
            name="SendRefusal",
            fields={"code": serializers.CharField(), "message": serializers.CharField()},
            required=False,
        ),
    },
)
SEND_REPLY = inline_serializer(
    name="SendReply",
    fields={
        "success": serializers.BooleanField(),
        "data": inline_serializer(
            name="SendReplyData",
            fields={
                "emails": serializers.ListField(child=_EMAIL_RESULT),
                "timestamp": serializers.DateTimeField(),
            },
        ),
    },
)

_DESCRIPTION = """Sends an email to each recipient (1 to 100). Each one is created or updated as a
contact (`data` merged with the rules of /v1/track; a `{name, email}` recipient's name is
stored as `name`; a new contact's subscription is `subscribed`, default false, as on Plunk) and
gets one message in the send ledger. Delivery happens in the background, never in the request:
the reply says which messages were queued.

Content: a `template` (its id; `subject` may replace its subject), or a `subject` and a `body`
(HTML, or Markdown with `type: "markdown"`). Liquid is rendered first, with the variables of a
workflow email and `data` as the event (`{{ event.x }}` and `{{ x }}`); then Markdown is
rendered to HTML (CommonMark). Inserted values stay HTML-escaped.

A marketing template is not sent to an unsubscribed recipient: that recipient's entry has
`email: null` and `error.code: "unsubscribed"`; the others are sent. Direct sends (subject +
body) are transactional.

An unknown template id is a 400 naming `template`. An `Idempotency-Key` repeated within 24 hours
(per API key, shared with /v1/track) is a 409 and records nothing; a refused request (4xx)
does not use up its key."""


@extend_schema(
    tags=["emails"],
    summary="Send an email",
    description=_DESCRIPTION,
    request=SendSerializer,
    responses={200: SEND_REPLY, **error_responses(400, 409, 413, 415)},
    parameters=[
        OpenApiParameter(
            "Idempotency-Key",
            location=OpenApiParameter.HEADER,
            required=False,
            description="1-255 characters; a repeat within 24 hours is a 409 and sends nothing.",
        )
    ],
    examples=[
        OpenApiExample(
            "Direct send",
            value={
                "to": [{"name": "Ann", "email": "ann@example.com"}, "bob@example.com"],
                "subject": "Your receipt",
                "body": "# Thanks, {{ name | default: 'friend' }}\n\nOrder **{{ order }}**.",
                "type": "markdown",
                "data": {"order": "A-1001"},
                "from": {"name": "Shop", "email": "shop@example.com"},
                "reply": "help@example.com",
                "headers": {"X-Order": "A-1001"},
                "attachments": [
                    {
                        "filename": "receipt.txt",
                        "content": "VGhhbmtzIQ==",
                        "contentType": "text/plain",
                    }
                ],
            },
            request_only=True,
        ),
        OpenApiExample(
            "Template send",
            value={"to": "ann@example.com", "template": 3, "data": {"plan": "pro"}},
            request_only=True,
        ),
        OpenApiExample(
            "Queued",
            value={
                "success": True,
                "data": {
                    "emails": [
                        {
                            "contact": {
                                "id": "0b9f8a52-8c55-4a8e-9d7e-2a7a1d0c1f00",
                                "email": "ann@example.com",
                            },
                            "email": "1042",
                        },
                        {
                            "contact": {
                                "id": "6f1d2b7e-3c1a-4b9e-8f5d-0a2b3c4d5e6f",
                                "email": "bob@example.com",
                            },
                            "email": None,
                            "error": {
                                "code": "unsubscribed",
                                "message": "bob@example.com is unsubscribed; marketing mail is "
                                "not sent to them.",
                            },
                        },
                    ],
                    "timestamp": "2026-01-01T12:00:00+00:00",
                },
            },
            response_only=True,
            status_codes=["200"],
        ),
    ],
)
class SendView(APIView):
    parser_classes = [SendParser]

    def post(self, request):
        idempotency_key = request.META.get("HTTP_IDEMPOTENCY_KEY")
        if idempotency_key is not None and (
            not 1 <= len(idempotency_key) <= 255 or safejson.unstorable(idempotency_key)
        ):
            raise ApiError(
                400,
                "validation_error",
                "Invalid Idempotency-Key header.",
                {"Idempotency-Key": "Must be 1 to 255 characters, without NUL."},
            )
        payload = send_parse(request.data)
        try:
            outcomes, timestamp = sending.send_create(
                api_key_id=request.user.key.id,
                request=payload,
                idempotency_key=idempotency_key,
                now=timezone.now(),
            )
        except sending.DuplicateSend as exc:
            raise ApiError(409, exc.code, exc.message) from None
        except sending.SendRejected as exc:
            raise ApiError(400, exc.code, exc.message, exc.fields) from None
        emails = []
        for outcome in outcomes:
            entry: dict[str, Any] = {
                "contact": {"id": outcome.contact_id, "email": outcome.email},
                "email": str(outcome.message_id) if outcome.message_id is not None else None,
            }
            if outcome.error_code:
                entry["error"] = {"code": outcome.error_code, "message": outcome.error_message}
            emails.append(entry)
        return Response(
            {"success": True, "data": {"emails": emails, "timestamp": timestamp.isoformat()}}
        )
