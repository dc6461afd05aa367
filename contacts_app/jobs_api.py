"""The contacts API's background jobs: CSV import, bulk subscribe / unsubscribe / delete, and
their status (Plunk's shapes). Thin: parse the input, call contacts_app.jobs."""

from __future__ import annotations

import uuid

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts_app import jobs
from contacts_app.api_errors import ApiError
from contacts_app.api_schema import error_responses, ok
from contacts_app.auth import ApiClient
from contacts_app.models import ContactJob

TAGS = ["Contacts"]
# The multipart envelope around the file (boundaries, part headers) on top of the file itself.
ENVELOPE_BYTES = 64 * 1024


def _by(request) -> str:
    user = request.user
    return f"API key #{user.key.id}" if isinstance(user, ApiClient) else ""


# --- Serializers (input, and the documented replies) -------------------------------------------


class ImportUploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text=(
            "A CSV file (at most 5 MB, UTF-8 with or without a byte-order mark). The first row "
            "names the columns: `email` (required), `subscribed` (optional: true/false, 1/0, "
            "yes/no); every other column becomes a contact data key (empty cells are ignored)."
        )
    )


class BulkFilterSerializer(serializers.Serializer):
    search = serializers.CharField(
        required=False, allow_blank=True, max_length=254, help_text="Email contains this."
    )
    subscribed = serializers.BooleanField(required=False)


class BulkRequestSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(
        choices=["ids", "query"],
        help_text='"ids": the contacts in `contactIds`; "query": every contact matching '
        "`filter`, minus `excludeIds`.",
    )
    contactIds = serializers.ListField(  # noqa: N815 - Plunk's field name
        child=serializers.UUIDField(),
        required=False,
        min_length=1,
        max_length=jobs.BULK_MAX_IDS,
        help_text='Required with mode "ids" (1 to 10,000 ids).',
    )
    filter = BulkFilterSerializer(required=False)
    excludeIds = serializers.ListField(  # noqa: N815 - Plunk's field name
        child=serializers.UUIDField(), required=False, max_length=jobs.BULK_MAX_IDS
    )

    def validate(self, attrs):
        if attrs["mode"] == "ids" and not attrs.get("contactIds"):
            raise serializers.ValidationError({"contactIds": 'Required when mode is "ids".'})
        return attrs


class JobQueuedSerializer(serializers.Serializer):
    message = serializers.CharField()
    jobId = serializers.UUIDField()  # noqa: N815


class JobStatusSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=[k for k, _ in ContactJob.KIND_CHOICES])
    state = serializers.ChoiceField(choices=[s for s, _ in ContactJob.STATE_CHOICES])
    progress = serializers.IntegerField(min_value=0, max_value=100, help_text="Percent done.")
    processed = serializers.IntegerField(min_value=0, help_text="Rows or contacts handled.")
    total = serializers.IntegerField(min_value=0)
    result = serializers.DictField(
        help_text=(
            "Import: {created, updated, skipped, failed, errors: [{line, email?, message}]}; "
            "bulk: {operation, totalRequested, successCount, unchangedCount, failureCount, "
            "errors: [{contactId, error}]}. `errors` lists the first 100."
        )
    )
    failedReason = serializers.CharField(allow_null=True)  # noqa: N815
    createdAt = serializers.DateTimeField()  # noqa: N815
    finishedAt = serializers.DateTimeField(allow_null=True)  # noqa: N815


QUEUED_REPLY = ok(JobQueuedSerializer, description="The job is queued.")
STATUS_REPLY = ok(JobStatusSerializer)
JOB_ID = OpenApiParameter(
    "job_id", str, OpenApiParameter.PATH, description="The jobId a POST answered."
)
QUEUED_EXAMPLE = OpenApiExample(
    "Queued",
    value={
        "success": True,
        "data": {
            "message": "Import queued: 2 rows.",
            "jobId": "3f0c1c9e-4a55-4a7e-9a6c-0d1e2f3a4b5c",
        },
    },
    response_only=True,
    status_codes=["202"],
)


