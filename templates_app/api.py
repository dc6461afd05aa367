"""Secret-key API for email templates (Plunk's /templates): list, create, get, change, delete
(409 while a workflow step uses it), duplicate, usage and a render preview. Writes go through
templates_app.services, as the admin's do."""

from __future__ import annotations

from django.db.models import Q
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts_app.api_errors import ApiError
from contacts_app.api_schema import error_responses, ok
from contacts_app.models import Contact
from contacts_app.pagination import PagePagination, PageQuery
from contacts_app.services import normalize_email
from templates_app.models import Template
from templates_app.rendering import TemplateError
from templates_app.serializers import (
    SORTS,
    RenderedSerializer,
    TemplateListQuery,
    TemplatePreviewSerializer,
    TemplateSerializer,
    TemplateUsageSerializer,
    TemplateWriteSerializer,
)
from templates_app.services import (
    PREVIEW_SAMPLE_DATA,
    TemplateInUse,
    TemplateNameTaken,
    template_create,
    template_delete,
    template_duplicate,
    template_preview,
    template_update,
    template_usage,
)

TAGS = ["templates"]
MAX_ID = 2**63 - 1
# The model's field names, as the API names them in its errors.
API_FIELD = {"html": "body", "from_email": "from", "reply_to": "replyTo"}

_EXAMPLE = {
    "id": 7,
    "name": "Welcome",
    "description": "The first email after signup.",
    "subject": "Welcome, {{ firstName ?? there }}",
    "body": "<p>Hi {{ firstName }}!</p>",
    "mjml": None,
    "text": None,
    "type": "marketing",
    "from": "hello@example.com",
    "fromName": "Example",
    "replyTo": None,
    "createdAt": "2026-01-01T12:00:00+00:00",
    "updatedAt": "2026-01-01T12:00:00+00:00",
}
_WRITE_EXAMPLE = OpenApiExample(
    "Create",
    value={
        "name": "Welcome",
        "description": "The first email after signup.",
        "subject": "Welcome, {{ firstName ?? there }}",
        "body": "<p>Hi {{ firstName }}!</p>",
        "type": "MARKETING",
        "from": "hello@example.com",
        "fromName": "Example",
    },
    request_only=True,
)
_REPLY_EXAMPLE = OpenApiExample(
    "Template", value={"success": True, "data": _EXAMPLE}, response_only=True
)
_IN_USE = "template_in_use: a workflow step uses the template (the message names the workflows)."
_NAME_TAKEN = "name_taken: another template has this name."


class TemplateListParams(PageQuery, TemplateListQuery):
    pass


TEMPLATE_PAGE = inline_serializer(
    name="TemplatePage",
    fields={
        "success": serializers.BooleanField(),
        "data": TemplateSerializer(many=True),
        "total": serializers.IntegerField(),
        "page": serializers.IntegerField(),
        "pageSize": serializers.IntegerField(),
        "totalPages": serializers.IntegerField(),
    },
)


TEMPLATE_REPLY = ok(TemplateSerializer)


def template_or_404(pk: int) -> Template:
    template = Template.objects.filter(pk=pk).first() if pk <= MAX_ID else None
    if template is None:
        raise ApiError(404, "not_found", f"No template with id {pk}.")
    return template


def _reply(template: Template, code: int = status.HTTP_200_OK) -> Response:
    return Response({"success": True, "data": TemplateSerializer(template).data}, status=code)


def _liquid_error(exc: TemplateError) -> ApiError:
    return ApiError(
        400,
        "validation_error",
        "The template does not parse or compile.",
        {API_FIELD.get(field, field): problem for field, problem in exc.errors.items()},
    )


def _write(serializer: TemplateWriteSerializer, current: Template | None = None) -> Template:
    serializer.is_valid(raise_exception=True)
    changes = serializer.to_service(current)
    try:
        if current is None:
            return template_create(**changes)
        return template_update(template=current, **changes)
    except TemplateError as exc:
        raise _liquid_error(exc) from None
    except TemplateNameTaken as exc:
        raise ApiError(409, "name_taken", str(exc), {"name": "This name is taken."}) from None


