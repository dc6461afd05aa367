"""The workflows API (secret keys): workflows, their whole graph, and Plunk's one-at-a-time step
and transition endpoints. Thin: every write goes through the services the admin and the canvas
use (workflows_app.services, graph.workflow_save_graph, graph_edits over it), so validation,
locking and lost-update detection are the same on every path."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError
from django.db.models import Count, F, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce, Lower
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts_app.api_errors import ApiError
from contacts_app.api_schema import error_responses, ok
from contacts_app.models import ApiKey
from contacts_app.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PagePagination
from contacts_app.safejson import unstorable
from workflows_app import graph_edits, simulate
from workflows_app.event_names import current_event_name
from workflows_app.graph import (
    GraphConflict,
    GraphError,
    WorkflowLocked,
    workflow_graph_snapshot,
    workflow_save_graph,
)
from workflows_app.graph_edits import EditRefused, StepInput
from workflows_app.models import Execution, Workflow
from workflows_app.serializers import (
    GraphPutSerializer,
    GraphReplySerializer,
    StepCreateSerializer,
    StepInsertSerializer,
    StepSerializer,
    StepWriteSerializer,
    TransitionCreateSerializer,
    TransitionSerializer,
    WorkflowCreateSerializer,
    WorkflowPageSerializer,
    WorkflowSerializer,
    WorkflowUpdateSerializer,
)
from workflows_app.services import (
    WorkflowBusy,
    workflow_create,
    workflow_delete,
    workflow_duplicate,
    workflow_update,
)
from workflows_app.stats import MAX_GOAL, StatsInputError, stats_query, workflow_stats

TAGS = ["workflows"]
GRAPH_TAGS = ["workflow graph"]
SORTS = {"name": "name", "createdAt": "created_at", "updatedAt": "updated_at"}
MAX_SEARCH = 200
LOCKED_NOTE = (
    " Step names and positions can still change; steps, configs, templates and transitions cannot."
)
DRAFT_NOTE = (
    " This workflow is enabled, so its graph must stay complete (the trigger connected, every "
    "step reachable): add a step on a transition (POST .../transitions/<id>/insert-step), or "
    "disable the workflow to build its graph one step at a time."
)
COMPLETENESS = ("not reachable from the trigger", "connect the trigger to the first step")

# --- examples -----------------------------------------------------------------------------------

WORKFLOW = {
    "id": 7,
    "name": "Onboarding",
    "description": "Welcome new users.",
    "triggerType": "event",
    "eventName": "user.signup",
    "enabled": True,
    "allowReentry": False,
    "frequencyCap": "",
    "graphVersion": 3,
    "createdAt": "2026-01-01T12:00:00Z",
    "updatedAt": "2026-01-02T08:30:00Z",
    "activeExecutions": 12,
}
GRAPH = {
    "steps": [
        {
            "key": "welcome",
            "type": "send_email",
            "name": "Send welcome",
            "config": {"template": "Welcome"},
            "position": {"x": 0, "y": 100},
        },
        {
            "key": "pause",
            "type": "delay",
            "name": "",
            "config": {"amount": 2, "unit": "days"},
            "position": {"x": 0, "y": 260},
        },
    ],
    "transitions": [
        {"from": "trigger", "to": "welcome", "branch": "next"},
        {"from": "welcome", "to": "pause", "branch": "next"},
    ],
}
STEP = {
    "id": "pause",
    "key": "pause",
    "type": "delay",
    "name": "Wait two days",
    "config": {"amount": 2, "unit": "days"},
    "position": {"x": 0, "y": 260},
    "templateId": None,
}
TRANSITION = {"id": "welcome:next", "fromStepId": "welcome", "toStepId": "pause", "branch": "next"}


def _reply(example: dict, code: str = "200", name: str = "Reply") -> OpenApiExample:
    return OpenApiExample(
        name, value={"success": True, "data": example}, response_only=True, status_codes=[code]
    )


def _request(example: dict, name: str = "Request") -> OpenApiExample:
    return OpenApiExample(name, value=example, request_only=True)


# One reply component per shape (ok() makes a new one each call).
_WORKFLOW_OK = ok(WorkflowSerializer)
_GRAPH_OK = ok(GraphReplySerializer)
_STEP_OK = ok(StepSerializer)
_TRANSITION_OK = ok(TransitionSerializer)

_WORKFLOW_ID = OpenApiParameter(
    "workflow_id",
    {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    OpenApiParameter.PATH,
    description="The workflow's id.",
)
_STEP_KEY = OpenApiParameter(
    "key",
    {"type": "string", "minLength": 1, "maxLength": 64},
    OpenApiParameter.PATH,
    description="The step's key (its id in these endpoints).",
)
_TRANSITION_ID = OpenApiParameter(
    "transition_id",
    {"type": "string", "minLength": 3, "maxLength": 129},
    OpenApiParameter.PATH,
    description='"<fromStepId>:<branch>", e.g. "trigger:next", "welcome:next", "wait:timeout".',
)

# --- helpers ------------------------------------------------------------------------------------


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "validation_error", f"Invalid {field}.", {field: message})


def _workflows() -> QuerySet[Workflow]:
    # A subquery per workflow on the page, on the (workflow, status) index: a join would read
    # every execution a workflow ever had.
    active = (
        Execution.objects.filter(workflow=OuterRef("pk"), status__in=Execution.ACTIVE)
        .order_by()
        .values("workflow")
        .annotate(n=Count("*"))
        .values("n")
    )
    return Workflow.objects.annotate(
        active_executions=Coalesce(Subquery(active, output_field=IntegerField()), 0)
    )


def _workflow(workflow_id: int) -> Workflow:
    workflow = _workflows().filter(pk=workflow_id).first()
    if workflow is None:
        raise ApiError(404, "not_found", f"No workflow #{workflow_id}.")
    return workflow


def _workflow_json(workflow_id: int) -> dict[str, Any]:
    return WorkflowSerializer(_workflow(workflow_id)).data


def _by(request) -> str:
    """Who saved, as a graph conflict tells the next editor: the key's visible prefix."""
    key_id = request.user.key.id
    prefix = ApiKey.objects.filter(pk=key_id).values_list("prefix", flat=True).first()
    return f"api:{prefix}…" if prefix else f"api:key#{key_id}"


