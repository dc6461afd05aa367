"""Secret-key API for tracked events (Plunk's /events): list (by name, by contact, by time),
one contact's events, the names in use and counts per name over a period.

Every query is bounded and indexed: a name filter walks `event_name_time`, a contact filter
`event_contact_time`; paging counts at most MAX_COUNTED rows and stops there; the name lists
hold at most MAX_NAMES names."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.db.models import Count, Max
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts_app.api_errors import ApiError
from contacts_app.api_schema import error_responses
from contacts_app.models import Contact, Event
from contacts_app.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    PagePagination,
    PageQuery,
    StrictQuery,
    query_int,
)
from contacts_app.safejson import unstorable
from contacts_app.services import normalize_email

TAGS = ["events"]
MAX_COUNTED = 10_000  # events a list counts (and pages reach) before it asks for a filter
MAX_NAMES = 1000  # names a names/stats reply holds
DEFAULT_PERIOD = timedelta(days=30)
MAX_PERIOD = timedelta(days=366)


class EventSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    contactId = serializers.UUIDField()
    email = serializers.EmailField()
    data = serializers.JSONField()  # type: ignore[assignment]  # a field named data
    createdAt = serializers.DateTimeField()


def event_json(event: Event) -> dict:
    return {
        "id": str(event.pk),
        "name": event.name,
        "contactId": str(event.contact_id),
        "email": event.contact.email,
        "data": event.data,
        "createdAt": event.created_at.isoformat(),
    }


def _storable(value: str) -> None:
    if problem := unstorable(value):
        raise serializers.ValidationError(f"Not usable: {problem}.")


class EventPageQuery(PageQuery):
    aliases = {"limit": "pageSize"}

    page = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_COUNTED,
        default=1,
        help_text=f"Pages reach the newest {MAX_COUNTED} matching events.",
    )
    pageSize = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE
    )
    limit = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_PAGE_SIZE, help_text="Plunk's pageSize."
    )


class PeriodQuery(StrictQuery):
    aliases = {"startDate": "from", "endDate": "to"}

    to = serializers.DateTimeField(
        required=False, help_text="ISO 8601; without an offset, UTC. Inclusive."
    )
    startDate = serializers.DateTimeField(required=False, help_text="Plunk's `from`.")
    endDate = serializers.DateTimeField(required=False, help_text="Plunk's `to`.")

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField(
            required=False, help_text="ISO 8601; without an offset, UTC. Inclusive."
        )
        return fields


class EventListQuery(EventPageQuery, PeriodQuery):
    aliases = {**EventPageQuery.aliases, **PeriodQuery.aliases, "eventName": "name"}

    name = serializers.CharField(
        max_length=255,
        required=False,
        allow_blank=True,
        validators=[_storable],
        help_text="Exactly this name (empty: any).",
    )
    eventName = serializers.CharField(
        max_length=255,
        required=False,
        allow_blank=True,
        validators=[_storable],
        help_text="Plunk's `name`.",
    )
    contactId = serializers.UUIDField(required=False, help_text="Only this contact's events.")
    email = serializers.EmailField(
        max_length=254,
        required=False,
        allow_blank=True,
        help_text="Only the events of the contact with it (empty: any).",
    )


class StatsQuery(PeriodQuery):
    pass


class EventPagination(PagePagination):
    """Page paging whose count stops at MAX_COUNTED: counting every event of a large table on
    each page would cost a scan of it. `total` is then MAX_COUNTED, and pages stop there too
    (an empty page past it, as past the end)."""

    def paginate_queryset(self, queryset, request, view=None):
        return self.page_of(
            queryset,
            page=query_int(request, "page", 1, low=1, high=MAX_COUNTED),
            page_size=query_int(request, "pageSize", DEFAULT_PAGE_SIZE, low=1, high=MAX_PAGE_SIZE),
        )

    def page_of(self, queryset, *, page: int, page_size: int) -> list:
        """The page of already validated numbers (EventPageQuery's)."""
        self.page, self.page_size = page, page_size
        start = (self.page - 1) * self.page_size
        self.total = queryset[:MAX_COUNTED].count()
        if start >= self.total:  # past the end, or past what is counted: an empty page
            return []
        return list(queryset[start : min(start + self.page_size, MAX_COUNTED)])


def _page_reply(name: str) -> serializers.Serializer:
    return inline_serializer(
        name=name,
        fields={
            "success": serializers.BooleanField(),
            "data": EventSerializer(many=True),
            "total": serializers.IntegerField(help_text=f"Stops at {MAX_COUNTED}."),
            "page": serializers.IntegerField(),
            "pageSize": serializers.IntegerField(),
            "totalPages": serializers.IntegerField(),
        },
    )


EVENT_PAGE = _page_reply("EventPage")
NAMES = inline_serializer(
    name="EventNames",
    fields={
        "success": serializers.BooleanField(),
        "data": inline_serializer(
            name="EventName",
            fields={"name": serializers.CharField(), "lastSeenAt": serializers.DateTimeField()},
            many=True,
        ),
    },
)
STATS = inline_serializer(
    name="EventStats",
    fields={
        "success": serializers.BooleanField(),
        "data": inline_serializer(
            name="EventStatsCount",
            fields={"name": serializers.CharField(), "count": serializers.IntegerField()},
            many=True,
        ),
        "from": serializers.DateTimeField(),
        "to": serializers.DateTimeField(),
    },
)
_EVENT_EXAMPLE = {
    "id": "6f1d2b7e-3c1a-4b9e-8f5d-0a2b3c4d5e6f",
    "name": "user.signup",
    "contactId": "0b9f8a52-8c55-4a8e-9d7e-2a7a1d0c1f00",
    "email": "ann@example.com",
    "data": {"plan": "pro"},
    "createdAt": "2026-01-01T12:00:00+00:00",
}
_PAGE_EXAMPLE = OpenApiExample(
    "A page",
    value={
        "success": True,
        "data": [_EVENT_EXAMPLE],
        "total": 1,
        "page": 1,
        "pageSize": 20,
        "totalPages": 1,
    },
    response_only=True,
)


def _events_page(paging: dict, events):
    events = events.select_related("contact").only(
        "id", "name", "data", "created_at", "contact_id", "contact__email"
    )
    paginator = EventPagination()
    page = paginator.page_of(
        events.order_by("-created_at", "-id"), page=paging["page"], page_size=paging["pageSize"]
    )
    return paginator.get_paginated_response([event_json(e) for e in page])


class EventListView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="List events",
        operation_id="events_list",
        description="Newest first. Filter by `name`, by contact (`contactId` or `email`) and "
        f"by time (`from`, `to`). `total` counts at most {MAX_COUNTED} events.",
        parameters=[EventListQuery],
        responses={200: EVENT_PAGE, **error_responses(400)},
        examples=[_PAGE_EXAMPLE],
    )
    def get(self, request):
        query = EventListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = query.validated_data
        events = Event.objects.all()
        if filters.get("name"):
            events = events.filter(name=filters["name"])
        if filters.get("contactId"):
            events = events.filter(contact_id=filters["contactId"])
        if filters.get("email"):
            events = events.filter(contact__email=normalize_email(filters["email"]))
        if filters.get("from"):
            events = events.filter(created_at__gte=filters["from"])
        if filters.get("to"):
            events = events.filter(created_at__lte=filters["to"])
        return _events_page(filters, events)


