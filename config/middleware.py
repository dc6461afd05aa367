"""Refuses input no view can use (NUL in a query string, a malformed admin selection) with a
400 instead of a 500; gives every request an id for its log lines."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable

from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from config.logcontext import log_context
from contacts_app.api_errors import error_body

log = logging.getLogger(__name__)

NUL_MESSAGE = "A query parameter contains a NUL character."


class RejectNulQueryMiddleware:
    """A NUL character in a query parameter is a 400. PostgreSQL text cannot hold NUL, so one
    reaching a query (an admin list filter such as `?status__exact=%00`, a search, a cursor)
    would be a database error, a 500. API paths answer in the API's JSON envelope."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "%00" in request.META.get("QUERY_STRING", "") and (names := _with_nul(request)):
            if request.path.startswith("/v1/"):
                fields = dict.fromkeys(names, "Contains a NUL character.")
                return JsonResponse(
                    error_body("invalid_query", NUL_MESSAGE, fields, status=400), status=400
                )
            return HttpResponseBadRequest(
                f"<!doctype html><title>Bad request</title><h1>Bad request (400)</h1>"
                f"<p>{NUL_MESSAGE}</p>"
            )
        return self.get_response(request)


def _with_nul(request: HttpRequest) -> list[str]:
    """The query parameters whose name or a value holds NUL (the API's error names them)."""
    return [
        key
        for key, values in request.GET.lists()
        if "\x00" in key or any("\x00" in value for value in values)
    ]


class AdminBadSelectionMiddleware:
    """An admin list action posted with ids that are not ids of that model (`not-a-uuid` for a
    contact, `x` for an execution) makes Django's admin raise while it filters the selection:
    that is the client's mistake, a 400, not a 500. Only for requests that carry a selection,
    so no other error is hidden."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception):
        if (
            request.method == "POST"
            and request.path.startswith("/admin/")
            and isinstance(exception, ValidationError | ValueError)
            and request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        ):
            log.warning("refused a malformed admin selection on %s: %s", request.path, exception)
            return HttpResponseBadRequest(
                "<!doctype html><title>Bad request</title><h1>Bad request (400)</h1>"
                "<p>The selected items are not valid ids; reload the list and try again.</p>"
            )
        return None


class RateLimitHeadersMiddleware:
    """Adds RateLimit-Limit / -Remaining / -Reset (and Retry-After on a 429) to API replies,
    from the standing contacts_app.auth.KeyRateThrottle left on the request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        rate = getattr(request, "ratelimit", None)
        if rate is not None:
            for name, value in rate.headers().items():
                response.headers.setdefault(name, value)
        return response


REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")


class RequestIdMiddleware:
    """Gives every request an id, on each log line written while it is handled (config/
    logcontext.py) and in the X-Request-ID reply header. A proxy's or client's X-Request-ID
    is kept when it is sane (<= 200 of [A-Za-z0-9._-]), so one id follows a call across
    services; anything else is replaced, never written to a log."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        with log_context(request_id=request_id):
            response = self.get_response(request)
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
