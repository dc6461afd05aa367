"""Executions over the API (Plunk's shapes): start a run now for a contact, list a workflow's
runs, read one with its step history, cancel one or all. Thin: every change goes through the
engine (execution_start_manual, execution_cancel, executions_cancel_all)."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Prefetch
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts_app import safejson
from contacts_app.api_errors import ApiError
from contacts_app.api_schema import error_responses, ok
from contacts_app.emails import email_error, normalize_email
from contacts_app.models import Contact
from contacts_app.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PagePagination
from contacts_app.services import contact_data_size
from workflows_app import engine
from workflows_app.models import Execution, StepRun, Workflow

MAX_ID = 2**63 - 1  # bigint ids: a larger number in a path names nothing
STATUSES = [status for status, _ in Execution.STATUS_CHOICES]

# --- Shapes -----------------------------------------------------------------------------------


def _status_field(choices: list[tuple[str, str]]) -> serializers.CharField:
    """A status, described inline as an enum (Execution's and StepRun's are different sets
    under the same field name; inline, neither takes the other's component name)."""

    @extend_schema_field({"type": "string", "enum": [value for value, _ in choices]})
    class StatusField(serializers.CharField):
        pass

    return StatusField()


class StepRunSerializer(serializers.Serializer):
    """One visit of a step: the run's history."""

    id = serializers.IntegerField()
    stepKey = serializers.CharField(source="step_key")
    stepType = serializers.CharField(source="step_type")
    stepName = serializers.CharField(source="step.name", allow_null=True, default=None)
    status = _status_field(StepRun.STATUS_CHOICES)
    branch = serializers.CharField(help_text="The branch it left by; empty while unfinished.")
    attempts = serializers.IntegerField()
    output = serializers.JSONField(
        allow_null=True, help_text="What the step recorded (e.g. a webhook's reply)."
    )
    error = serializers.CharField()
    messageId = serializers.IntegerField(
        source="message_id", allow_null=True, help_text="The send ledger's row, for an email."
    )
    startedAt = serializers.DateTimeField(source="started_at")
    finishedAt = serializers.DateTimeField(source="finished_at", allow_null=True)


class ExecutionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    workflowId = serializers.IntegerField(source="workflow_id")
    contactId = serializers.UUIDField(source="contact_id")
    email = serializers.CharField(source="contact.email")
    status = _status_field(Execution.STATUS_CHOICES)
    currentStep = serializers.CharField(
        source="current_step.key",
        allow_null=True,
        default=None,
        help_text="The key of the step being run or waited at; null at the trigger.",
    )
    triggerEventId = serializers.UUIDField(
        source="trigger_id",
        allow_null=True,
        help_text="The tracked event that started it; null for a run started by API or admin.",
    )
    context = serializers.DictField(  # type: ignore[assignment]  # the JSON name
        help_text="The trigger's data (or the context given when started by API) and what "
        "later steps added."
    )
    waitingFor = serializers.CharField(
        source="waiting_for", help_text="The event a Wait for Event step waits for."
    )
    wakeAt = serializers.DateTimeField(
        source="wake_at", allow_null=True, help_text="When a waiting run's timer ends."
    )
    exitReason = serializers.CharField(source="exit_reason")
    error = serializers.CharField()
    startedAt = serializers.DateTimeField(source="started_at")
    updatedAt = serializers.DateTimeField(source="updated_at")
    finishedAt = serializers.DateTimeField(source="finished_at", allow_null=True)


class ExecutionDetailSerializer(ExecutionSerializer):
    steps = StepRunSerializer(many=True, source="step_runs.all", help_text="Oldest first.")


class _TextUUIDField(serializers.UUIDField):
    """A UUID written as text only (DRF's also takes a number as the UUID's integer value)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class ExecutionStartSerializer(serializers.Serializer):
    contactId = _TextUUIDField(required=False, help_text="The contact's id.")
    email = serializers.CharField(
        required=False, max_length=1000, help_text="Or the contact's email address."
    )
    context = serializers.DictField(  # type: ignore[assignment]  # the JSON name
        required=False,
        allow_null=True,
        help_text="The run's context: what templates see at the top level and under `event.`, "
        "and what conditions read as `event.<key>`. At most CONTACT_MAX_DATA_BYTES as JSON.",
    )

    def validate_email(self, value: str) -> str:
        email = normalize_email(value)
        if problem := email_error(email):
            raise serializers.ValidationError(problem)
        return email

    def validate_context(self, value):
        if value is None:
            return {}
        if problem := safejson.unstorable(value):
            raise serializers.ValidationError(f"Cannot be stored: {problem}.")
        limit = settings.CONTACT_MAX_DATA_BYTES
        if limit and (size := contact_data_size(value)) > limit:
            raise serializers.ValidationError(
                f"Larger than {limit} bytes as JSON ({size} bytes; CONTACT_MAX_DATA_BYTES)."
            )
        return value

    def validate(self, attrs):
        if ("contactId" in attrs) == ("email" in attrs):
            raise serializers.ValidationError(
                {"contactId": "Give the contact's id (contactId) or its email, one of the two."}
            )
        return attrs


_EXECUTION_OK = ok(ExecutionSerializer)


class ExecutionPagination(PagePagination):
    results_key = "executions"


_EXECUTION_LIST = inline_serializer(
    name="ExecutionPage",
    fields={
        "success": serializers.BooleanField(),
        "executions": ExecutionSerializer(many=True),
        "total": serializers.IntegerField(),
        "page": serializers.IntegerField(),
        "pageSize": serializers.IntegerField(),
        "totalPages": serializers.IntegerField(),
    },
)
_CANCELLED = inline_serializer(
    name="ExecutionsCancelledReply",
    fields={
        "success": serializers.BooleanField(),
        "data": inline_serializer(
            name="ExecutionsCancelled", fields={"cancelled": serializers.IntegerField()}
        ),
    },
)

# --- Examples and parameters ------------------------------------------------------------------

_EXAMPLE_EXECUTION = {
    "id": 812,
    "workflowId": 3,
    "contactId": "0b9f8a52-8c55-4a8e-9d7e-2a7a1d0c1f00",
    "email": "ann@example.com",
    "status": "WAITING",
    "currentStep": "pause",
    "triggerEventId": None,
    "context": {"orderId": "A-1"},
    "waitingFor": "",
    "wakeAt": "2026-01-03T12:00:00Z",
    "exitReason": "",
    "error": "",
    "startedAt": "2026-01-01T12:00:00Z",
    "updatedAt": "2026-01-01T12:00:01Z",
    "finishedAt": None,
}
_EXAMPLE_STEP = {
    "id": 4051,
    "stepKey": "receipt",
    "stepType": "send_email",
    "stepName": "Send the receipt",
    "status": "completed",
    "branch": "next",
    "attempts": 1,
    "output": {"to": "ann@example.com"},
    "error": "",
    "messageId": 977,
    "startedAt": "2026-01-01T12:00:00Z",
    "finishedAt": "2026-01-01T12:00:01Z",
}


def _id_parameter(name: str, what: str) -> OpenApiParameter:
    return OpenApiParameter(
        name,
        {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        OpenApiParameter.PATH,
        description=what,
    )


_WORKFLOW_ID = _id_parameter("workflow_id", "The workflow's id.")
_EXECUTION_ID = _id_parameter("execution_id", "The execution's id.")
_PAGING = [
    OpenApiParameter(
        "page",
        {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1},
        OpenApiParameter.QUERY,
        description="Page number, from 1; past the end is an empty list.",
    ),
    OpenApiParameter(
        "pageSize",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
        OpenApiParameter.QUERY,
        description="Executions per page.",
    ),
    OpenApiParameter(
        "status",
        {"type": "string", "enum": STATUSES},
        OpenApiParameter.QUERY,
        description="Only executions with this status (any letter case).",
    ),
]

# --- Views ------------------------------------------------------------------------------------


def _workflow(workflow_id: int) -> Workflow:
    workflow = Workflow.objects.filter(pk=workflow_id).first() if workflow_id <= MAX_ID else None
    if workflow is None:
        raise ApiError(404, "not_found", f"No workflow with id {workflow_id}.")
    return workflow


def _execution(workflow: Workflow, execution_id: int, *, history: bool = False) -> Execution:
    rows = Execution.objects.select_related("contact", "current_step")
    if history:
        runs = StepRun.objects.select_related("step").order_by("id")
        rows = rows.prefetch_related(Prefetch("step_runs", queryset=runs))
    execution = (
        rows.filter(pk=execution_id, workflow=workflow).first() if execution_id <= MAX_ID else None
    )
    if execution is None:
        raise ApiError(
            404, "not_found", f"Workflow {workflow.pk} has no execution with id {execution_id}."
        )
    return execution


def _reply(execution: Execution, *, status: int = 200, detail: bool = False) -> Response:
    serializer = ExecutionDetailSerializer if detail else ExecutionSerializer
    return Response({"success": True, "data": serializer(execution).data}, status=status)


def _by(request) -> str:
    return f"API key #{request.user.key.id}"


@extend_schema_view(
    get=extend_schema(
        tags=["executions"],
        operation_id="workflow_executions_list",
        summary="List a workflow's executions",
        description="Newest first, by page, optionally only one status.",
        parameters=[_WORKFLOW_ID, *_PAGING],
        responses={200: _EXECUTION_LIST, **error_responses(400, 404)},
        examples=[
            OpenApiExample(
                "A page",
                value={
                    "success": True,
                    "executions": [_EXAMPLE_EXECUTION],
                    "total": 1,
                    "page": 1,
                    "pageSize": 20,
                    "totalPages": 1,
                },
                response_only=True,
                status_codes=["200"],
            )
        ],
    ),
    post=extend_schema(
        tags=["executions"],
        operation_id="workflow_executions_start",
        summary="Start a run now",
        description="Starts the workflow for one contact now, with the given context (no "
        "trigger event). Works for manual and event-triggered workflows. The workflow must be "
        "enabled, and its re-entry rules apply: without re-entry a contact enters once, ever; "
        "never two active runs of one workflow for one contact.",
        parameters=[_WORKFLOW_ID],
        request=ExecutionStartSerializer,
        responses={
            201: _EXECUTION_OK,
            **error_responses(
                400,
                404,
                409,
                413,
                415,
                conflict="workflow_disabled: the workflow is disabled; reentry_refused: the "
                "contact has an active run, or already entered and re-entry is off.",
            ),
        },
        examples=[
            OpenApiExample(
                "By contact id",
                value={
                    "contactId": "0b9f8a52-8c55-4a8e-9d7e-2a7a1d0c1f00",
                    "context": {"orderId": "A-1"},
                },
                request_only=True,
            ),
            OpenApiExample("By email", value={"email": "ann@example.com"}, request_only=True),
            OpenApiExample(
                "Started",
                value={"success": True, "data": {**_EXAMPLE_EXECUTION, "status": "RUNNING"}},
                response_only=True,
                status_codes=["201"],
            ),
        ],
    ),
)
class WorkflowExecutionsView(APIView):
    def get(self, request, workflow_id: int):
        workflow = _workflow(workflow_id)
        executions = Execution.objects.filter(workflow=workflow)
        raw = request.query_params.get("status")
        if raw is not None and raw != "":
            status = raw.upper()
            if status not in STATUSES:
                raise ApiError(
                    400,
                    "validation_error",
                    "Invalid status.",
                    {"status": f"One of {', '.join(STATUSES)}."},
                )
            executions = executions.filter(status=status)
        executions = executions.select_related("contact", "current_step").order_by(
            "-started_at", "-id"
        )
        paginator = ExecutionPagination()
        page = paginator.paginate_queryset(executions, request, self)
        return paginator.get_paginated_response(ExecutionSerializer(page, many=True).data)

    def post(self, request, workflow_id: int):
        workflow = _workflow(workflow_id)
        body = ExecutionStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        field = "contactId" if "contactId" in values else "email"
        value = values[field]
        lookup = {"pk": value} if field == "contactId" else {"email": value}
        contact = Contact.objects.filter(**lookup).first()
        if contact is None:
            raise ApiError(
                404, "not_found", f"No contact with {field} {value}.", {field: "No such contact."}
            )
        try:
            execution = engine.execution_start_manual(
                workflow=workflow,
                contact=contact,
                context=values.get("context") or {},
                now=timezone.now(),
            )
        except engine.StartRefused as exc:
            raise ApiError(409, exc.code, str(exc)) from None
        execution.contact = contact
        return _reply(execution, status=201)


@extend_schema_view(
    get=extend_schema(
        tags=["executions"],
        operation_id="workflow_execution_get",
        summary="Get an execution with its step history",
        parameters=[_WORKFLOW_ID, _EXECUTION_ID],
        responses={200: ok(ExecutionDetailSerializer), **error_responses(404)},
        examples=[
            OpenApiExample(
                "An execution",
                value={"success": True, "data": {**_EXAMPLE_EXECUTION, "steps": [_EXAMPLE_STEP]}},
                response_only=True,
                status_codes=["200"],
            )
        ],
    ),
    delete=extend_schema(
        tags=["executions"],
        operation_id="workflow_execution_cancel",
        summary="Cancel an execution",
        description="Cancels a running or waiting execution: it does nothing more, even if a "
        "worker is in the middle of it. Replies with the cancelled execution.",
        parameters=[_WORKFLOW_ID, _EXECUTION_ID],
        request=None,
        responses={
            200: _EXECUTION_OK,
            **error_responses(404, 409, conflict="not_active: the execution has already ended."),
        },
        examples=[
            OpenApiExample(
                "Cancelled",
                value={
                    "success": True,
                    "data": {
                        **_EXAMPLE_EXECUTION,
                        "status": "CANCELLED",
                        "wakeAt": None,
                        "exitReason": "Cancelled by API key #1",
                        "finishedAt": "2026-01-01T12:05:00Z",
                    },
                },
                response_only=True,
                status_codes=["200"],
            )
        ],
    ),
)
class ExecutionDetailView(APIView):
    def get(self, request, workflow_id: int, execution_id: int):
        execution = _execution(_workflow(workflow_id), execution_id, history=True)
        return _reply(execution, detail=True)

    def delete(self, request, workflow_id: int, execution_id: int):
        execution = _execution(_workflow(workflow_id), execution_id)
        if not engine.execution_cancel(execution=execution, by=_by(request)):
            execution.refresh_from_db(fields=["status"])
            raise ApiError(
                409,
                "not_active",
                f"Execution #{execution.pk} has already ended ({execution.status}); only "
                "running or waiting executions can be cancelled.",
            )
        return _reply(_execution(execution.workflow, execution.pk))


@extend_schema_view(
    post=extend_schema(
        tags=["executions"],
        operation_id="workflow_executions_cancel_all",
        summary="Cancel all active executions",
        description="Cancels every running or waiting execution of the workflow; replies with how "
        "many. The workflow stays enabled: disable it first to stop new runs.",
        parameters=[_WORKFLOW_ID],
        request=None,
        responses={200: OpenApiResponse(_CANCELLED), **error_responses(404)},
        examples=[
            OpenApiExample(
                "Cancelled",
                value={"success": True, "data": {"cancelled": 3}},
                response_only=True,
                status_codes=["200"],
            )
        ],
    )
)
class ExecutionsCancelAllView(APIView):
    def post(self, request, workflow_id: int):
        workflow = _workflow(workflow_id)
        cancelled = engine.executions_cancel_all(workflow=workflow, by=_by(request))
        return Response({"success": True, "data": {"cancelled": cancelled}})