class TemplateListView(APIView):
    """GET /v1/templates and POST /v1/templates."""

    @extend_schema(
        tags=TAGS,
        summary="List templates",
        operation_id="templates_list",
        description="Pages of templates; `search` matches part of the name or subject.",
        parameters=[TemplateListParams],
        responses={200: TEMPLATE_PAGE, **error_responses(400)},
        examples=[
            OpenApiExample(
                "A page",
                value={
                    "success": True,
                    "data": [_EXAMPLE],
                    "total": 1,
                    "page": 1,
                    "pageSize": 20,
                    "totalPages": 1,
                },
                response_only=True,
            )
        ],
    )
    def get(self, request):
        query = TemplateListParams(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = query.validated_data
        templates = Template.objects.all()
        if search := filters.get("search", "").strip():
            templates = templates.filter(Q(name__icontains=search) | Q(subject__icontains=search))
        if "type" in filters:
            templates = templates.filter(type=filters["type"])
        order = ("-" if filters["dir"] == "desc" else "") + SORTS[filters["sort"]]
        templates = templates.order_by(order, "-pk" if order.startswith("-") else "pk")
        paginator = PagePagination()
        page = paginator.paginate_queryset(templates, request, view=self)
        return paginator.get_paginated_response(TemplateSerializer(page, many=True).data)

    @extend_schema(
        tags=TAGS,
        summary="Create a template",
        description="Liquid is checked first: a syntax error is a 400 naming the field "
        "(`subject`, `body`, `mjml`, `text`) and the line; so is MJML that does not compile. "
        "Give the HTML `body` or the `mjml` source.",
        request=TemplateWriteSerializer,
        responses={
            201: TEMPLATE_REPLY,
            **error_responses(400, 409, 413, 415, conflict=_NAME_TAKEN),
        },
        examples=[_WRITE_EXAMPLE, _REPLY_EXAMPLE],
    )
    def post(self, request):
        return _reply(_write(TemplateWriteSerializer(data=request.data)), status.HTTP_201_CREATED)


class TemplateDetailView(APIView):
    """GET, PATCH and DELETE /v1/templates/<id>."""

    @extend_schema(
        tags=TAGS,
        summary="Get a template",
        responses={200: TEMPLATE_REPLY, **error_responses(404)},
        examples=[_REPLY_EXAMPLE],
    )
    def get(self, request, pk: int):
        return _reply(template_or_404(pk))

    @extend_schema(
        tags=TAGS,
        summary="Change a template",
        description="Only the fields sent change. Steps use a template by reference, so a "
        "rename is safe.",
        request=TemplateWriteSerializer(partial=True),
        responses={
            200: TEMPLATE_REPLY,
            **error_responses(400, 404, 409, 413, 415, conflict=_NAME_TAKEN),
        },
        examples=[
            OpenApiExample("Rename", value={"name": "Welcome (v2)"}, request_only=True),
            _REPLY_EXAMPLE,
        ],
    )
    def patch(self, request, pk: int):
        template = template_or_404(pk)
        return _reply(_write(TemplateWriteSerializer(data=request.data, partial=True), template))

    @extend_schema(
        tags=TAGS,
        summary="Delete a template",
        description="Refused (409) while a workflow's Send Email step uses it.",
        responses={204: None, **error_responses(404, 409, conflict=_IN_USE)},
    )
    def delete(self, request, pk: int):
        template = template_or_404(pk)
        try:
            template_delete(template=template)
        except Template.DoesNotExist:
            raise ApiError(404, "not_found", f"No template with id {pk}.") from None
        except TemplateInUse as exc:
            raise ApiError(409, "template_in_use", str(exc)) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class TemplateDuplicateView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Duplicate a template",
        description='A copy named "<name> (Copy)" ("(Copy 2)" and on when taken).',
        request=None,
        responses={201: TEMPLATE_REPLY, **error_responses(404, 409, conflict=_NAME_TAKEN)},
        examples=[
            OpenApiExample(
                "Copy",
                value={"success": True, "data": {**_EXAMPLE, "id": 8, "name": "Welcome (Copy)"}},
                response_only=True,
                status_codes=["201"],
            )
        ],
    )
    def post(self, request, pk: int):
        template = template_or_404(pk)
        try:
            copy = template_duplicate(template=template)
        except TemplateNameTaken as exc:
            raise ApiError(409, "name_taken", str(exc)) from None
        return _reply(copy, status.HTTP_201_CREATED)


class TemplateUsageView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Where a template is used",
        description="The workflows whose steps send it, and how many emails it sent.",
        responses={200: ok(TemplateUsageSerializer), **error_responses(404)},
        examples=[
            OpenApiExample(
                "Used once",
                value={
                    "success": True,
                    "data": {
                        "workflowSteps": 1,
                        "emailsSent": 42,
                        "workflows": [
                            {
                                "id": 3,
                                "name": "Onboarding",
                                "enabled": True,
                                "steps": [{"id": 11, "key": "welcome", "name": "Send welcome"}],
                            }
                        ],
                    },
                },
                response_only=True,
            )
        ],
    )
    def get(self, request, pk: int):
        usage = template_usage(template=template_or_404(pk))
        return Response({"success": True, "data": usage})


class TemplatePreviewView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Render a template",
        description="Renders the saved template with sample `data` (contact data), or for the "
        "contact with `email` (then `data` is the event context). Bounded like every render: "
        "a template that runs too long or writes too much is a 400 saying which limit.",
        request=TemplatePreviewSerializer,
        responses={200: ok(RenderedSerializer), **error_responses(400, 404, 413, 415)},
        examples=[
            OpenApiExample("Sample data", value={"data": {"firstName": "Ada"}}, request_only=True),
            OpenApiExample(
                "Rendered",
                value={
                    "success": True,
                    "data": {
                        "subject": "Welcome, Ada",
                        "html": "<p>Hi Ada!</p>",
                        "text": "Hi Ada!",
                    },
                },
                response_only=True,
            ),
        ],
    )
    def post(self, request, pk: int):
        template = template_or_404(pk)
        body = TemplatePreviewSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data.get("data")
        contact = None
        if email := body.validated_data.get("email"):
            contact = Contact.objects.filter(email=normalize_email(email)).first()
            if contact is None:
                raise ApiError(
                    404, "not_found", f"No contact with email {email}.", {"email": "Unknown."}
                )
        try:
            rendered = template_preview(
                subject=template.subject,
                html_body=template.html,
                text_body=template.text,
                mjml_body=template.mjml,
                contact=contact,
                sample=None if contact else (data or PREVIEW_SAMPLE_DATA),
                event=data if contact else None,
            )
        except TemplateError as exc:
            raise ApiError(
                400, "render_error", f"The template does not render: {exc}", exc.errors
            ) from None
        return Response(
            {
                "success": True,
                "data": {"subject": rendered.subject, "html": rendered.html, "text": rendered.text},
            }
        )
