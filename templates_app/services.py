"""Rendering templates for a contact and sending through the ledger (Message)."""

from __future__ import annotations

import logging
import smtplib
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.utils import timezone

from contacts_app.models import Contact
from contacts_app.services import unsubscribe_url
from templates_app.models import Message, Template
from templates_app.rendering import Rendered, render

log = logging.getLogger(__name__)


class SendSkipped(Exception):
    """Not sent by rule (marketing mail to an unsubscribed contact)."""


class SendTransientError(Exception):
    """The provider could not take it now; trying again later may work."""


class SendPermanentError(Exception):
    """The provider refused it; trying again will not help."""


def template_variables(
    *, contact: Contact, context: dict[str, Any] | None = None, workflow_name: str = ""
) -> dict[str, Any]:
    """Contact data at top level and under `contact.`, reserved variables, `event.` context.

    Reserved names win over contact data keys of the same name.
    """
    contact_vars = {**contact.data, "email": contact.email, "subscribed": contact.subscribed}
    return {
        **contact.data,
        "contact": contact_vars,
        "email": contact.email,
        "subscribed": contact.subscribed,
        "unsubscribeUrl": unsubscribe_url(contact),
        "event": context or {},
        "workflow": {"name": workflow_name},
    }


def template_render(
    *,
    template: Template,
    contact: Contact,
    context: dict[str, Any] | None = None,
    workflow_name: str = "",
) -> Rendered:
    return render(
        subject=template.subject,
        html_body=template.html,
        text_body=template.text,
        variables=template_variables(contact=contact, context=context, workflow_name=workflow_name),
    )


@dataclass(frozen=True)
class SendResult:
    message: Message
    sent_now: bool  # False when the ledger shows an earlier attempt of the same key


def message_send(
    *,
    idempotency_key: str,
    template: Template,
    contact: Contact,
    context: dict[str, Any] | None = None,
    workflow_name: str = "",
) -> SendResult:
    """Sends at most once per idempotency key.

    The ledger row is committed before the provider is called and updated after. A second call
    with the same key never calls the provider again: if the earlier attempt finished, its
    result stands; if a worker died mid-send (status still "sending"), the message is marked
    "unknown" rather than risk a duplicate.
    """
    existing = Message.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None:
        return SendResult(_settle_existing(existing), sent_now=False)

    # Checked again at the moment of sending, not only when the workflow reached the step.
    fresh = Contact.objects.only("subscribed").get(pk=contact.pk)
    if template.type == Template.MARKETING and not fresh.subscribed:
        raise SendSkipped("skipped: unsubscribed")

    rendered = template_render(
        template=template, contact=contact, context=context, workflow_name=workflow_name
    )
    from_email = template.from_email or settings.DEFAULT_FROM_EMAIL
    try:
        with transaction.atomic():
            message = Message.objects.create(
                idempotency_key=idempotency_key,
                contact=contact,
                template=template,
                to_email=contact.email,
                from_email=from_email,
                subject=rendered.subject,
                html=rendered.html,
                text=rendered.text,
                status=Message.SENDING,
            )
    except IntegrityError:
        # Another worker took this key a moment ago.
        existing = Message.objects.get(idempotency_key=idempotency_key)
        return SendResult(_settle_existing(existing), sent_now=False)

    email = _build_email(message, template, contact)
    try:
        email.send()
    except Exception as exc:  # noqa: BLE001 - classified below, recorded either way
        transient = _is_transient(exc)
        message.status = Message.FAILED
        message.error = f"{type(exc).__name__}: {exc}"[:2000]
        if transient:
            # A transient refusal means nothing was accepted: free the key for the retry.
            message.delete()
            raise SendTransientError(message.error) from exc
        message.save(update_fields=["status", "error", "updated_at"])
        raise SendPermanentError(message.error) from exc

    status = getattr(email, "anymail_status", None)
    message.provider_message_id = (getattr(status, "message_id", None) or "")[:255]
    message.status = Message.SENT
    message.sent_at = timezone.now()
    message.save(update_fields=["status", "provider_message_id", "sent_at", "updated_at"])
    return SendResult(message, sent_now=True)


STUCK_AFTER = timedelta(minutes=10)


def _settle_existing(message: Message) -> Message:
    if message.status == Message.SENDING and timezone.now() - message.created_at > STUCK_AFTER:
        Message.objects.filter(pk=message.pk, status=Message.SENDING).update(
            status=Message.UNKNOWN,
            error="A worker stopped while sending; not sent again to avoid a duplicate.",
        )
        message.refresh_from_db()
    return message


def _build_email(message: Message, template: Template, contact: Contact) -> EmailMultiAlternatives:
    headers = {}
    if template.type == Template.MARKETING:
        url = unsubscribe_url(contact)
        headers["List-Unsubscribe"] = f"<{url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    email = EmailMultiAlternatives(
        subject=message.subject,
        body=message.text,
        from_email=message.from_email,
        to=[message.to_email],
        reply_to=[template.reply_to] if template.reply_to else None,
        headers=headers,
    )
    email.attach_alternative(message.html, "text/html")
    # Read by django-anymail backends (ignored by smtp/console): correlate provider events.
    email.metadata = {"message_id": str(message.pk), "idempotency_key": message.idempotency_key}  # type: ignore[attr-defined]
    email.tags = [template.type]  # type: ignore[attr-defined]
    return email


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPServerDisconnected | socket.timeout | ConnectionError | OSError):
        return True
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        return status in (408, 429) or status >= 500
    return False