def _text(value: str, field: str) -> str:
    if problem := unstorable(value):
        raise _invalid(field, problem)
    return value


def _name_free(name: str, *, but: int | None = None) -> None:
    others = Workflow.objects.filter(name=name)
    taken = (others if but is None else others.exclude(pk=but)).exists()
    if taken:
        raise _invalid("name", f"A workflow named {name!r} exists; names are unique.")


def _graph_fields(
    errors: list[dict[str, Any]], *, prefix: str = "graph", own: str | None = None
) -> dict[str, str]:
    """The graph service's errors ({step, field, message}) as the envelope's fields: errors of
    the step an endpoint edits name the body's field (`config.amount`), others their step in
    the graph (`graph.steps.<key>.<field>`), the rest `graph`."""
    fields: dict[str, list[str]] = {}
    for error in errors:
        step, field = error.get("step"), error.get("field") or ""
        if own is not None and step == own:
            where = field or "body"
        elif step:
            where = f"{prefix}.steps.{step}" + (f".{field}" if field else "")
        else:
            where = prefix
        fields.setdefault(where, []).append(error["message"])
    return {where: "; ".join(messages) for where, messages in fields.items()}


def _graph_invalid(
    exc: GraphError, workflow: Workflow | None = None, *, prefix="graph", own=None
) -> ApiError:
    message = f"The graph was not saved: {exc}"
    completeness = any(e["message"].startswith(COMPLETENESS) for e in exc.errors)
    if workflow is not None and workflow.enabled and completeness:
        message += "." + DRAFT_NOTE
    return ApiError(
        400, "validation_error", message, _graph_fields(exc.errors, prefix=prefix, own=own)
    )


def _graph_refused(exc: Exception) -> ApiError:
    if isinstance(exc, WorkflowLocked):
        return ApiError(409, "workflow_locked", str(exc) + LOCKED_NOTE)
    assert isinstance(exc, GraphConflict)
    return ApiError(
        409,
        "graph_conflict",
        str(exc),
        {"version": f"The graph is at version {exc.current_version} now."},
    )


def _edit(request, workflow: Workflow, change, *, own=None):
    """Runs a one-at-a-time edit through graph_edits.graph_edit, answering its refusals. `own`
    (a key, or a function giving it) is the step the body describes."""
    try:
        return graph_edits.graph_edit(workflow=workflow, change=change, by=_by(request))
    except EditRefused as exc:
        fields = {exc.field: exc.message} if exc.field else None
        raise ApiError(exc.status, exc.code, exc.message, fields) from None
    except GraphError as exc:
        own = own() if callable(own) else own
        raise _graph_invalid(exc, workflow, prefix="graph", own=own) from None
    except (WorkflowLocked, GraphConflict) as exc:
        raise _graph_refused(exc) from None
    except Workflow.DoesNotExist:  # deleted meanwhile
        raise ApiError(404, "not_found", f"No workflow #{workflow.pk}.") from None


def _saved_step(workflow: Workflow, key: str) -> dict[str, Any]:
    """The step as saved (configs are stored in one canonical form)."""
    _, document = workflow_graph_snapshot(workflow)
    try:
        return graph_edits.step_reply(graph_edits.find_step(document, key))
    except EditRefused as exc:  # removed again meanwhile
        raise ApiError(exc.status, exc.code, exc.message) from None


