"""Shared pieces of the API's OpenAPI description (drf-spectacular): the error envelope and
its examples, so every endpoint documents the errors it answers with the same component."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, inline_serializer
from rest_framework import serializers

_ERROR_DETAIL = inline_serializer(
    name="ErrorDetail",
    fields={
        "code": serializers.CharField(),
        "message": serializers.CharField(),
        "statusCode": serializers.IntegerField(),
        "fields": serializers.DictField(child=serializers.CharField(), required=False),
        "errors": serializers.ListField(
            child=inline_serializer(
                name="FieldError",
                fields={
                    "field": serializers.CharField(),
                    "message": serializers.CharField(),
                    "code": serializers.CharField(),
                },
            ),
            required=False,
        ),
    },
)

ERROR = inline_serializer(
    name="Error",
    fields={
        "success": serializers.BooleanField(),
        "error": _ERROR_DETAIL,
        "timestamp": serializers.DateTimeField(),
    },
)

_EXAMPLES = {
    400: ("validation_error", "Invalid request.", {"email": "Enter a valid email address."}),
    401: ("authentication_failed", "Invalid or revoked API key.", None),
    403: (
        "permission_denied",
        "This endpoint needs a secret key (sk_...); public keys may only call /v1/track.",
        None,
    ),
    404: ("not_found", "Not found.", None),
    409: ("conflict", "The request conflicts with the current state.", None),
    413: ("payload_too_large", "The body is larger than 262144 bytes.", None),
    429: ("rate_limited", "Too many requests for this API key.", None),
}


def _example(status: int, code: str, message: str, fields) -> OpenApiExample:
    error: dict = {"code": code, "message": message, "statusCode": status}
    if fields:
        error["fields"] = fields
        error["errors"] = [{"field": f, "message": m, "code": "invalid"} for f, m in fields.items()]
    return OpenApiExample(
        f"{status} {code}",
        value={"success": False, "error": error, "timestamp": "2026-01-01T12:00:00+00:00"},
        response_only=True,
        status_codes=[str(status)],
    )


def error_responses(*statuses: int, conflict: str = "") -> dict[int, OpenApiResponse]:
    """Responses for the given error statuses (401, 403 and 429 are added: every endpoint may
    answer them). `conflict` describes what a 409 means for this endpoint."""
    out: dict[int, OpenApiResponse] = {}
    for status in sorted({*statuses, 401, 403, 429}):
        code, message, fields = _EXAMPLES.get(status, ("error", "Error.", None))
        if status == 409 and conflict:
            message = conflict
        out[status] = OpenApiResponse(
            response=ERROR, description=message, examples=[_example(status, code, message, fields)]
        )
    return out


_REPLIES: dict[tuple[type, bool], Any] = {}


def ok(serializer, *, many: bool = False, description: str = "") -> OpenApiResponse:
    """A success reply `{success: true, data: <serializer>}` (a serializer class). One component
    per serializer, however many endpoints answer with it."""
    name = serializer.__name__.removesuffix("Serializer") + ("List" if many else "")
    if (serializer, many) not in _REPLIES:
        _REPLIES[serializer, many] = inline_serializer(
            name=f"{name}Reply",
            fields={"success": serializers.BooleanField(), "data": serializer(many=many)},
        )
    return OpenApiResponse(response=_REPLIES[serializer, many], description=description)
