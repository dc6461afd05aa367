"""The contacts API (secret keys; public keys get 403), in Plunk's shapes: list with cursor
paging, get, upsert, patch, the privacy erase, lookup of many addresses, and an overview of the
data fields contacts have. Writes go through contacts_app.services, like the admin's."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core import signing
from django.db.models import Q, QuerySet
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import status
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

from contacts_app.api_errors import ApiError
from contacts_app.api_schema import error_responses, ok
from contacts_app.emails import MAX_LENGTH, email_error
from contacts_app.models import Contact
from contacts_app.pagination import query_int
from contacts_app.safejson import unstorable
from contacts_app.serializers import (
    MAX_LOOKUP_EMAILS,
    ContactListSerializer,
    ContactLookupResultSerializer,
    ContactLookupSerializer,
    ContactPatchSerializer,
    ContactSerializer,
    ContactUpsertedSerializer,
    ContactUpsertSerializer,
    DataFieldsSerializer,
    FieldValuesSerializer,
)
from contacts_app.services import (
    FIELD_VALUES_TOP,
    FIELDS_SAMPLE,
    ContactDataTooLarge,
    ContactEmailTaken,
    contact_data_field_values,
    contact_data_fields,
    contact_patch,
    contact_privacy_erase,
    contact_upsert,
    normalize_email,
)

TAGS = ["contacts"]
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_CURSOR_LENGTH = 500
MAX_FIELD_LENGTH = 255
SORTS = {"createdAt": "created_at", "email": "email"}
DEFAULT_DIR = {"createdAt": "desc", "email": "asc"}

ANN = {
    "id": "0b9f8a52-8c55-4a8e-9d7e-2a7a1d0c1f00",
    "email": "ann@example.com",
    "subscribed": True,
    "data": {"firstName": "Ann", "plan": "pro"},
    "createdAt": "2026-01-01T12:00:00Z",
    "updatedAt": "2026-01-02T08:30:00Z",
}


def contact_json(contact: Contact) -> dict[str, Any]:
    serializer: Serializer = ContactSerializer(contact)  # its `data` field hides .data from mypy
    return serializer.data


def contact_lookup(lookup: str) -> dict[str, object]:
    """Filter arguments for a contact id or email from a URL; a value that is neither (NUL,
    over-long, not an address) is a 400 naming `lookup`, before any query."""
    if len(lookup) <= 45:  # the longest spelling of a UUID ("urn:uuid:" + 36)
        try:
            return {"pk": uuid.UUID(lookup)}
        except ValueError:
            pass
    email = normalize_email(lookup) if len(lookup) <= 1000 else lookup
    if problem := email_error(email):
        raise ApiError(
            400,
            "validation_error",
            "Not a contact id or email address.",
            {"lookup": f"A contact id (UUID) or an email address. {problem}"},
        )
    return {"email": email}


def contact_get(lookup: str) -> Contact:
    contact = Contact.objects.filter(**contact_lookup(lookup)).first()
    if contact is None:
        raise ApiError(404, "not_found", "No contact with this id or email.")
    return contact


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "validation_error", f"Invalid {field}.", {field: message})


def _data_too_large(exc: ContactDataTooLarge) -> ApiError:
    return ApiError(400, "validation_error", str(exc), {"data": str(exc)})


# --- Cursor paging ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the last contact's sort value and id (ids break ties, so keyset
    paging never skips or repeats a contact whose sort value equals another's). Signed, so a
    client can neither forge nor edit one; made for one sort and direction."""

    sort: str
    dir: str
    value: str
    id: str

    SALT = "contacts.api.cursor"

    def dumps(self) -> str:
        return signing.dumps([self.sort, self.dir, self.value, self.id], salt=self.SALT)

    @classmethod
    def loads(cls, raw: str, *, sort: str, dir: str) -> Cursor:  # noqa: A002
        bad = _invalid("cursor", "Not a cursor from this API: pass `cursor` of the last page.")
        if len(raw) > MAX_CURSOR_LENGTH or unstorable(raw):
            raise bad
        try:
            parts = signing.loads(raw, salt=cls.SALT)
        except (signing.BadSignature, ValueError):
            raise bad from None
        if not (
            isinstance(parts, list) and len(parts) == 4 and all(isinstance(p, str) for p in parts)
        ):
            raise bad
        cursor = cls(*parts)
        if (cursor.sort, cursor.dir) != (sort, dir):
            raise _invalid(
                "cursor",
                f"This cursor pages by {cursor.sort} {cursor.dir}; pass the same sort and dir.",
            )
        return cursor

    def position(self) -> tuple[Any, uuid.UUID]:
        value: Any = self.value
        if self.sort == "createdAt":
            value = datetime.fromisoformat(self.value)
        return value, uuid.UUID(self.id)


