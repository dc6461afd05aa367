"""The canvas's statistics endpoint: GET .../canvas/stats/?from=&to=&goal= answers what
`GET /v1/workflows/<id>/stats` does (workflows_app.stats), for a signed-in user who may view
the workflow. Figures only, no contact data, so the workflow's view permission is enough.
WorkflowAdmin.get_urls wires it in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from workflows_app.admin_views import _json_error
from workflows_app.models import Workflow
from workflows_app.stats import StatsInputError, stats_query, workflow_stats

if TYPE_CHECKING:
    from workflows_app.admin import WorkflowAdmin


@require_GET
def canvas_stats_view(request: HttpRequest, workflow_id: int, *, model_admin: WorkflowAdmin):
    """200 with the statistics; 400 {ok: false, message, field} for a bad `from`, `to` or
    `goal`; 403 without the view permission; 404 for a workflow that does not exist."""
    workflow = Workflow.objects.filter(pk=workflow_id).first()
    if workflow is None:
        return _json_error(404, f"No workflow #{workflow_id}.")
    if not model_admin.has_view_permission(request, workflow):
        return _json_error(403, "You may not view this workflow.")
    try:
        query = stats_query(request.GET, now=timezone.now())
    except StatsInputError as exc:
        return _json_error(400, f"Invalid {exc.field}: {exc.message}", field=exc.field)
    return JsonResponse(
        workflow_stats(workflow=workflow, start=query.start, end=query.end, goal=query.goal)
    )
