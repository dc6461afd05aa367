"""Provider tracking events (anymail's `tracking` signal) -> the ledger and contact events.

Each delivered/opened/clicked/bounced/complained event updates its Message and is recorded as
the contact event `email.<type>`, so a Wait for Event step can wait for `email.opened`. Only
authenticated requests get here (templates_app/webhooks.py); the message is found by the
provider's id or our unguessable token, never by a row id.
"""

from __future__ import annotations

import logging

from templates_app.services import PROVIDER_EVENTS, message_apply_provider_event, message_find
from workflows_app.track import track_internal

log = logging.getLogger(__name__)


def handle_tracking(sender, event, esp_name, **kwargs) -> None:
    if event.event_type not in PROVIDER_EVENTS:
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
    data = {"message_id": message.pk, "subject": message.subject, "provider": esp_name}
    if event.click_url:
        data["url"] = event.click_url
    if event.timestamp:
        data["at"] = event.timestamp.isoformat()  # the provider's time; the event is recorded now
    track_internal(contact_id=message.contact_id, name=f"email.{event.event_type}", data=data)
