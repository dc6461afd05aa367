"""The canvas's Test panel endpoint: a dry run of the workflow (workflows_app.simulate), as JSON.

POST {contact, trigger?, events?} (the body of POST /v1/workflows/<id>/simulate) with the
session and CSRF token. Needs the workflow's view permission; naming an existing contact by
email also needs permission to view contacts (the dry run shows their data, rendered into
emails and webhook bodies), checked before the contact is looked up, so the answer does not
tell who exists either. Errors: {ok: false, message, fields?} with 400 (naming each field at
fault), 403, 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_POST

from contacts_app import safejson
from workflows_app.admin_views import _json_error, can_view_contacts
from workflows_app.models import Workflow
from workflows_app.simulate import SimulationInvalid, simulation_parse, workflow_simulate

if TYPE_CHECKING:
    from workflows_app.admin import WorkflowAdmin

CONTACT_REFUSED = (
    "A dry run for a real contact shows their data: it needs permission to view contacts. "
    "Enter sample data for a made-up contact instead."
)


@require_POST
def canvas_simulate_view(request: HttpRequest, workflow_id: int, *, model_admin: WorkflowAdmin):
    workflow = get_object_or_404(Workflow, pk=workflow_id)
    if not model_admin.has_view_permission(request, workflow):
        return _json_error(403, "You may not view this workflow.")
    try:
        body = safejson.loads(request.body or b"")
    except ValueError as exc:
        return _json_error(400, f"The request body is not valid JSON: {exc}", fields={})
    try:
        parsed = simulation_parse(body)
    except SimulationInvalid as exc:
        return _json_error(400, f"Invalid request: {exc}", fields=exc.fields)
    if parsed.email is not None and not can_view_contacts(request):
        return _json_error(403, CONTACT_REFUSED, fields={"contact.email": CONTACT_REFUSED})
    try:
        result = workflow_simulate(workflow=workflow, request=parsed)
    except SimulationInvalid as exc:
        return _json_error(400, f"Invalid request: {exc}", fields=exc.fields)
    return JsonResponse({"ok": True, **result})
