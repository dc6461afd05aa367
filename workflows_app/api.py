"""POST /v1/track, compatible with Plunk's public track API."""

from __future__ import annotations

import json

from django.conf import settings
from django.utils import timezone
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts_app.api_errors import ApiError
from contacts_app.auth import IsAnyKey
from contacts_app.services import apikey_touch, key_cache, ratelimit_hit
from workflows_app.track import KeyRevoked, TrackRejected, track, track_parse

_STATUS = {
    "authentication_failed": status.HTTP_401_UNAUTHORIZED,
    "duplicate_request": status.HTTP_409_CONFLICT,
}


class TrackView(APIView):
    permission_classes = [IsAnyKey]
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
        raw = request._request.read(settings.TRACK_MAX_BODY_BYTES + 1)
        if len(raw) > settings.TRACK_MAX_BODY_BYTES:
            raise ApiError(
                413,
                "payload_too_large",
                f"The body is larger than {settings.TRACK_MAX_BODY_BYTES} bytes.",
            )
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None

        idempotency_key = meta.get("HTTP_IDEMPOTENCY_KEY")
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
            raise ApiError(
                400,
                "validation_error",
                "Invalid Idempotency-Key header.",
                {"Idempotency-Key": "Must be 1 to 255 characters."},
            )
        try:
            payload = track_parse(body)
        except TrackRejected as exc:
            raise ApiError(400, exc.code, exc.message, exc.fields) from None

        client = request.user
        now = timezone.now()
        retry_after = ratelimit_hit(key=client.key, now=now)
        if retry_after:
            raise ApiError(
                429,
                "rate_limited",
                "Too many requests for this API key.",
                headers={"Retry-After": str(retry_after)},
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
        return Response(
            {
                "success": True,
                "data": {
                    "contact": result.contact_id,
                    "event": result.event_id,
                    "timestamp": result.timestamp.isoformat(),
                },
            }
        )