def _step_input(values: dict[str, Any]) -> StepInput:
    return StepInput(
        type=values.get("type"),
        name=values.get("name"),
        key=values.get("key"),
        position=values.get("position"),
        config=values.get("config"),
        template_id=values.get("templateId"),
    )


def _check_texts(values: dict[str, Any], *names: str) -> None:
    for name in names:
        if isinstance(values.get(name), str):
            _text(values[name], name)


# --- workflows ----------------------------------------------------------------------------------


_LIST_PARAMETERS = [
    OpenApiParameter(
        "page",
        {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1},
        description="The page, from 1 (past the end: an empty list).",
    ),
    OpenApiParameter(
        "pageSize",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
        description=f"Workflows per page, 1 to {MAX_PAGE_SIZE}.",
    ),
    OpenApiParameter(
        "search",
        {"type": "string", "maxLength": MAX_SEARCH},
        description="Only workflows whose name contains this (in any case).",
    ),
    OpenApiParameter(
        "status",
        str,
        enum=["active", "disabled"],
        description="active: enabled workflows; disabled: the others.",
    ),
    OpenApiParameter("sort", str, enum=list(SORTS), description="Order by (default createdAt)."),
    OpenApiParameter(
        "dir", str, enum=["asc", "desc"], description="Default desc (newest first), asc for name."
    ),
]


def _choice(request, name: str, choices, default: str) -> str:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise _invalid(name, f"One of: {', '.join(choices)}.")
    return raw


class WorkflowListView(APIView):
    """GET /v1/workflows (page paging) and POST /v1/workflows."""

    @extend_schema(
        tags=TAGS,
        operation_id="workflows_list",
        summary="List workflows",
        parameters=_LIST_PARAMETERS,
        responses={200: WorkflowPageSerializer, **error_responses(400)},
        examples=[
            OpenApiExample(
                "A page",
                value={
                    "success": True,
                    "data": [WORKFLOW],
                    "total": 1,
                    "page": 1,
                    "pageSize": 20,
                    "totalPages": 1,
                },
                response_only=True,
                status_codes=["200"],
            )
        ],
    )
    def get(self, request):
        sort = _choice(request, "sort", list(SORTS), "createdAt")
        direction = _choice(request, "dir", ["asc", "desc"], "asc" if sort == "name" else "desc")
        state = _choice(request, "status", ["active", "disabled"], "")
        search = request.query_params.get("search", "").strip()
        if len(search) > MAX_SEARCH:
            raise _invalid("search", f"At most {MAX_SEARCH} characters.")
        workflows = _workflows()
        if search:
            workflows = workflows.filter(name__icontains=search)
        if state:
            workflows = workflows.filter(enabled=state == "active")
        # Names in any case, as people read them (not by code point: "Zeta" before "alpha").
        column = Lower("name") if sort == "name" else F(SORTS[sort])
        order = (
            [column.asc(), F("id").asc()] if direction == "asc" else [column.desc(), F("id").desc()]
        )
        paginator = PagePagination()
        page = paginator.paginate_queryset(workflows.order_by(*order), request, view=self)
        return paginator.get_paginated_response(WorkflowSerializer(page, many=True).data)

    @extend_schema(
        tags=TAGS,
        operation_id="workflows_create",
        summary="Create a workflow",
        description="An event trigger needs `eventName` (older email event names are read as "
        "the current ones); a manual one (`triggerType: manual`) has none and is started by "
        "POST /v1/workflows/{id}/executions. `graph` is the whole graph in the workflow file "
        "format, checked like every save (400 naming each step and field at fault). The "
        "trigger is fixed once created.",
        request=WorkflowCreateSerializer,
        responses={201: _WORKFLOW_OK, **error_responses(400, 413, 415)},
        examples=[
            _request(
                {
                    "name": "Onboarding",
                    "eventName": "user.signup",
                    "description": "Welcome new users.",
                    "enabled": True,
                    "graph": {
                        "steps": [
                            {
                                "key": "pause",
                                "type": "delay",
                                "config": {"amount": 2, "unit": "days"},
                            }
                        ],
                        "transitions": [{"from": "trigger", "to": "pause"}],
                    },
                },
                "With a graph",
            ),
            _request({"name": "Win-back", "triggerType": "manual"}, "Manual trigger"),
            _reply(WORKFLOW, "201", "Created"),
        ],
    )
    def post(self, request):
        body = WorkflowCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        _check_texts(values, "name", "eventName", "description")
        _name_free(values["name"])
        try:
            workflow = workflow_create(
                name=values["name"],
                trigger_type=values["triggerType"],
                trigger_event=current_event_name(values.get("eventName", "")),
                description=values["description"],
                allow_reentry=values["allowReentry"],
                frequency_cap=values["frequencyCap"],
                enabled=values["enabled"],
                graph=values.get("graph"),
            )
        except GraphError as exc:
            raise _graph_invalid(exc) from None
        except IntegrityError:  # the name was taken meanwhile
            raise _invalid("name", "A workflow with this name exists; names are unique.") from None
        return Response(
            {"success": True, "data": _workflow_json(workflow.pk)}, status=status.HTTP_201_CREATED
        )


