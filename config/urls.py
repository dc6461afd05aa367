from django.conf import settings
from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path

from contacts_app import views as contact_views
from workflows_app.api import TrackView

admin.site.site_header = "Lifecycle"
admin.site.site_title = "Lifecycle admin"
admin.site.index_title = "Workflows, contacts and email"


def healthz(request):
    return JsonResponse({"ok": True})


urlpatterns = [
    path("v1/track", TrackView.as_view(), name="track"),
    path("unsubscribe/<str:token>", contact_views.unsubscribe, name="unsubscribe"),
    path("healthz", healthz),
    # Provider tracking webhooks, e.g. /anymail/postmark/tracking/ (ANYMAIL_WEBHOOK_SECRET)
    path("anymail/", include("anymail.urls")),
    path("admin/", admin.site.urls),
]

if settings.BENCH_REFERENCE_ENDPOINT:  # the baseline bench/track.py compares /v1/track with
    from bench.reference import ReferenceView

    urlpatterns.append(path("bench/reference", ReferenceView.as_view(), name="bench-reference"))
