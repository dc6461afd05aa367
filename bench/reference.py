"""The bare reference endpoint that bench/track.py compares POST /v1/track against.

It does only what any DRF tutorial would: validate the body with a serializer, upsert the
contact with update_or_create, insert one event. Same authentication as /v1/track (Bearer key,
any kind), same error handler, no workflows, no idempotency, no rate limit.

Served at POST /bench/reference only when BENCH_REFERENCE_ENDPOINT=true (config/urls.py); never
in production.
"""

from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts_app.auth import IsAnyKey
from contacts_app.models import Contact, Event


class ReferenceSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    event = serializers.CharField(max_length=255)
    subscribed = serializers.BooleanField(required=False, allow_null=True, default=None)
    data = serializers.DictField(required=False, default=dict)  # type: ignore[assignment]


class ReferenceView(APIView):
    permission_classes = [IsAnyKey]

    def post(self, request):
        serializer = ReferenceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        body = serializer.validated_data
        now = timezone.now()
        defaults = {"data": body["data"], "updated_at": now}
        if body["subscribed"] is not None:
            defaults["subscribed"] = body["subscribed"]
        contact, _ = Contact.objects.update_or_create(
            email=body["email"].strip().lower(), defaults=defaults
        )
        event = Event.objects.create(
            contact=contact, name=body["event"], data=body["data"], created_at=now
        )
        return Response(
            {
                "success": True,
                "data": {
                    "contact": str(contact.pk),
                    "event": str(event.pk),
                    "timestamp": now.isoformat(),
                },
            }
        )