class WorkflowDetailView(APIView):
    """GET, PATCH and DELETE /v1/workflows/<id>."""

    @extend_schema(
        tags=TAGS,
        operation_id="workflows_get",
        summary="Get a workflow",
        description="The workflow; its graph is at GET /v1/workflows/{id}/graph.",
        parameters=[_WORKFLOW_ID],
        responses={200: _WORKFLOW_OK, **error_responses(404)},
        examples=[_reply(WORKFLOW)],
    )
    def get(self, request, workflow_id: int):
        return Response({"success": True, "data": _workflow_json(workflow_id)})

    @extend_schema(
        tags=TAGS,
        operation_id="workflows_update",
        summary="Update a workflow",
        description="Changes `name`, `description`, `enabled`, `allowReentry` and "
        "`frequencyCap`, which stay editable while runs are active. Enabling needs a complete, "
        "valid graph (400 on `enabled` naming the problems). `eventName` and `triggerType` are "
        "fixed once created: a different value is a 400 naming the field.",
        parameters=[_WORKFLOW_ID],
        request=WorkflowUpdateSerializer,
        responses={200: _WORKFLOW_OK, **error_responses(400, 404, 413, 415)},
        examples=[_request({"enabled": True}, "Enable"), _reply(WORKFLOW)],
    )
    def patch(self, request, workflow_id: int):
        workflow = _workflow(workflow_id)
        body = WorkflowUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        _check_texts(values, "name", "description", "eventName")
        if "eventName" in values and current_event_name(values["eventName"] or "") != (
            workflow.trigger_event
        ):
            raise _invalid("eventName", "The trigger event is fixed once created.")
        if "triggerType" in values and values["triggerType"] != workflow.trigger_type:
            raise _invalid("triggerType", "The trigger type is fixed once created.")
        if "name" in values:
            _name_free(values["name"], but=workflow.pk)
        try:
            workflow_update(
                workflow=workflow,
                name=values.get("name"),
                description=values.get("description"),
                enabled=values.get("enabled"),
                allow_reentry=values.get("allowReentry"),
                frequency_cap=values.get("frequencyCap"),
            )
        except GraphError as exc:
            fields = {
                "enabled": "Not enabled: the graph is incomplete or invalid.",
                **_graph_fields(exc.errors),
            }
            raise ApiError(
                400,
                "validation_error",
                f"Not enabled: the graph is incomplete or invalid: {exc}",
                fields,
            ) from None
        except IntegrityError:
            raise _invalid("name", "A workflow with this name exists; names are unique.") from None
        except Workflow.DoesNotExist:  # deleted meanwhile
            raise ApiError(404, "not_found", f"No workflow #{workflow_id}.") from None
        return Response({"success": True, "data": _workflow_json(workflow.pk)})

    @extend_schema(
        tags=TAGS,
        operation_id="workflows_delete",
        summary="Delete a workflow",
        description="Deletes it with its graph and finished executions. Refused (409 "
        "`workflow_busy`) while runs are active: disable it and cancel them first.",
        parameters=[_WORKFLOW_ID],
        responses={
            204: OpenApiResponse(description="Deleted."),
            **error_responses(404, 409, conflict="The workflow has active executions."),
        },
    )
    def delete(self, request, workflow_id: int):
        workflow = _workflow(workflow_id)
        try:
            workflow_delete(workflow=workflow)
        except WorkflowBusy as exc:
            raise ApiError(409, "workflow_busy", str(exc)) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class WorkflowDuplicateView(APIView):
    @extend_schema(
        tags=TAGS,
        operation_id="workflows_duplicate",
        summary="Duplicate a workflow",
        description='A disabled copy named "<name> (Copy)" (or "(Copy 2)"...), with its '
        "trigger, description, re-entry and graph; no executions. No body.",
        parameters=[_WORKFLOW_ID],
        request=None,
        responses={201: _WORKFLOW_OK, **error_responses(400, 404)},
        examples=[
            _reply(
                {**WORKFLOW, "id": 8, "name": "Onboarding (Copy)", "enabled": False}, "201", "Copy"
            )
        ],
    )
    def post(self, request, workflow_id: int):
        workflow = _workflow(workflow_id)
        try:
            copy = workflow_duplicate(workflow=workflow, by=_by(request))
        except GraphError as exc:  # a stored graph that no longer validates
            raise _graph_invalid(exc) from None
        except Workflow.DoesNotExist:  # deleted meanwhile
            raise ApiError(404, "not_found", f"No workflow #{workflow_id}.") from None
        return Response(
            {"success": True, "data": _workflow_json(copy.pk)}, status=status.HTTP_201_CREATED
        )


