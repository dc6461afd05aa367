"""Paging for API lists, in Plunk's shapes.

Pages (templates, workflows, executions, events): `?page=1&pageSize=20` ->
`{success, <key>: [...], total, page, pageSize, totalPages}`, `<key>` being `data` unless a
subclass says otherwise (`executions`). A page past the end is an empty list, not an error; a
page or size that is not a positive whole number is a 400 naming it.
"""

from __future__ import annotations

import math
from typing import Any

from rest_framework import serializers
from rest_framework.pagination import BasePagination
from rest_framework.response import Response

from contacts_app.api_errors import ApiError

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def query_int(request, name: str, default: int, *, low: int, high: int) -> int:
    """A whole-number query parameter within [low, high]; else a 400 naming it."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw) if len(raw) <= 12 else None
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ApiError(
            400,
            "validation_error",
            f"Invalid {name}.",
            {name: f"A whole number from {low} to {high}."},
        )
    return value


class PagePagination(BasePagination):
    """Plunk's page paging. `results_key` is the list's key in the reply."""

    results_key = "data"

    def paginate_queryset(self, queryset, request, view=None):
        self.page = query_int(request, "page", 1, low=1, high=1_000_000)
        self.page_size = query_int(
            request, "pageSize", DEFAULT_PAGE_SIZE, low=1, high=MAX_PAGE_SIZE
        )
        self.total = queryset.count()
        start = (self.page - 1) * self.page_size
        return list(queryset[start : start + self.page_size])

    def get_paginated_response(self, data):
        return Response(
            {
                "success": True,
                self.results_key: data,
                "total": self.total,
                "page": self.page,
                "pageSize": self.page_size,
                "totalPages": math.ceil(self.total / self.page_size) if self.total else 0,
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["success", self.results_key, "total", "page", "pageSize", "totalPages"],
            "properties": {
                "success": {"type": "boolean"},
                self.results_key: schema,
                "total": {"type": "integer", "example": 42},
                "page": {"type": "integer", "example": 1},
                "pageSize": {"type": "integer", "example": 20},
                "totalPages": {"type": "integer", "example": 3},
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": "page",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "default": 1},
            },
            {
                "name": "pageSize",
                "in": "query",
                "required": False,
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PAGE_SIZE,
                    "default": DEFAULT_PAGE_SIZE,
                },
            },
        ]


class StrictQuery(serializers.Serializer):
    """Query parameters: an unknown one is refused, and so is one given empty (`?page=`)
    unless its field allows blank (DRF would take it as absent); the error names them.
    `aliases` maps Plunk's names to ours (each documented as its own parameter)."""

    aliases: dict[str, str] = {}

    def to_internal_value(self, data):
        data = {key: data.get(key) for key in data}
        unknown = {key: "Unknown parameter." for key in data if key not in self.fields}
        empty = {
            name: "May not be empty."
            for name, field in self.fields.items()
            if data.get(name) == "" and not getattr(field, "allow_blank", False)
        }
        if unknown or empty:
            raise serializers.ValidationError({**unknown, **empty})
        validated = super().to_internal_value(data)
        for theirs, ours in self.aliases.items():
            value = validated.pop(theirs, None)
            if value is not None and ours not in data:
                validated[ours] = value
        return validated


class PageQuery(StrictQuery):
    """`?page=&pageSize=` as a query serializer (documented by drf-spectacular)."""

    page = serializers.IntegerField(required=False, min_value=1, max_value=1_000_000, default=1)
    pageSize = serializers.IntegerField(  # noqa: N815 - Plunk's name
        required=False, min_value=1, max_value=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE
    )
