"""Refuses query strings no view can use, before any view sees them."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from contacts_app.api_errors import error_body

NUL_MESSAGE = "A query parameter contains a NUL character."


class RejectNulQueryMiddleware:
    """A NUL character in a query parameter is a 400. PostgreSQL text cannot hold NUL, so one
    reaching a query (an admin list filter such as `?status__exact=%00`, a search, a cursor)
    would be a database error, a 500. API paths answer in the API's JSON envelope."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "%00" in request.META.get("QUERY_STRING", "") and _has_nul(request):
            if request.path.startswith("/v1/"):
                return JsonResponse(error_body("invalid_query", NUL_MESSAGE), status=400)
            return HttpResponseBadRequest(
                f"<!doctype html><title>Bad request</title><h1>Bad request (400)</h1>"
                f"<p>{NUL_MESSAGE}</p>"
            )
        return self.get_response(request)


def _has_nul(request: HttpRequest) -> bool:
    return any(
        "\x00" in key or any("\x00" in value for value in values)
        for key, values in request.GET.lists()
    )