# --- the whole graph ----------------------------------------------------------------------------


def _graph_json(workflow: Workflow) -> dict[str, Any]:
    version, document = workflow_graph_snapshot(workflow)
    return {"version": version, "graph": document}


class WorkflowGraphView(APIView):
    """GET and PUT /v1/workflows/<id>/graph: the whole graph with its version."""

    @extend_schema(
        tags=GRAPH_TAGS,
        operation_id="workflows_graph_get",
        summary="Get a workflow's graph",
        description="Steps and transitions in the workflow file format, with the graph's "
        "version (send it back with PUT).",
        parameters=[_WORKFLOW_ID],
        responses={200: _GRAPH_OK, **error_responses(404)},
        examples=[_reply({"version": 3, "graph": GRAPH})],
    )
    def get(self, request, workflow_id: int):
        return Response({"success": True, "data": _graph_json(_workflow(workflow_id))})

    @extend_schema(
        tags=GRAPH_TAGS,
        operation_id="workflows_graph_put",
        summary="Replace a workflow's graph",
        description="Saves the whole graph in one transaction, as the admin's canvas does: "
        "steps are matched by key (their history stays). `version` is the one you read: if "
        "someone saved since, 409 `graph_conflict` says who and when, and nothing is saved. "
        "While runs are active only step names and positions may change (409 "
        "`workflow_locked`). Invalid graphs: 400 naming each step and field "
        "(`graph.steps.<key>.<field>`).",
        parameters=[_WORKFLOW_ID],
        request=GraphPutSerializer,
        responses={
            200: _GRAPH_OK,
            **error_responses(
                400,
                404,
                409,
                413,
                415,
                conflict="graph_conflict: someone saved since your version; workflow_locked: "
                "runs are active.",
            ),
        },
        examples=[_request({"version": 3, "graph": GRAPH}), _reply({"version": 4, "graph": GRAPH})],
    )
    def put(self, request, workflow_id: int):
        workflow = _workflow(workflow_id)
        body = GraphPutSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        try:
            workflow_save_graph(
                workflow=workflow,
                document=values["graph"],
                expected_version=values["version"],
                by=_by(request),
            )
        except GraphError as exc:
            raise _graph_invalid(exc) from None
        except (WorkflowLocked, GraphConflict) as exc:
            raise _graph_refused(exc) from None
        except Workflow.DoesNotExist:  # deleted meanwhile
            raise ApiError(404, "not_found", f"No workflow #{workflow_id}.") from None
        return Response({"success": True, "data": _graph_json(workflow)})


# --- statistics ---------------------------------------------------------------------------------

_STATS_OK = OpenApiResponse(
    response=inline_serializer(
        name="WorkflowStatsReply",
        fields={
            "success": serializers.BooleanField(),
            "data": inline_serializer(
                name="WorkflowStats",
                fields={
                    "from": serializers.DateTimeField(),
                    "to": serializers.DateTimeField(),
                    "goal": serializers.CharField(allow_null=True),
                    "executions": serializers.DictField(
                        child=serializers.IntegerField(),
                        help_text="Runs started in the period, by their status now.",
                    ),
                    "started_per_day": inline_serializer(
                        name="WorkflowStatsDay",
                        fields={
                            "date": serializers.DateField(),
                            "started": serializers.IntegerField(),
                        },
                        many=True,
                    ),
                    "steps": serializers.DictField(
                        child=serializers.JSONField(),
                        help_text="Per step key: type, name, entered, completed, skipped, "
                        "failed, waiting; Send Email steps also sent, delivered, opened, "
                        "clicked, bounced, unsubscribed, skipped_reasons; Split steps also "
                        "branches (per branch id, with goal_reached and goal_share).",
                    ),
                },
            ),
        },
    )
)
_STATS_EXAMPLE = {
    "from": "2026-01-01T00:00:00+00:00",
    "to": "2026-01-31T00:00:00+00:00",
    "goal": "order.placed",
    "executions": {
        "RUNNING": 0,
        "WAITING": 3,
        "COMPLETED": 40,
        "EXITED": 0,
        "FAILED": 1,
        "CANCELLED": 0,
    },
    "started_per_day": [{"date": "2026-01-01", "started": 2}, {"date": "2026-01-02", "started": 0}],
    "steps": {
        "ab": {
            "type": "split",
            "name": "Subject test",
            "entered": 44,
            "completed": 44,
            "skipped": 0,
            "failed": 0,
            "waiting": 0,
            "branches": {
                "a": {
                    "entered": 22,
                    "completed": 20,
                    "skipped": 1,
                    "failed": 1,
                    "waiting": 1,
                    "sent": 21,
                    "delivered": 20,
                    "opened": 12,
                    "clicked": 4,
                    "bounced": 1,
                    "unsubscribed": 0,
                    "goal_reached": 5,
                    "goal_share": 0.227,
                }
            },
        },
        "welcome_a": {
            "type": "send_email",
            "name": "Welcome A",
            "entered": 22,
            "completed": 21,
            "skipped": 1,
            "failed": 0,
            "waiting": 0,
            "sent": 21,
            "delivered": 20,
            "opened": 12,
            "clicked": 4,
            "bounced": 1,
            "unsubscribed": 0,
            "skipped_reasons": {"frequency cap": 1},
        },
    },
}