class ContactEventsView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="A contact's events",
        operation_id="events_contact_list",
        description="Newest first (Plunk's GET /events/contact/:contactId).",
        parameters=[EventPageQuery],
        responses={200: EVENT_PAGE, **error_responses(400, 404)},
        examples=[_PAGE_EXAMPLE],
    )
    def get(self, request, contact_id):
        paging = EventPageQuery(data=request.query_params)
        paging.is_valid(raise_exception=True)
        if not Contact.objects.filter(pk=contact_id).exists():
            raise ApiError(404, "not_found", f"No contact with id {contact_id}.")
        return _events_page(paging.validated_data, Event.objects.filter(contact_id=contact_id))


def _name_counts(events) -> list[dict]:
    rows = events.values("name").annotate(count=Count("*")).order_by("-count", "name")
    return [{"name": row["name"], "count": row["count"]} for row in rows[:MAX_NAMES]]


class EventNamesView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Event names",
        description=f"Every event name tracked, in alphabetical order (at most {MAX_NAMES}), "
        "with when it was last seen. Its cost grows with the number of names, not of events "
        "(counts over a period: /v1/events/stats).",
        responses={200: NAMES, **error_responses()},
        examples=[
            OpenApiExample(
                "Names",
                value={
                    "success": True,
                    "data": [
                        {"name": "order", "lastSeenAt": "2026-01-02T09:30:00+00:00"},
                        {"name": "user.signup", "lastSeenAt": "2026-01-03T17:05:00+00:00"},
                    ],
                },
                response_only=True,
            )
        ],
    )
    def get(self, request):
        return Response({"success": True, "data": event_names(limit=MAX_NAMES)})


