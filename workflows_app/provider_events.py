"""Provider webhooks (anymail's `tracking` and `inbound` signals) -> the ledger and contact
events, with Plunk's names and data.

Tracking: delivered, opened, clicked, bounced and complained update their Message and are
recorded as the system events `email.delivery`, `email.open`, `email.click`, `email.bounce`,
`email.complaint` (a hard bounce or complaint also unsubscribes, which records
`contact.unsubscribed`). Opens and clicks carry Plunk's counts (`opens` / `isFirstOpen`,
`clicks` / `isFirstClick`), counted from the message's earlier events of the same name. The
message is found by the provider's id or our unguessable token, never by a row id.

Inbound: a message received by the provider's inbound route is recorded as `email.received`
for the contact whose address sent it. Only for an existing contact: the From address of
inbound mail is not authenticated, and creating contacts from it (as Plunk does, subscribed)
would let anyone enrol any address in workflows that then mail it. Mail from unknown senders
is logged and dropped.

Only authenticated requests get here (templates_app/webhooks.py). Events start and resume
workflows like tracked ones (track_internal).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from contacts_app.emails import email_error
from contacts_app.models import Contact, Event
from contacts_app.services import normalize_email
from templates_app.models import Message
from templates_app.services import (
    PROVIDER_EVENTS,
    message_apply_provider_event,
    message_event_data,
    message_find,
    message_to_contact,
)
from workflows_app.track import track_internal

log = logging.getLogger(__name__)

# anymail's event type -> Plunk's system event name, and the data field with its time.
EVENT_NAMES = {
    "delivered": ("email.delivery", "deliveredAt"),
    "opened": ("email.open", "openedAt"),
    "clicked": ("email.click", "clickedAt"),
    "bounced": ("email.bounce", "bouncedAt"),
    "complained": ("email.complaint", "complainedAt"),
}
# Plunk's running count of a message's opens and clicks: {event type: (count, first field)}.
COUNTED = {"opened": ("opens", "isFirstOpen"), "clicked": ("clicks", "isFirstClick")}
INBOUND_BODY_MAX_CHARS = 65536


def handle_tracking(sender, event, esp_name, **kwargs) -> None:
    if event.event_type not in PROVIDER_EVENTS or event.event_type not in EVENT_NAMES:
        return
    metadata = event.metadata or {}
    token = metadata.get("message_token")
    message = message_find(
        provider_message_id=event.message_id or "", token=token if isinstance(token, str) else ""
    )
    if message is None:
        log.info("%s %s event for unknown message %s", esp_name, event.event_type, event.message_id)
        return
    message_apply_provider_event(
        message=message,
        event_type=event.event_type,
        detail=event.description or event.mta_response or event.reject_reason or "",
    )
    if not message_to_contact(message):
        # Sent to a fixed address (Send Email's CUSTOM recipient): the opens, clicks and bounces
        # are that inbox's, not the contact's, so they start and resume none of its workflows.
        return
    name, at_field = EVENT_NAMES[event.event_type]
    data: dict[str, Any] = {**message_event_data(message), "provider": esp_name}
    # The provider's time of the event; the event itself is recorded now.
    data[at_field] = event.timestamp.isoformat() if event.timestamp else None
    if event.event_type == "clicked":
        data["link"] = event.click_url
    elif event.event_type == "bounced":
        data["bounceType"] = event.reject_reason
    if event.event_type not in COUNTED:
        track_internal(contact_id=message.contact_id, name=name, data=data)
        return
    count_field, first_field = COUNTED[event.event_type]
    with transaction.atomic():
        # The message's row lock makes two webhooks for one message count one after the
        # other: one of them is the first open, never both.
        list(Message.objects.select_for_update().filter(pk=message.pk).values_list("pk"))
        earlier = Event.objects.filter(
            contact_id=message.contact_id, name=name, data__emailId=str(message.pk)
        ).count()
        data[count_field] = earlier + 1
        data[first_field] = earlier == 0
        track_internal(contact_id=message.contact_id, name=name, data=data)


def _clean(text: Any, limit: int = INBOUND_BODY_MAX_CHARS) -> str:
    """Text PostgreSQL's jsonb can store: no NUL, at most `limit` characters."""
    return str(text or "").replace("\x00", "")[:limit]


def handle_inbound(sender, event, esp_name, **kwargs) -> None:
    message = event.message
    if message is None or message.from_email is None:
        log.info("%s inbound message without a From address: dropped", esp_name)
        return
    sender_address = normalize_email(message.from_email.addr_spec or "")
    if email_error(sender_address):
        log.info("%s inbound message from an invalid address: dropped", esp_name)
        return
    contact_id = Contact.objects.filter(email=sender_address).values_list("pk", flat=True).first()
    if contact_id is None:
        log.info("%s inbound message from an address that is not a contact: dropped", esp_name)
        return
    to = [address.addr_spec for address in message.to]
    data: dict[str, Any] = {
        "from": sender_address,
        "to": _clean(message.envelope_recipient or (to[0] if to else ""), 1000),
        "recipients": [_clean(address, 1000) for address in to[:50]],
        "subject": _clean(message.subject, 1000),
        "body": _clean(message.text or message.html),
        "messageId": _clean(message.get("Message-ID"), 1000),
        "provider": esp_name,
    }
    verdicts = {
        key: value
        for key, value in (("spam", message.spam_detected), ("spamScore", message.spam_score))
        if value is not None
    }
    if verdicts:
        data["verdicts"] = verdicts
    track_internal(contact_id=contact_id, name="email.received", data=data)