def _flag(request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() not in ("true", "false"):
        raise _invalid(name, "true or false.")
    return raw.lower() == "true"


def _choice(request, name: str, choices, default: str) -> str:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise _invalid(name, f"One of: {', '.join(choices)}.")
    return raw


def contacts_page(request) -> dict[str, Any]:
    """One page of GET /v1/contacts, with its total and the next page's cursor."""
    limit = query_int(request, "limit", DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    sort = _choice(request, "sort", list(SORTS), "createdAt")
    direction = _choice(request, "dir", ["asc", "desc"], DEFAULT_DIR[sort])
    subscribed = _flag(request, "subscribed")
    search = request.query_params.get("search", "").strip()
    if len(search) > MAX_LENGTH:
        raise _invalid("search", f"At most {MAX_LENGTH} characters.")
    raw_cursor = request.query_params.get("cursor")
    cursor = Cursor.loads(raw_cursor, sort=sort, dir=direction) if raw_cursor else None

    contacts: QuerySet[Contact] = Contact.objects.all()
    if search:
        contacts = contacts.filter(email__icontains=search)
    if subscribed is not None:
        contacts = contacts.filter(subscribed=subscribed)
    total = contacts.count()

    column = SORTS[sort]
    if cursor is not None:
        value, last_id = cursor.position()
        after = "gt" if direction == "asc" else "lt"
        contacts = contacts.filter(
            Q(**{f"{column}__{after}": value}) | Q(**{column: value, f"id__{after}": last_id})
        )
    order = [column, "id"] if direction == "asc" else [f"-{column}", "-id"]
    rows = list(contacts.order_by(*order)[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if has_more:
        last = rows[-1]
        value = last.created_at.isoformat() if sort == "createdAt" else last.email
        next_cursor = Cursor(sort, direction, value, str(last.pk)).dumps()
    return {
        "success": True,
        "data": ContactSerializer(rows, many=True).data,
        "total": total,
        "cursor": next_cursor,
        "hasMore": has_more,
    }


# --- Views -------------------------------------------------------------------------------------

# One reply component per shape: ok() makes a new one each call, and two of one name collide.
_CONTACT_OK = ok(ContactSerializer)
_UPSERTED_OK = ok(ContactUpsertedSerializer)

_LIST_PARAMETERS = [
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        description=f"Contacts per page, 1 to {MAX_LIMIT}.",
    ),
    OpenApiParameter(
        "cursor",
        {"type": "string", "maxLength": MAX_CURSOR_LENGTH},
        description="The `cursor` of the previous page (opaque; made for one sort and dir).",
    ),
    OpenApiParameter(
        "search",
        {"type": "string", "maxLength": MAX_LENGTH},
        description="Only contacts whose email contains this (in any case).",
    ),
    OpenApiParameter(
        "subscribed", str, enum=["true", "false"], description="Only (un)subscribed contacts."
    ),
    OpenApiParameter("sort", str, enum=list(SORTS), default="createdAt", description="Order by."),
    OpenApiParameter(
        "dir",
        str,
        enum=["asc", "desc"],
        description="Direction: desc by default for createdAt (newest first), asc for email.",
    ),
]


class ContactListView(APIView):
    """GET /v1/contacts (cursor paging) and POST /v1/contacts (upsert)."""

    @extend_schema(
        tags=TAGS,
        operation_id="contacts_list",
        summary="List contacts",
        description="Cursor paging: pass the reply's `cursor` to get the next page; `hasMore` "
        "says whether there is one. `total` counts every contact matching the filters.",
        parameters=_LIST_PARAMETERS,
        responses={200: ContactListSerializer, **error_responses(400)},
        examples=[
            OpenApiExample(
                "A page",
                value={
                    "success": True,
                    "data": [ANN],
                    "total": 42,
                    "cursor": "WyJjcmVhdGVkQXQiLCJkZXNjIiwi...:1tQ2xv:abc",
                    "hasMore": True,
                },
                response_only=True,
                status_codes=["200"],
            )
        ],
    )
    def get(self, request):
        return Response(contacts_page(request))

    @extend_schema(
        tags=TAGS,
        operation_id="contacts_upsert",
        summary="Create or update a contact",
        description="Creates the contact (201) or merges into it (200): `data` keys are set, a "
        'null value deletes its key, "" changes nothing, reserved keys are dropped; '
        "`subscribed` changes only when given, and a real change records "
        "`contact.subscribed` / `contact.unsubscribed` (which start and resume workflows).",
        request=ContactUpsertSerializer,
        responses={
            201: OpenApiResponse(_UPSERTED_OK.response, description="Created."),
            200: OpenApiResponse(_UPSERTED_OK.response, description="Updated."),
            **error_responses(400, 413, 415),
        },
        examples=[
            OpenApiExample(
                "Upsert",
                value={"email": "ann@example.com", "data": {"plan": "pro"}, "subscribed": True},
                request_only=True,
            ),
            OpenApiExample(
                "Created",
                value={
                    "success": True,
                    "data": {**ANN, "_meta": {"isNew": True, "isUpdate": False}},
                },
                response_only=True,
                status_codes=["201"],
            ),
        ],
    )
    def post(self, request):
        body = ContactUpsertSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        try:
            contact, created = contact_upsert(
                email=values["email"], subscribed=values.get("subscribed"), data=values.get("data")
            )
        except ContactDataTooLarge as exc:
            raise _data_too_large(exc) from None
        return Response(
            {
                "success": True,
                "data": {
                    **contact_json(contact),
                    "_meta": {"isNew": created, "isUpdate": not created},
                },
            },
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


_LOOKUP_PARAMETER = OpenApiParameter(
    "lookup",
    {"type": "string", "minLength": 1},
    OpenApiParameter.PATH,
    description="The contact's id (UUID) or email address.",
)


class ContactDetailView(APIView):
    """GET, PATCH and DELETE /v1/contacts/<id or email>."""

    @extend_schema(
        tags=TAGS,
        operation_id="contacts_get",
        summary="Get a contact",
        parameters=[_LOOKUP_PARAMETER],
        responses={200: _CONTACT_OK, **error_responses(400, 404)},
        examples=[
            OpenApiExample(
                "A contact",
                value={"success": True, "data": ANN},
                response_only=True,
                status_codes=["200"],
            )
        ],
    )
    def get(self, request, lookup: str):
        return Response({"success": True, "data": contact_json(contact_get(lookup))})

    @extend_schema(
        tags=TAGS,
        operation_id="contacts_update",
        summary="Update a contact",
        description="Changes what is given: `email` (409 `email_taken` when another contact has "
        "it), `data` (an object is merged as on create; null wipes the data), `subscribed` (a "
        "real change records its event).",
        parameters=[_LOOKUP_PARAMETER],
        request=ContactPatchSerializer,
        responses={
            200: _CONTACT_OK,
            **error_responses(400, 404, 409, 413, 415, conflict="Another contact has this email."),
        },
        examples=[
            OpenApiExample(
                "Unsubscribe and tag",
                value={"subscribed": False, "data": {"churned": True, "plan": None}},
                request_only=True,
            ),
            OpenApiExample(
                "Updated",
                value={"success": True, "data": ANN},
                response_only=True,
                status_codes=["200"],
            ),
        ],
    )
    def patch(self, request, lookup: str):
        contact = contact_get(lookup)
        body = ContactPatchSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        changes: dict[str, Any] = {"subscribed": values.get("subscribed")}
        if "email" in values:
            changes["email"] = values["email"]
        if "data" in values:
            changes["data"] = values["data"]
        try:
            contact = contact_patch(contact=contact, **changes)
        except Contact.DoesNotExist:  # erased meanwhile
            raise ApiError(404, "not_found", "No contact with this id or email.") from None
        except ContactEmailTaken as exc:
            raise ApiError(409, "email_taken", str(exc), {"email": str(exc)}) from None
        except ContactDataTooLarge as exc:
            raise _data_too_large(exc) from None
        return Response({"success": True, "data": contact_json(contact)})

    @extend_schema(
        tags=TAGS,
        operation_id="contacts_erase",
        summary="Erase a contact",
        description="The privacy erase: cancels the contact's active runs, then removes the "
        "contact with its events, messages and executions. No body.",
        parameters=[_LOOKUP_PARAMETER],
        responses={204: None, **error_responses(400, 404)},
    )
    def delete(self, request, lookup: str):
        contact = contact_get(lookup)
        contact_privacy_erase(contact=contact, by=f"API key #{request.user.key.id}")
        return Response(status=status.HTTP_204_NO_CONTENT)


class ContactLookupView(APIView):
    """POST /v1/contacts/lookup: many addresses at once."""

    @extend_schema(
        tags=TAGS,
        operation_id="contacts_lookup",
        summary="Look up contacts by email",
        description=f"1 to {MAX_LOOKUP_EMAILS} addresses; each is normalised (trimmed, "
        "lower-cased) and `notFound` lists the normal forms of those without a contact.",
        request=ContactLookupSerializer,
        responses={200: ok(ContactLookupResultSerializer), **error_responses(400, 413, 415)},
        examples=[
            OpenApiExample(
                "Two addresses",
                value={"emails": ["ann@example.com", "nobody@example.com"]},
                request_only=True,
            ),
            OpenApiExample(
                "One found",
                value={
                    "success": True,
                    "data": {"found": [ANN], "notFound": ["nobody@example.com"]},
                },
                response_only=True,
                status_codes=["200"],
            ),
        ],
    )
    def post(self, request):
        body = ContactLookupSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        emails = list(dict.fromkeys(body.validated_data["emails"]))
        found = {c.email: c for c in Contact.objects.filter(email__in=emails)}
        return Response(
            {
                "success": True,
                "data": {
                    "found": ContactSerializer(
                        [found[e] for e in emails if e in found], many=True
                    ).data,
                    "notFound": [e for e in emails if e not in found],
                },
            }
        )


class ContactFieldsView(APIView):
    """GET /v1/contacts/fields: which data keys contacts have."""

    @extend_schema(
        tags=TAGS,
        operation_id="contacts_fields",
        summary="Contact data fields",
        description=f"The top-level keys of contact data, read from the {FIELDS_SAMPLE} most "
        "recently created contacts (so the cost stays bounded): each with its JSON type "
        "(`mixed` when its values differ in type) and `coverage`, the share of those contacts "
        "that have it. Most common first.",
        responses={200: ok(DataFieldsSerializer), **error_responses()},
        examples=[
            OpenApiExample(
                "Fields",
                value={
                    "success": True,
                    "data": {
                        "fields": [
                            {"field": "firstName", "type": "string", "coverage": 0.95},
                            {"field": "plan", "type": "mixed", "coverage": 0.4},
                        ],
                        "count": 2,
                        "sampled": 1000,
                    },
                },
                response_only=True,
                status_codes=["200"],
            )
        ],
    )
    def get(self, request):
        fields, sampled = contact_data_fields()
        return Response(
            {
                "success": True,
                "data": {
                    "fields": [
                        {
                            "field": f.field,
                            "type": f.type,
                            "coverage": round(f.contacts / sampled, 4),
                        }
                        for f in fields
                    ],
                    "count": len(fields),
                    "sampled": sampled,
                },
            }
        )


class ContactFieldValuesView(APIView):
    """GET /v1/contacts/fields/<field>/values: a data key's most common values."""

    @extend_schema(
        tags=TAGS,
        operation_id="contacts_field_values",
        summary="Values of a contact data field",
        description=f"The {FIELD_VALUES_TOP} most common values of a data key among the "
        f"{FIELDS_SAMPLE} most recently created contacts, with how many of them have each. A "
        "key no sampled contact has gives an empty list.",
        parameters=[
            OpenApiParameter(
                "field",
                {"type": "string", "minLength": 1, "maxLength": MAX_FIELD_LENGTH},
                OpenApiParameter.PATH,
                description=f"A top-level data key (at most {MAX_FIELD_LENGTH} characters).",
            )
        ],
        responses={200: ok(FieldValuesSerializer), **error_responses(400)},
        examples=[
            OpenApiExample(
                "Values",
                value={
                    "success": True,
                    "data": {
                        "field": "plan",
                        "values": [{"value": "pro", "count": 310}, {"value": "free", "count": 90}],
                        "count": 2,
                        "sampled": 1000,
                    },
                },
                response_only=True,
                status_codes=["200"],
            )
        ],
    )
    def get(self, request, field: str):
        if not field or len(field) > MAX_FIELD_LENGTH or unstorable(field):
            raise _invalid(
                "field",
                f"A data key of 1 to {MAX_FIELD_LENGTH} characters, without NUL characters.",
            )
        found = contact_data_field_values(field=field)
        return Response(
            {
                "success": True,
                "data": {
                    "field": field,
                    "values": [{"value": value, "count": n} for value, n in found.values],
                    "count": found.distinct,
                    "sampled": found.sampled,
                },
            }
        )