# One index probe per distinct name (a "skip scan" over event_name_time): the names and when
# each was last seen, without reading every event.
_NAMES_SQL = """
WITH RECURSIVE names AS (
  (SELECT name FROM contacts_app_event ORDER BY name LIMIT 1)
  UNION ALL
  SELECT (SELECT e.name FROM contacts_app_event e WHERE e.name > n.name ORDER BY e.name LIMIT 1)
  FROM names n WHERE n.name IS NOT NULL
)
SELECT n.name,
       (SELECT max(e.created_at) FROM contacts_app_event e WHERE e.name = n.name)
FROM names n WHERE n.name IS NOT NULL LIMIT %s
"""


def event_names(*, limit: int) -> list[dict]:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_NAMES_SQL, [limit])
            rows = cursor.fetchall()
    else:  # SQLite, the single-machine default: a plain GROUP BY
        rows = list(
            Event.objects.values_list("name")
            .annotate(last=Max("created_at"))
            .order_by("name")[:limit]
        )
    return [{"name": name, "lastSeenAt": last.isoformat()} for name, last in rows]


class EventStatsView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Event counts per name over a period",
        description="Counts per name of the events tracked between `from` and `to` (default: "
        f"the last 30 days; at most {MAX_PERIOD.days} days), most frequent first.",
        parameters=[StatsQuery],
        responses={200: STATS, **error_responses(400)},
        examples=[
            OpenApiExample(
                "Stats",
                value={
                    "success": True,
                    "data": [{"name": "user.signup", "count": 120}],
                    "from": "2026-01-01T00:00:00+00:00",
                    "to": "2026-01-31T00:00:00+00:00",
                },
                response_only=True,
            )
        ],
    )
    def get(self, request):
        query = StatsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        start, end = query.validated_data.get("from"), query.validated_data.get("to")
        end = end or timezone.now()
        try:
            start = start or end - DEFAULT_PERIOD
        except OverflowError:
            raise ApiError(
                400, "validation_error", "Invalid period.", {"to": "Out of range."}
            ) from None
        if start > end:
            raise ApiError(
                400, "validation_error", "Invalid period.", {"from": "`from` is after `to`."}
            )
        if end - start > MAX_PERIOD:
            raise ApiError(
                400,
                "validation_error",
                "The period is too long.",
                {"from": f"At most {MAX_PERIOD.days} days before `to`."},
            )
        counts = _name_counts(Event.objects.filter(created_at__gte=start, created_at__lte=end))
        return Response(
            {
                "success": True,
                "data": counts,
                "from": start.isoformat(),
                "to": end.isoformat(),
            }
        )