def _queued(message: str, job: ContactJob) -> Response:
    return Response(
        {"success": True, "data": {"message": message, "jobId": str(job.pk)}}, status=202
    )


# --- Import ----------------------------------------------------------------------------------


def _file_error(message: str, status: int = 400) -> ApiError:
    code = "payload_too_large" if status == 413 else "validation_error"
    return ApiError(status, code, message, {"file": message})


def _uploaded_csv(request) -> tuple[bytes, str]:
    """The `file` part's bytes and name; ApiError (400 naming `file`, 413) otherwise."""
    if not (request.content_type or "").lower().startswith("multipart/form-data"):
        raise _file_error("Send the CSV as multipart/form-data, in a part named `file`.")
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > jobs.IMPORT_MAX_BYTES + ENVELOPE_BYTES:
        raise _file_error("The file is larger than 5 MB (5242880 bytes); split it.", 413)
    try:
        upload = request.FILES.get("file")
        sent_as_text = upload is None and "file" in request.data
    except RequestDataTooBig:
        raise _file_error("The form's fields are too large.", 413) from None
    except (exceptions.ParseError, SuspiciousOperation, ValueError) as exc:
        raise _file_error(f"The multipart body can not be read: {exc}") from None
    if upload is None:
        if sent_as_text:
            raise _file_error("`file` must be a file part (with a filename), not a text field.")
        raise _file_error("No `file` part: attach the CSV as `file`.")
    if upload.size is not None and upload.size > jobs.IMPORT_MAX_BYTES:
        raise _file_error("The file is larger than 5 MB (5242880 bytes); split it.", 413)
    return upload.read(jobs.IMPORT_MAX_BYTES + 1), upload.name or ""


class ContactImportView(APIView):
    """POST /v1/contacts/import: queue a CSV import."""

    parser_classes = [MultiPartParser]

    @extend_schema(
        tags=TAGS,
        summary="Import contacts from a CSV file (a background job)",
        description=(
            "Checks the file (size, encoding, header) at once and queues the import: rows are "
            "upserted with the contact data rules (empty cells change nothing). A bad row is "
            "reported by line in the job's result; the other rows are still imported. Poll "
            "`GET /v1/contacts/import/{jobId}`."
        ),
        request={"multipart/form-data": ImportUploadSerializer},
        responses={202: QUEUED_REPLY, **error_responses(400, 413)},
        examples=[
            OpenApiExample(
                "CSV",
                value={"file": "email,subscribed,firstName\nann@example.com,true,Ann\n"},
                request_only=True,
            ),
            QUEUED_EXAMPLE,
        ],
    )
    def post(self, request):
        content, filename = _uploaded_csv(request)
        try:
            job = jobs.contact_import_start(content=content, filename=filename, by=_by(request))
        except jobs.ImportRefused as exc:
            raise _file_error(str(exc), exc.status) from None
        return _queued(f"Import queued: {job.total} rows.", job)


# --- Bulk ------------------------------------------------------------------------------------


class ContactBulkView(APIView):
    """POST /v1/contacts/bulk-subscribe | bulk-unsubscribe | bulk-delete."""

    action = ""  # subscribe, unsubscribe or delete (set in the URL conf)

    def post(self, request):
        serializer = BulkRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        body = serializer.validated_data
        selection = body.get("filter") or {}
        job = jobs.contact_bulk_start(
            action=self.action,
            mode=body["mode"],
            contact_ids=body.get("contactIds"),
            search=selection.get("search"),
            subscribed=selection.get("subscribed"),
            exclude_ids=body.get("excludeIds"),
            by=_by(request),
        )
        return _queued(f"Bulk {self.action} queued: {job.total} contacts.", job)


