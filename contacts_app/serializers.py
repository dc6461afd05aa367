"""The contacts API's shapes: what it accepts (strictly: unknown fields, wrong types, NUL and
over-long text are a 400 naming the field) and what it answers (Plunk's contact)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from contacts_app import safejson
from contacts_app.emails import MAX_LENGTH, email_error, normalize_email
from contacts_app.services import contact_data_size

MAX_LOOKUP_EMAILS = 500


# Fields named `data` shadow Serializer.data for mypy only: DRF's metaclass takes declared fields
# off the class. Hence the `type: ignore[assignment]` on them.


class StrictSerializer(serializers.Serializer):
    """Refuses a body that is not an object, and every field it does not declare."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError({"body": "Must be a JSON object."})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {key: "Unknown field." for key in unknown}, code="unknown_field"
            )
        return super().to_internal_value(data)


@extend_schema_field({"type": "string", "format": "email", "maxLength": MAX_LENGTH})
class ContactEmailField(serializers.Field):
    """An address in the one normal form contacts are stored in (emails.py)."""

    default_error_messages = {"invalid": "Not a valid email address."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or not data.strip() or len(data) > 1000:
            self.fail("invalid")
        email = normalize_email(data)
        if problem := email_error(email):
            raise serializers.ValidationError(problem, code="invalid")
        return email

    def to_representation(self, value: str) -> str:
        return value


@extend_schema_field({"type": "boolean"})
class StrictBooleanField(serializers.Field):
    """true or false as JSON booleans (DRF's BooleanField also takes "yes", 1, "on"...)."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data

    def to_representation(self, value: bool) -> bool:
        return value


@extend_schema_field({"type": "object", "additionalProperties": True})
class ContactDataField(serializers.Field):
    """Contact data: an object of JSON values jsonb can store, nested at most
    TRACK_MAX_DATA_DEPTH levels (as on /v1/track), and within CONTACT_MAX_DATA_BYTES."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be an object.", code="invalid")
        if safejson.depth(data) > settings.TRACK_MAX_DATA_DEPTH:
            raise serializers.ValidationError(
                f"Nested deeper than {settings.TRACK_MAX_DATA_DEPTH} levels.", code="invalid"
            )
        if problem := safejson.unstorable(data):
            raise serializers.ValidationError(
                f"Must not contain NUL characters or invalid Unicode ({problem}).",
                code="invalid",
            )
        limit = settings.CONTACT_MAX_DATA_BYTES
        if limit and contact_data_size(data) > limit:
            raise serializers.ValidationError(
                f"Larger than {limit} bytes as JSON (CONTACT_MAX_DATA_BYTES).", code="too_large"
            )
        return data

    def to_representation(self, value: Any) -> Any:
        return value


# --- requests ---------------------------------------------------------------------------------


class ContactUpsertSerializer(StrictSerializer):
    """Create a contact or merge into it. Unknown fields are refused."""

    email = ContactEmailField(help_text="The contact; created when new (trimmed, lower-cased).")
    data = ContactDataField(  # type: ignore[assignment]
        required=False,
        allow_null=True,
        help_text='Merged into the contact\'s data: null deletes a key, "" changes nothing, '
        "reserved keys (id, email, unsubscribeUrl, subscribeUrl, manageUrl, plunk_*) are dropped.",
    )
    subscribed = StrictBooleanField(
        required=False,
        allow_null=True,
        help_text="New contacts: true unless given. Existing contacts: changed only when given.",
    )


class ContactPatchSerializer(StrictSerializer):
    """Change what is given. Unknown fields are refused."""

    email = ContactEmailField(
        required=False, help_text="A new address; 409 email_taken when another contact has it."
    )
    data = ContactDataField(  # type: ignore[assignment]
        required=False,
        allow_null=True,
        help_text="An object is merged as on POST /v1/contacts; null wipes the contact's data.",
    )
    subscribed = StrictBooleanField(required=False, help_text="Subscribe or unsubscribe.")


class ContactLookupSerializer(StrictSerializer):
    """Addresses to look up. Unknown fields are refused."""

    emails = serializers.ListField(
        child=ContactEmailField(),
        min_length=1,
        max_length=MAX_LOOKUP_EMAILS,
        help_text=f"1 to {MAX_LOOKUP_EMAILS} addresses.",
    )


# --- replies ----------------------------------------------------------------------------------


class ContactSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    email = serializers.EmailField()
    subscribed = serializers.BooleanField()
    data = ContactDataField()  # type: ignore[assignment]
    createdAt = serializers.DateTimeField(source="created_at")  # noqa: N815 - Plunk's name
    updatedAt = serializers.DateTimeField(source="updated_at")  # noqa: N815


class ContactMetaSerializer(serializers.Serializer):
    isNew = serializers.BooleanField()  # noqa: N815 - Plunk's name
    isUpdate = serializers.BooleanField()  # noqa: N815


class ContactUpsertedSerializer(ContactSerializer):
    # A contact with Plunk's `_meta`, a name a declared field can not take.
    def get_fields(self):
        return {**super().get_fields(), "_meta": ContactMetaSerializer()}


class ContactListSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    data = ContactSerializer(many=True)  # type: ignore[assignment]
    total = serializers.IntegerField(help_text="Contacts matching the filters.")
    cursor = serializers.CharField(
        allow_null=True, help_text="Pass as `cursor` for the next page; null on the last page."
    )
    hasMore = serializers.BooleanField()  # noqa: N815


class ContactLookupResultSerializer(serializers.Serializer):
    found = ContactSerializer(many=True)
    notFound = serializers.ListField(child=serializers.EmailField())  # noqa: N815


class DataFieldSerializer(serializers.Serializer):
    field = serializers.CharField()
    type = serializers.ChoiceField(
        choices=["string", "number", "boolean", "object", "array", "null", "mixed"]
    )
    coverage = serializers.FloatField(
        min_value=0, max_value=1, help_text="Share of the sampled contacts that have it (0-1)."
    )


class DataFieldsSerializer(serializers.Serializer):
    # `fields` is also the name of Serializer's own attribute, hence get_fields.
    def get_fields(self):
        return {
            "fields": DataFieldSerializer(many=True),
            "count": serializers.IntegerField(help_text="How many fields."),
            "sampled": serializers.IntegerField(
                help_text="How many contacts were read (the most recent ones)."
            ),
        }


@extend_schema_field(OpenApiTypes.ANY)
class AnyJsonField(serializers.Field):
    def to_representation(self, value: Any) -> Any:
        return value


class FieldValueSerializer(serializers.Serializer):
    value = AnyJsonField(help_text="A JSON value the field has.")
    count = serializers.IntegerField(help_text="How many sampled contacts have this value.")


class FieldValuesSerializer(serializers.Serializer):
    field = serializers.CharField()
    values = FieldValueSerializer(many=True)
    count = serializers.IntegerField(help_text="How many distinct values (the list is cut).")
    sampled = serializers.IntegerField(help_text="How many contacts were read (most recent).")
