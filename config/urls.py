import time

from django.conf import settings
from django.contrib import admin
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.urls import include, path
from django.views.defaults import bad_request, page_not_found, permission_denied, server_error
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularRedocView

from config.metrics import metrics_view
from contacts_app import views as contact_views
from contacts_app.api_errors import error_body
from templates_app.webhooks import inbound_webhook, tracking_webhook
from workflows_app.api import TrackView

admin.site.site_header = "Lifecycle"
admin.site.site_title = "Lifecycle admin"
admin.site.index_title = "Workflows, contacts and email"


# Monotonic time until which this process trusts that every migration is applied: a load
# balancer polls often, and loading the migration graph costs far more than `SELECT 1`.
_MIGRATIONS_OK_UNTIL = 0.0
MIGRATIONS_CHECK_SECONDS = 30


def _pending_migrations() -> int:
    """How many migrations are not applied to the database (cached when none)."""
    global _MIGRATIONS_OK_UNTIL
    if time.monotonic() < _MIGRATIONS_OK_UNTIL:
        return 0
    executor = MigrationExecutor(connection)
    pending = len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
    if not pending:
        _MIGRATIONS_OK_UNTIL = time.monotonic() + MIGRATIONS_CHECK_SECONDS
    return pending


def healthz(request):
    """200 when this process can reach its database (one trivial query) and every migration is
    applied, else 503, so a load balancer stops sending work to an instance that can only fail
    it (or that runs before `migrate` has)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        pending = _pending_migrations()
    except DatabaseError:
        return JsonResponse(
            {"ok": False, "database": "unavailable"}, status=503, headers={"Retry-After": "10"}
        )
    if pending:
        return JsonResponse(
            {"ok": False, "database": "ok", "migrations": f"pending: {pending}"},
            status=503,
            headers={"Retry-After": "10"},
        )
    return JsonResponse({"ok": True, "database": "ok", "migrations": "ok"})


urlpatterns = [
    path("v1/track", TrackView.as_view(), name="track"),
    # The API's description (OpenAPI 3) and its reference page, both served by this app.
    path(
        "v1/openapi.json",
        SpectacularJSONAPIView.as_view(
            authentication_classes=[], permission_classes=[], throttle_classes=[]
        ),
        name="openapi",
    ),
    path(
        "v1/docs",
        SpectacularRedocView.as_view(
            url_name="openapi", authentication_classes=[], permission_classes=[]
        ),
        name="api-docs",
    ),
    # Fixed paths before the patterns that would take them (contacts/import before
    # contacts/<lookup>).
    path("v1/", include("contacts_app.jobs_urls")),
    path("v1/", include("contacts_app.api_urls")),
    path("v1/", include("contacts_app.events_urls")),
    path("v1/", include("templates_app.send_urls")),
    path("v1/", include("templates_app.api_urls")),
    path("v1/", include("workflows_app.executions_urls")),
    path("v1/", include("workflows_app.api_urls")),
    path("unsubscribe/<str:token>", contact_views.unsubscribe, name="unsubscribe"),
    path("subscribe/<str:token>", contact_views.subscribe, name="subscribe"),
    path("manage/<str:token>", contact_views.manage, name="manage"),
    path("healthz", healthz),
    # Prometheus, outside /v1/: METRICS_TOKEN, not an API key (config/metrics.py).
    path("metrics", metrics_view),
    # The configured provider's tracking webhook only, e.g. /anymail/postmark/tracking/; it
    # refuses everything until its secrets are set (templates_app/webhooks.py).
    path("anymail/<str:provider>/tracking/", tracking_webhook, name="provider-tracking"),
    # Its inbound mail webhook, authenticated the same way (`email.received`).
    path("anymail/<str:provider>/inbound/", inbound_webhook, name="provider-inbound"),
    path("admin/", admin.site.urls),
]

if settings.BENCH_REFERENCE_ENDPOINT:  # the baseline bench/track.py compares /v1/track with
    from bench.reference import ReferenceView

    urlpatterns.append(path("bench/reference", ReferenceView.as_view(), name="bench-reference"))


_API_ERRORS = {
    400: ("bad_request", "The request can not be read (for example, an unknown Host header)."),
    403: ("permission_denied", "Forbidden."),
    404: ("not_found", "No such API endpoint."),
    500: ("internal_error", "Something went wrong on our side; it is logged."),
}


def _api_or(default, status: int):
    """API paths answer errors in JSON; every other page keeps Django's own."""
    code, message = _API_ERRORS[status]

    def handler(request, *args, **kwargs):
        if request.path.startswith("/v1/"):
            return JsonResponse(error_body(code, message, status=status), status=status)
        return default(request, *args, **kwargs)

    return handler


handler400 = _api_or(bad_request, 400)
handler403 = _api_or(permission_denied, 403)
handler404 = _api_or(page_not_found, 404)
handler500 = _api_or(server_error, 500)