def _bulk_schema(action: str, what: str):
    return extend_schema(
        tags=TAGS,
        summary=f"{what} many contacts (a background job)",
        description=(
            'Selects contacts by id (`mode: "ids"`, up to 10,000) or by a filter (`mode: '
            '"query"`: email contains `filter.search`, `filter.subscribed`, minus `excludeIds`, '
            "as they stand when the job runs). Poll `GET /v1/contacts/jobs/{jobId}`."
            + (
                " Each real change records contact.subscribed / contact.unsubscribed."
                if action != "delete"
                else " Each contact is erased as by DELETE /v1/contacts/{id}: its runs are "
                "cancelled, its events and messages removed."
            )
        ),
        request=BulkRequestSerializer,
        responses={202: QUEUED_REPLY, **error_responses(400, 413)},
        examples=[
            OpenApiExample(
                "By id",
                value={"mode": "ids", "contactIds": ["3f0c1c9e-4a55-4a7e-9a6c-0d1e2f3a4b5c"]},
                request_only=True,
            ),
            OpenApiExample(
                "By filter",
                value={
                    "mode": "query",
                    "filter": {"search": "@example.com", "subscribed": True},
                    "excludeIds": [],
                },
                request_only=True,
            ),
            QUEUED_EXAMPLE,
        ],
    )


class ContactBulkSubscribeView(ContactBulkView):
    action = "subscribe"

    @_bulk_schema("subscribe", "Subscribe")
    def post(self, request):
        return super().post(request)


class ContactBulkUnsubscribeView(ContactBulkView):
    action = "unsubscribe"

    @_bulk_schema("unsubscribe", "Unsubscribe")
    def post(self, request):
        return super().post(request)


class ContactBulkDeleteView(ContactBulkView):
    action = "delete"

    @_bulk_schema("delete", "Erase")
    def post(self, request):
        return super().post(request)


# --- Status ----------------------------------------------------------------------------------


class ContactJobStatusView(APIView):
    """GET a job's state, progress and result."""

    kinds: tuple[str, ...] = ()  # which kinds this URL answers for (empty: all)

    def get(self, request, job_id: str):
        job = None
        if len(job_id) <= 45:
            try:
                pk = uuid.UUID(job_id)
            except ValueError:
                pk = None
            if pk is not None:
                jobs_ = ContactJob.objects.defer("csv_text").filter(pk=pk)
                if self.kinds:
                    jobs_ = jobs_.filter(kind__in=self.kinds)
                job = jobs_.first()
        if job is None:
            raise ApiError(404, "not_found", "No such job.")
        return Response({"success": True, "data": jobs.contact_job_status(job)})


def _status_schema(summary: str):
    return extend_schema(
        tags=TAGS,
        summary=summary,
        parameters=[JOB_ID],
        responses={200: STATUS_REPLY, **error_responses(404)},
        examples=[
            OpenApiExample(
                "Completed import",
                value={
                    "success": True,
                    "data": {
                        "id": "3f0c1c9e-4a55-4a7e-9a6c-0d1e2f3a4b5c",
                        "kind": "import",
                        "state": "completed",
                        "progress": 100,
                        "processed": 3,
                        "total": 3,
                        "result": {
                            "created": 1,
                            "updated": 1,
                            "skipped": 0,
                            "failed": 1,
                            "errors": [{"line": 4, "message": "Enter a valid email address."}],
                        },
                        "failedReason": None,
                        "createdAt": "2026-01-01T12:00:00+00:00",
                        "finishedAt": "2026-01-01T12:00:01+00:00",
                    },
                },
                response_only=True,
                status_codes=["200"],
            )
        ],
    )


class ContactImportStatusView(ContactJobStatusView):
    kinds = (ContactJob.IMPORT,)

    @_status_schema("A CSV import's state, progress and result")
    def get(self, request, job_id: str):
        return super().get(request, job_id)


class ContactBulkStatusView(ContactJobStatusView):
    @_status_schema("A contact job's state, progress and result (bulk actions and imports)")
    def get(self, request, job_id: str):
        return super().get(request, job_id)
