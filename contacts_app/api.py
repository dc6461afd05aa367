"""Secret-key API for contacts (public keys get 403)."""

from __future__ import annotations

import uuid

from rest_framework.response import Response
from rest_framework.views import APIView

from contacts_app.api_errors import ApiError
from contacts_app.emails import email_error
from contacts_app.models import Contact
from contacts_app.services import normalize_email


def contact_json(contact: Contact) -> dict:
    return {
        "id": str(contact.pk),
        "email": contact.email,
        "subscribed": contact.subscribed,
        "data": contact.data,
        "createdAt": contact.created_at.isoformat(),
        "updatedAt": contact.updated_at.isoformat(),
    }


class ContactDetailView(APIView):
    """GET /v1/contacts/<id or email>: one contact, with its data."""

    def get(self, request, lookup: str):
        contact = Contact.objects.filter(**contact_lookup(lookup)).first()
        if contact is None:
            raise ApiError(404, "not_found", "No contact with this id or email.")
        return Response({"success": True, "data": contact_json(contact)})


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