class WorkflowStatsView(APIView):
    @extend_schema(
        tags=TAGS,
        operation_id="workflows_stats",
        summary="Per-step statistics",
        description="About the runs started in [`from`, `to`) (default: the last 30 days; at "
        "most 366 days): their status now, how many started each day (in TIME_ZONE), and per "
        "step of the current graph the visits that entered, completed, were skipped or failed "
        "and the runs waiting there now; for Send Email steps the messages sent, delivered, "
        "opened, clicked, bounced and the unsubscribes they prompted, with skips by reason; "
        "for Split steps the same per branch, and with `goal` how many contacts of each "
        "branch tracked that event after the split. README's Statistics section defines each "
        "figure.",
        parameters=[
            _WORKFLOW_ID,
            OpenApiParameter(
                "from",
                str,
                description="An ISO 8601 date or date-time (without an offset: in TIME_ZONE); "
                "a date is the start of that day. Default: 30 days before `to`.",
            ),
            OpenApiParameter(
                "to",
                str,
                description="An ISO 8601 date or date-time, not included; a date means the end "
                "of that day. Default: now.",
            ),
            OpenApiParameter(
                "goal",
                {"type": "string", "maxLength": MAX_GOAL},
                description="An event name: per split branch, how many reached it.",
            ),
        ],
        responses={200: _STATS_OK, **error_responses(400, 404)},
        examples=[_reply(_STATS_EXAMPLE)],
    )
    def get(self, request, workflow_id: int):
        workflow = _workflow(workflow_id)
        try:
            query = stats_query(request.query_params, now=timezone.now())
        except StatsInputError as exc:
            raise _invalid(exc.field, exc.message) from None
        data = workflow_stats(workflow=workflow, start=query.start, end=query.end, goal=query.goal)
        return Response({"success": True, "data": data})


# --- steps and transitions, one at a time -------------------------------------------------------

_EDIT_ERRORS = error_responses(
    400,
    404,
    409,
    413,
    415,
    conflict="workflow_locked: runs are active; graph_conflict: others kept saving; "
    "step_exists / transition_exists: the key or the branch is taken.",
)
_EDIT_NOTE = (
    " Saved through the whole-graph save (validation and locking as in the admin). A disabled "
    "workflow's graph may be incomplete while it is built (a step not yet connected); an "
    "enabled one's must stay complete, and enabling checks it."
)


class StepListView(APIView):
    @extend_schema(
        tags=GRAPH_TAGS,
        operation_id="workflows_steps_create",
        summary="Add a step",
        description="Adds an unconnected step (connect it with POST .../transitions, or use "
        "POST .../transitions/{id}/insert-step). `key` defaults to one made from the name or "
        "type; `templateId` (a Send Email step's template) may replace `config.template`."
        + _EDIT_NOTE,
        parameters=[_WORKFLOW_ID],
        request=StepCreateSerializer,
        responses={201: _STEP_OK, **_EDIT_ERRORS},
        examples=[
            _request(
                {
                    "type": "delay",
                    "name": "Wait two days",
                    "config": {"amount": 2, "unit": "days"},
                    "position": {"x": 0, "y": 260},
                }
            ),
            _reply(STEP, "201", "Added"),
        ],
    )
    def post(self, request, workflow_id: int):
        workflow = _workflow(workflow_id)
        body = StepCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        _check_texts(body.validated_data, "key")
        data = _step_input(body.validated_data)
        step = _edit(
            request,
            workflow,
            lambda doc: graph_edits.step_add(doc, data),
            own=lambda: data.assigned_key,
        )
        return Response(
            {"success": True, "data": _saved_step(workflow, step["key"])},
            status=status.HTTP_201_CREATED,
        )


