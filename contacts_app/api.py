"""Secret-key API for contacts (public keys get 403)."""

from __future__ import annotations

import uuid

from rest_framework.response import Response
from rest_framework.views import APIView

from contacts_app.api_errors import ApiError
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
        try:
            contact = Contact.objects.filter(pk=uuid.UUID(lookup)).first()
        except ValueError:
            contact = Contact.objects.filter(email=normalize_email(lookup)).first()
        if contact is None:
            raise ApiError(404, "not_found", "No contact with this id or email.")
        return Response({"success": True, "data": contact_json(contact)})
