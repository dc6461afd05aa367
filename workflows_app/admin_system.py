"""The admin's System page: the worker and clock processes and the engine's backlog, each in
green, amber or red (workflows_app/system.py computes them).

It is the ProcessHeartbeat model's changelist, so the admin index and sidebar link it ("System",
under Workflows) for exactly the users who may see it: superusers and those given the
"Can view the System page" permission (workflows_app.view_system). A permission rather than
superuser only, so an on-call person can watch the system without being able to change
everything; not every staff user, since the page names hosts and process ids and the volume of
failures, which a marketer editing workflows has no use for.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from workflows_app import system
from workflows_app.models import ProcessHeartbeat

PERMISSION = "workflows_app.view_system"


@admin.register(ProcessHeartbeat)
class SystemAdmin(admin.ModelAdmin):
    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.has_perm(PERMISSION)

    def has_add_permission(self, request) -> bool:
        return False  # rows are the processes' own

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        # The changelist's name, so the admin index and sidebar link here.
        name = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        return [path("", self.admin_site.admin_view(self.system_view), name=name)]

    def system_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        processes, checks = system.system_checks(now)
        interval = settings.HEARTBEAT_SECONDS
        return TemplateResponse(
            request,
            "admin/workflows_app/system.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "System",
                "now": now,
                "processes": processes,
                "checks": checks,
                "interval": interval,
                "late_after": ProcessHeartbeat.LATE_AFTER_INTERVALS,
                "dead_after": ProcessHeartbeat.DEAD_AFTER_INTERVALS,
            },
        )
