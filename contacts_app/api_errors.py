"""Every API error is JSON: {"success": false, "error": {"code", "message", "statusCode",
"fields"?, "errors"?}, "timestamp"}.

`fields` maps a field (dotted path for nested ones) to what is wrong with it; `errors` says the
same as Plunk does, `[{field, message, code}]`."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.utils import timezone
from rest_framework import exceptions, status
from rest_framework.response import Response

log = logging.getLogger(__name__)

DB_RETRY_AFTER_SECONDS = 5


class ApiError(exceptions.APIException):
    def __init__(self, status_code: int, code: str, message: str, fields=None, headers=None):
        self.status_code = status_code
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers or {}
        super().__init__(message, code)


def _flat(detail: Any, path: str = "") -> list[tuple[str, str, str]]:
    """(dotted field, message, code) for every leaf of a DRF error detail or a fields dict."""
    if isinstance(detail, dict):
        return [
            item
            for key, value in detail.items()
            for item in _flat(value, f"{path}.{key}" if path else str(key))
        ]
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return [(path, str(item), getattr(item, "code", None) or "invalid") for item in detail]
        return [item for i, value in enumerate(detail) for item in _flat(value, f"{path}.{i}")]
    return [(path, str(detail), getattr(detail, "code", None) or "invalid")]


def _printable(text: str) -> str:
    """`text` as a UTF-8 reply can carry it: a lone surrogate from the request (an error that
    names a field or echoes a value) becomes "?" instead of failing the reply."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def error_body(code: str, message: str, fields=None, *, status: int | None = None) -> dict:
    message = _printable(message)
    error: dict = {"code": code, "message": message}
    if status is not None:
        error["statusCode"] = status
    if fields:
        flat = [(_printable(f), _printable(t), k) for f, t, k in _flat(fields)]
        messages: dict[str, list[str]] = {}
        for field, text, _ in flat:
            messages.setdefault(field or "body", []).append(text)
        error["fields"] = {field: " ".join(texts) for field, texts in messages.items()}
        error["errors"] = [
            {"field": field or "body", "message": text, "code": kind} for field, text, kind in flat
        ]
    return {"success": False, "error": error, "timestamp": timezone.now().isoformat()}


def error_response(status_code: int, code: str, message: str, fields=None, headers=None):
    return Response(
        error_body(code, message, fields, status=status_code), status=status_code, headers=headers
    )


_CODES = {
    exceptions.NotAuthenticated: "authentication_required",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.ParseError: "invalid_json",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotFound: "not_found",
    exceptions.Throttled: "rate_limited",
    exceptions.NotAcceptable: "not_acceptable",
}


def exception_handler(exc, context):
    if isinstance(exc, ApiError):
        return error_response(exc.status_code, exc.code, exc.message, exc.fields, exc.headers)
    if isinstance(exc, RequestDataTooBig):  # Django's own limit, met when DRF reads the body
        return error_response(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            "payload_too_large",
            f"The body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
        )
    if isinstance(exc, OperationalError | InterfaceError):
        log.warning("database unavailable: %s", exc)
        return error_response(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "service_unavailable",
            "The database is unavailable; nothing was recorded. Retry shortly.",
            headers={"Retry-After": str(DB_RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, exceptions.ValidationError):
        return error_response(400, "validation_error", "Invalid request.", exc.detail)
    if isinstance(exc, exceptions.APIException):
        code = _CODES.get(type(exc), exc.default_code)
        headers = {}
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            headers["WWW-Authenticate"] = 'Bearer realm="api"'
            exc.status_code = status.HTTP_401_UNAUTHORIZED
        wait = getattr(exc, "wait", None)
        if wait:
            headers["Retry-After"] = str(int(wait))
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if isinstance(exc, exceptions.ParseError):
            detail = "The body is not valid JSON."
        return error_response(exc.status_code, code, str(detail), headers=headers)
    log.exception("unhandled API error")
    return error_response(500, "internal_error", "Something went wrong on our side; it is logged.")
