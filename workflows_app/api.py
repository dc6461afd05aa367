"""POST /v1/track, compatible with Plunk's public track API."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from config import metrics
from contacts_app.api_errors import ApiError
from contacts_app.api_schema import error_responses
from contacts_app.auth import IsAnyKey
from contacts_app.parsers import read_limited
from contacts_app.safejson import unstorable
from contacts_app.services import apikey_touch, key_cache, ratelimit_hit
from workflows_app.track import KeyRevoked, TrackRejected, track, track_loads, track_parse

_STATUS = {
    "authentication_failed": status.HTTP_401_UNAUTHORIZED,
    "duplicate_request": status.HTTP_409_CONFLICT,
}


_OK_BODY = '{"success":true,"data":{"contact":"%s","event":"%s","timestamp":"%s"}}'
_JSON_ACCEPT = frozenset({"", "*/*", "application/json"})
_RENDERER = JSONRenderer()


_TRACK_REQUEST = inline_serializer(
    name="TrackRequest",
    fields={
        "event": serializers.CharField(max_length=255, help_text="The event's name."),
        "email": serializers.EmailField(help_text="The contact; created when new."),
        "subscribed": serializers.BooleanField(
            required=False,
            help_text="New contacts: true unless given. Existing: changed only when given.",
        ),
        "data": serializers.DictField(
            required=False,
            help_text='Merged into the contact\'s data (null deletes a key, "" is ignored) and '
            "kept on the event.",
        ),
    },
)
_TRACK_REPLY = inline_serializer(
    name="TrackReply",
    fields={
        "success": serializers.BooleanField(),
        "data": inline_serializer(
            name="TrackReplyData",
            fields={
                "contact": serializers.UUIDField(),
                "event": serializers.UUIDField(),
                "timestamp": serializers.DateTimeField(),
            },
        ),
    },
)


@extend_schema(
    tags=["events"],
    summary="Track an event",
    description="Records an event for a contact (created when new), starts the workflows it "
    "triggers and resumes the runs waiting for it. Public (pk_) and secret keys.",
    request={"application/json": _TRACK_REQUEST},  # parsed by hand: no parser to infer it from
    responses={200: _TRACK_REPLY, **error_responses(400, 409, 413, 415)},
    parameters=[
        OpenApiParameter(
            "Idempotency-Key",
            type={"type": "string", "minLength": 1, "maxLength": 255},
            location=OpenApiParameter.HEADER,
            required=False,
            description="1-255 characters; a repeat within 24 hours is a 409 and records nothing.",
        )
    ],
    examples=[
        OpenApiExample(
            "Signup",
            value={"event": "user.signup", "email": "ann@example.com", "data": {"plan": "pro"}},
            request_only=True,
        ),
        OpenApiExample(
            "Recorded",
            value={
                "success": True,
                "data": {
                    "contact": "0b9f8a52-8c55-4a8e-9d7e-2a7a1d0c1f00",
                    "event": "6f1d2b7e-3c1a-4b9e-8f5d-0a2b3c4d5e6f",
                    "timestamp": "2026-01-01T12:00:00+00:00",
                },
            },
            response_only=True,
            status_codes=["200"],
        ),
    ],
)
class TrackView(APIView):
    permission_classes = [IsAnyKey]
    throttle_classes: list = []  # counted below, once the body is known to be valid
    parser_classes: list = []  # the body is read and checked here, with precise errors

    def post(self, request):
        meta = request.META
        content_type = meta.get("CONTENT_TYPE", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
        try:
            length = int(meta.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.TRACK_MAX_BODY_BYTES:
            raise ApiError(
                413,
                "payload_too_large",
                f"The body is larger than {settings.TRACK_MAX_BODY_BYTES} bytes.",
            )
        # Read up to the limit, whatever Content-Length said (a chunked body gets its length in
        # config/wsgi.py, and may still be longer than the limit).
        raw = read_limited(request._request, settings.TRACK_MAX_BODY_BYTES)
        try:
            body = track_loads(raw)
        except TrackRejected as exc:
            raise ApiError(400, exc.code, exc.message, exc.fields) from None

        idempotency_key = meta.get("HTTP_IDEMPOTENCY_KEY")
        if idempotency_key is not None and (
            not 1 <= len(idempotency_key) <= 255 or unstorable(idempotency_key)
        ):
            raise ApiError(
                400,
                "validation_error",
                "Invalid Idempotency-Key header.",
                {"Idempotency-Key": "Must be 1 to 255 characters, without NUL."},
            )
        try:
            payload = track_parse(body)
        except TrackRejected as exc:
            raise ApiError(400, exc.code, exc.message, exc.fields) from None

        client = request.user
        now = timezone.now()
        rate = ratelimit_hit(key=client.key, now=now)
        headers = rate.headers() if rate is not None else None
        if rate is not None and rate.exceeded:
            raise ApiError(
                429, "rate_limited", "Too many requests for this API key.", headers=headers
            )
        try:
            result = track(
                key=client.key, payload=payload, idempotency_key=idempotency_key, now=now
            )
        except TrackRejected as exc:
            if isinstance(exc, KeyRevoked):
                key_cache.forget(client.key_hash)
            raise ApiError(_STATUS.get(exc.code, 400), exc.code, exc.message, exc.fields) from None
        apikey_touch(key_id=client.key.id, now=now)
        # Written directly: two UUIDs and an ISO timestamp need no escaping, and skipping DRF's
        # Response rendering (template response, renderer context) is a good share of the
        # request's Python time. Same bytes and Content-Type as JSONRenderer would give.
        return HttpResponse(
            _OK_BODY % (result.contact_id, result.event_id, result.timestamp.isoformat()),
            content_type="application/json",
            headers=headers,
        )

    def finalize_response(self, request, response, *args, **kwargs):
        # Every answer passes here, refusals included (no key: 401, bad body: 400, 429 ...).
        metrics.track_request(response.status_code)
        return super().finalize_response(request, response, *args, **kwargs)

    def perform_content_negotiation(self, request, force=False):
        # The usual Accept headers get JSON without running DRF's negotiation (about a tenth of
        # the request's Python time); anything else still negotiates (e.g. 406 for text/html).
        if request.META.get("HTTP_ACCEPT", "*/*") in _JSON_ACCEPT:
            return _RENDERER, _RENDERER.media_type
        return super().perform_content_negotiation(request, force)