class StepDetailView(APIView):
    @extend_schema(
        tags=GRAPH_TAGS,
        operation_id="workflows_steps_update",
        summary="Update a step",
        description="Changes the step's `name`, `position`, `config` (replaced whole) or "
        "`templateId`. While runs are active only name and position may change." + _EDIT_NOTE,
        parameters=[_WORKFLOW_ID, _STEP_KEY],
        request=StepWriteSerializer,
        responses={200: _STEP_OK, **_EDIT_ERRORS},
        examples=[_request({"config": {"amount": 3, "unit": "days"}}), _reply(STEP)],
    )
    def patch(self, request, workflow_id: int, key: str):
        workflow = _workflow(workflow_id)
        body = StepWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = _step_input(body.validated_data)
        step = _edit(
            request, workflow, lambda doc: graph_edits.step_change(doc, key, data), own=key
        )
        return Response({"success": True, "data": _saved_step(workflow, step["key"])})

    @extend_schema(
        tags=GRAPH_TAGS,
        operation_id="workflows_steps_delete",
        summary="Delete a step",
        description="Removes the step and its transitions. With `splice=true` the transitions "
        "that led to it lead to where its one outgoing transition went instead (a step with "
        "several outgoing branches is a 400: delete the branches you do not want first)."
        + _EDIT_NOTE,
        parameters=[
            _WORKFLOW_ID,
            _STEP_KEY,
            OpenApiParameter(
                "splice",
                str,
                enum=["true", "false"],
                description="Reconnect the step's predecessors to its successor.",
            ),
        ],
        responses={204: OpenApiResponse(description="Deleted."), **_EDIT_ERRORS},
    )
    def delete(self, request, workflow_id: int, key: str):
        workflow = _workflow(workflow_id)
        raw = request.query_params.get("splice", "").lower()
        if raw not in ("", "true", "false", "1", "0"):
            raise _invalid("splice", "true or false.")
        splice = raw in ("true", "1")
        _edit(
            request,
            workflow,
            lambda doc: graph_edits.step_remove(doc, key, splice=splice),
            own=key,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class TransitionListView(APIView):
    @extend_schema(
        tags=GRAPH_TAGS,
        operation_id="workflows_transitions_create",
        summary="Add a transition",
        description="Connects `fromStepId` (a step key, or `trigger`) to `toStepId` on a branch: "
        "`branch`, or Plunk's `condition.branch` (yes / no or a branch id) or `waitOutcome` "
        "(EVENT / TIMEOUT); default `next`. The transition's id is `<fromStepId>:<branch>`. A "
        "branch already connected is a 409 `transition_exists`." + _EDIT_NOTE,
        parameters=[_WORKFLOW_ID],
        request=TransitionCreateSerializer,
        responses={201: _TRANSITION_OK, **_EDIT_ERRORS},
        examples=[
            _request({"fromStepId": "welcome", "toStepId": "pause"}),
            _request(
                {"fromStepId": "activated", "toStepId": "tag", "waitOutcome": "EVENT"},
                "Wait for Event's event branch",
            ),
            _reply(TRANSITION, "201", "Added"),
        ],
    )
    def post(self, request, workflow_id: int):
        workflow = _workflow(workflow_id)
        body = TransitionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        _check_texts(values, "fromStepId", "toStepId")
        branch = _text(values["resolved_branch"], "branch")
        transition = _edit(
            request,
            workflow,
            lambda doc: graph_edits.transition_add(
                doc, values["fromStepId"], values["toStepId"], branch
            ),
        )
        return Response(
            {"success": True, "data": graph_edits.transition_reply(transition)},
            status=status.HTTP_201_CREATED,
        )


class TransitionDetailView(APIView):
    @extend_schema(
        tags=GRAPH_TAGS,
        operation_id="workflows_transitions_delete",
        summary="Delete a transition",
        description="Removes the transition `<fromStepId>:<branch>`." + _EDIT_NOTE,
        parameters=[_WORKFLOW_ID, _TRANSITION_ID],
        responses={204: OpenApiResponse(description="Deleted."), **_EDIT_ERRORS},
    )
    def delete(self, request, workflow_id: int, transition_id: str):
        workflow = _workflow(workflow_id)
        _edit(request, workflow, lambda doc: graph_edits.transition_remove(doc, transition_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class TransitionInsertStepView(APIView):
    @extend_schema(
        tags=GRAPH_TAGS,
        operation_id="workflows_transitions_insert_step",
        summary="Insert a step on a transition",
        description="from -> new step -> to: the transition now leads to the new step, which "
        "leads on to the old target by `branch` (default `next`, else the type's first; an "
        "Exit step leads nowhere). Placed between the two unless `position` is given." + _EDIT_NOTE,
        parameters=[_WORKFLOW_ID, _TRANSITION_ID],
        request=StepInsertSerializer,
        responses={201: _STEP_OK, **_EDIT_ERRORS},
        examples=[
            _request({"type": "delay", "config": {"amount": 1, "unit": "hours"}}),
            _reply(STEP, "201", "Inserted"),
        ],
    )
    def post(self, request, workflow_id: int, transition_id: str):
        workflow = _workflow(workflow_id)
        body = StepInsertSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        _check_texts(values, "key", "branch")
        data = _step_input(values)
        step = _edit(
            request,
            workflow,
            lambda doc: graph_edits.transition_insert(
                doc, transition_id, data, branch=values.get("branch")
            ),
            own=lambda: data.assigned_key,
        )
        return Response(
            {"success": True, "data": _saved_step(workflow, step["key"])},
            status=status.HTTP_201_CREATED,
        )


# --- dry run ------------------------------------------------------------------------------------


class SimulateRequestSerializer(serializers.Serializer):
    contact = serializers.JSONField(
        help_text="{email} of an existing contact, or {data, email?, subscribed?} for a made-up "
        "one (default someone@example.com, subscribed)."
    )
    trigger = serializers.JSONField(
        required=False, help_text="{data}: the trigger event's data (the run's context)."
    )
    events = serializers.JSONField(
        required=False,
        help_text=f"Up to {simulate.MAX_EVENTS} of {{name, after, data?}}: `after` is seconds "
        "from the start (0 or more, at most a year).",
    )


class SimulationSerializer(serializers.Serializer):
    path = serializers.ListField(
        child=serializers.JSONField(),
        help_text="Each step visited: {step, name, type, branch, at (seconds from the start), "
        "at_time, detail, skipped?}.",
    )
    status = serializers.CharField(help_text="COMPLETED, EXITED, FAILED, WAITING or RUNNING.")
    exit_reason = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_blank=True)
    emails = serializers.ListField(child=serializers.JSONField())
    webhooks = serializers.ListField(child=serializers.JSONField())
    context = serializers.JSONField()  # type: ignore[assignment]  # the JSON name
    contact = serializers.JSONField()
    waiting = serializers.JSONField(allow_null=True)
    horizon = serializers.CharField(allow_null=True)
    events = serializers.ListField(
        child=serializers.JSONField(),
        help_text="The listed events in time order: {name, after, resumed (the key of the wait "
        "it resumed, or null)}.",
    )
    started_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField()


_SIMULATION_EXAMPLE = {
    "path": [
        {
            "step": "wait_activation",
            "name": "Wait for activation",
            "type": "wait_for_event",
            "branch": "event",
            "at": 3600,
            "at_time": "2026-11-27T11:00:00Z",
            "detail": {
                "event": "user.activated",
                "timeout_at": None,
                "received": {"name": "user.activated", "after": 3600, "data": {}},
                "resumed_at": "2026-11-27T11:00:00+00:00",
            },
        },
        {
            "step": "tips",
            "name": "Send tips",
            "type": "send_email",
            "branch": "next",
            "at": 3600,
            "at_time": "2026-11-27T11:00:00Z",
            "detail": {"email": 0, "to": "someone@example.com", "subject": "Three tips for Ann"},
        },
    ],
    "status": "COMPLETED",
    "exit_reason": "",
    "error": "",
    "emails": [
        {
            "step": "tips",
            "to": "someone@example.com",
            "subject": "Three tips for Ann",
            "html": "<p>Hi Ann, ...</p>",
            "text": "Hi Ann, ...",
        }
    ],
    "webhooks": [],
    "context": {"orderId": "A-1", "user.activated": {}},
    "contact": {"email": "someone@example.com", "data": {"firstName": "Ann", "plan": "pro"}},
    "waiting": None,
    "horizon": None,
    "events": [{"name": "user.activated", "after": 3600, "resumed": "wait_activation"}],
    "started_at": "2026-11-27T10:00:00Z",
    "ended_at": "2026-11-27T11:00:00Z",
}


class WorkflowSimulateView(APIView):
    @extend_schema(
        tags=TAGS,
        operation_id="workflows_simulate",
        summary="Dry run (virtual time)",
        description="What the workflow would do to a contact, run by the real step code with "
        "nothing sent, called or stored: the steps visited with their branches and virtual "
        "times (delays pass at once; events arrive at their `after`), the emails as they "
        "would be rendered, the webhook requests as they would be made (the step then goes "
        "on as if answered 200 with an empty body), and the final status, context and "
        "contact. Works on disabled workflows. Stops after "
        f"{simulate.MAX_VISITS} step visits or {simulate.HORIZON.days} days of virtual time "
        "(`horizon` says so).",
        parameters=[_WORKFLOW_ID],
        request=SimulateRequestSerializer,
        responses={200: ok(SimulationSerializer), **error_responses(400, 404, 413, 415)},
        examples=[
            _request(
                {
                    "contact": {"data": {"firstName": "Ann", "plan": "pro"}},
                    "trigger": {"data": {"orderId": "A-1"}},
                    "events": [{"name": "user.activated", "after": 3600, "data": {}}],
                },
            ),
            _reply(_SIMULATION_EXAMPLE),
        ],
    )
    def post(self, request, workflow_id: int):
        workflow = _workflow(workflow_id)
        try:
            body = simulate.simulation_parse(request.data)
            result = simulate.workflow_simulate(workflow=workflow, request=body)
        except simulate.SimulationInvalid as exc:
            raise ApiError(400, "validation_error", f"Invalid request: {exc}", exc.fields) from None
        return Response({"success": True, "data": result})
