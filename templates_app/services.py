"""Rendering templates for a contact and sending through the ledger (Message)."""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import MIMEPart
from email.utils import parseaddr
from typing import Any

from anymail.backends.base_requests import AnymailRequestsBackend
from django.conf import settings
from django.core.mail import get_connection
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from config import metrics
from contacts_app.models import Contact
from contacts_app.services import (
    contact_set_subscribed,
    manage_url,
    subscribe_url,
    system_event_record,
    unsubscribe_url,
)
from templates_app.backends import BatchAnswerUnreadable, LedgerEmail
from templates_app.mjml import mjml_display_html
from templates_app.models import Message, Template
from templates_app.policy import FrequencyCap, frequency_cap_check
from templates_app.rendering import (
    Problem,
    Rendered,
    TemplateError,
    render,
    template_problems,
)

log = logging.getLogger(__name__)


class SendSkipped(Exception):
    """Not sent by rule (marketing mail to an unsubscribed contact)."""


class SendTransientError(Exception):
    """The provider could not take it now; trying again later may work."""


class SendPermanentError(Exception):
    """The provider refused it; trying again will not help."""


class ResendRefused(Exception):
    """A person asked to resend a message that may not be resent (the message says why)."""


def template_variables(
    *, contact: Contact, context: dict[str, Any] | None = None, workflow_name: str = ""
) -> dict[str, Any]:
    """The scope of every render (workflow sends, previews, test sends, Webhook bodies).

    Plunk's: `id`, `email`, contact data and the execution context at top level (the context
    wins over contact data), `data` (contact data), `event` (the context), `unsubscribeUrl`,
    `subscribeUrl`, `manageUrl`. Ours besides: `contact.*` (data, `email`, `subscribed`),
    `subscribed`, `workflow.name`. The named variables win over data and context keys of the
    same name.
    """
    data = dict(contact.data or {})
    event = dict(context or {})
    return {
        **data,
        **event,
        "id": str(contact.pk) if contact.pk is not None else "",
        "email": contact.email,
        "subscribed": contact.subscribed,
        "data": data,
        "event": event,
        "contact": {**data, "email": contact.email, "subscribed": contact.subscribed},
        "workflow": {"name": workflow_name},
        "unsubscribeUrl": unsubscribe_url(contact),
        "subscribeUrl": subscribe_url(contact),
        "manageUrl": manage_url(contact),
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
        mjml_body=template.mjml,
        variables=template_variables(contact=contact, context=context, workflow_name=workflow_name),
    )


def template_preview(
    *,
    subject: str,
    html_body: str,
    text_body: str = "",
    contact: Contact | None = None,
    sample: dict[str, Any] | None = None,
    event: dict[str, Any] | None = None,
    mjml_body: str = "",
) -> Rendered:
    """Renders unsaved template text for a real contact, or for sample data."""
    who = contact or Contact(email="preview@example.com", data=sample or {})
    return render(
        subject=subject,
        html_body=html_body,
        text_body=text_body,
        mjml_body=mjml_body,
        variables=template_variables(contact=who, context=event or {}, workflow_name="Preview"),
    )


def template_send_test(
    *,
    template: Template,
    to_email: str,
    contact: Contact | None = None,
    sample: dict[str, Any] | None = None,
) -> None:
    """Sends the rendered template to a person testing it. Not a contact send: no ledger row,
    no subscription check."""
    rendered = template_preview(
        subject=template.subject,
        html_body=template.html,
        text_body=template.text,
        mjml_body=template.mjml,
        contact=contact,
        sample=sample,
    )
    email = LedgerEmail(
        subject=f"[Test] {rendered.subject}",
        body=rendered.text,
        from_email=template.from_email or settings.DEFAULT_FROM_EMAIL,
        to=[to_email],
        reply_to=[template.reply_to] if template.reply_to else None,
    )
    email.attach_alternative(rendered.html, "text/html")
    email.send()


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
    to_email: str | None = None,
    frequency_cap: FrequencyCap | None = None,
) -> SendResult:
    """Sends at most once per idempotency key.

    `frequency_cap`: a marketing email to the contact that would go over it is not sent
    (FrequencyCapped, before any ledger row); checked under the contact's row lock in the
    transaction that inserts the row (templates_app.policy.frequency_cap_check).

    `to_email` sends to that address instead of the contact's (Send Email's CUSTOM recipient):
    the message is still recorded against the contact and rendered with its data, but the
    contact's subscription is not checked (the mail is not for them) and no List-Unsubscribe
    header is added (a mail client's one-click unsubscribe would unsubscribe the contact).

    The ledger row is committed (status "sending") before the provider is called and updated
    after. A later call with the same key never sends again, with one exception: if the row is
    still "sending" (the worker died between the provider call and the update) and the provider
    de-duplicates on our key (EMAIL_PROVIDER_IDEMPOTENT), it is sent again with the same key,
    which the provider drops if it had accepted the first. Other providers can not tell, so the
    row is marked "unknown" and not sent again: at most once, never twice.
    """
    existing = Message.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None:
        return _send_again(existing, template, contact)

    # Checked again at the moment of sending, not only when the workflow reached the step
    # (only marketing mail to the contact depends on it).
    if template.type == Template.MARKETING and to_email is None:
        subscribed = Contact.objects.filter(pk=contact.pk).values_list("subscribed", flat=True)
        if not subscribed.get():
            raise SendSkipped("skipped: unsubscribed")

    rendered = template_render(
        template=template, contact=contact, context=context, workflow_name=workflow_name
    )
    message = _ledger_row(idempotency_key, template, contact, to_email, rendered)
    if not _row_insert(message, template, to_email, frequency_cap):
        # Another worker took this key a moment ago: it sends, we do not.
        return SendResult(Message.objects.get(idempotency_key=idempotency_key), sent_now=False)
    return SendResult(_deliver(message, template, contact), sent_now=True)


def _row_insert(
    row: Message, template: Template, to_email: str | None, cap: FrequencyCap | None
) -> bool:
    """Commits a ledger row ("sending"), the frequency cap checked first in its transaction
    (marketing mail to the contact only: under the contact's row lock); False when another
    worker holds the key. Raises FrequencyCapped, or what the database refuses."""
    try:
        with transaction.atomic():
            if cap and template.type == Template.MARKETING and to_email is None:
                frequency_cap_check(contact=row.contact, cap=cap, now=timezone.now())
            row.save(force_insert=True)
    except IntegrityError:
        return False
    return True


def _send_again(existing: Message, template: Template, contact: Contact) -> SendResult:
    """A key already in the ledger (a retried visit): its row as it is, unless it was left
    "sending" by a worker that died; see message_send."""
    if existing.status != Message.SENDING:
        return SendResult(existing, sent_now=False)
    if not settings.EMAIL_PROVIDER_IDEMPOTENT:
        Message.objects.filter(pk=existing.pk, status=Message.SENDING).update(
            status=Message.UNKNOWN,
            error="The worker stopped while sending; not sent again to avoid a duplicate.",
        )
        existing.refresh_from_db()
        return SendResult(existing, sent_now=False)
    return SendResult(_deliver(existing, template, contact), sent_now=True)


def _ledger_row(
    key: str, template: Template, contact: Contact, to_email: str | None, rendered: Rendered
) -> Message:
    """A workflow send's ledger row, "sending", not saved yet."""
    return Message(
        idempotency_key=key,
        contact=contact,
        template=template,
        # The type it is sent as: what the frequency cap counts and a resend's headers follow,
        # whatever becomes of the template later.
        email_type=template.type,
        to_email=contact.email if to_email is None else to_email,
        from_email=template.from_email or settings.DEFAULT_FROM_EMAIL,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        status=Message.SENDING,
    )


@dataclass(frozen=True)
class Outgoing:
    """One email of messages_send_many: message_send's arguments."""

    idempotency_key: str
    template: Template
    contact: Contact
    context: dict[str, Any] | None = None
    workflow_name: str = ""
    to_email: str | None = None
    frequency_cap: FrequencyCap | None = None


def batch_size() -> int:
    """How many emails messages_send_many sends in one provider call: EMAIL_BATCH_SIZE when the
    configured backend has a batch API for different messages (templates_app.backends), else
    1 (each email its own call)."""
    backend = import_string(settings.EMAIL_BACKEND)
    if not hasattr(backend, "send_batch") or not backend.batches():
        return 1
    return max(1, min(settings.EMAIL_BATCH_SIZE, backend.batch_limit))


def messages_send_many(items: list[Outgoing]) -> list[SendResult | Exception]:
    """message_send for several emails at once, with message_send's guarantees for each (at
    most once per idempotency key; its row committed "sending" before the provider is called;
    the frequency cap checked under the contact's lock in the row's transaction), in a few
    statements and one provider call (at most batch_size() items). Returns, in order, each
    email's SendResult or the exception message_send would have raised: one email's trouble
    is its own."""
    results: list[SendResult | Exception | None] = [None] * len(items)
    existing = Message.objects.in_bulk(
        [item.idempotency_key for item in items], field_name="idempotency_key"
    )
    marketing = {
        item.contact.pk
        for item in items
        if item.template.type == Template.MARKETING and item.to_email is None
    }
    subscribed = set(
        Contact.objects.filter(pk__in=marketing, subscribed=True).values_list("pk", flat=True)
        if marketing
        else ()
    )
    new: list[tuple[int, Message]] = []
    for index, item in enumerate(items):
        try:
            if item.idempotency_key in existing:
                results[index] = _send_again(
                    existing[item.idempotency_key], item.template, item.contact
                )
                continue
            if (
                item.template.type == Template.MARKETING
                and item.to_email is None
                and item.contact.pk not in subscribed
            ):
                raise SendSkipped("skipped: unsubscribed")
            rendered = template_render(
                template=item.template,
                contact=item.contact,
                context=item.context,
                workflow_name=item.workflow_name,
            )
        except Exception as exc:  # noqa: BLE001 - this email's outcome, as message_send's
            results[index] = exc
            continue
        row = _ledger_row(
            item.idempotency_key, item.template, item.contact, item.to_email, rendered
        )
        new.append((index, row))
    mine = _insert_rows(new, items, results)
    if mine:
        delivered = _deliver_many([(row, items[i].template, items[i].contact) for i, row in mine])
        for (index, _), outcome in zip(mine, delivered, strict=True):
            results[index] = outcome
    return [r if r is not None else SendSkipped("not sent") for r in results]


def _insert_rows(
    new: list[tuple[int, Message]],
    items: list[Outgoing],
    results: list[SendResult | Exception | None],
) -> list[tuple[int, Message]]:
    """Commits the rows ("sending"); returns those that are ours to send. A key another worker
    took a moment ago is its to send (its result: that row, not sent now); an email whose row
    the database refuses, or whose cap is reached, gets that as its result."""
    mine: list[tuple[int, Message]] = []

    def insert_one(index: int, row: Message) -> None:
        item = items[index]
        try:
            inserted = _row_insert(row, item.template, item.to_email, item.frequency_cap)
        except Exception as exc:  # noqa: BLE001 - this email's outcome (FrequencyCapped, ...)
            results[index] = exc
            return
        if inserted:
            mine.append((index, row))
        else:
            taken(index, row)

    def taken(index: int, row: Message) -> None:
        theirs = Message.objects.filter(idempotency_key=row.idempotency_key).first()
        results[index] = (
            SendResult(theirs, sent_now=False)
            if theirs is not None
            # Taken and let go again (a transient refusal frees the key): the retry sends.
            else SendTransientError("another worker held this email's key; tried again later")
        )

    # One statement for the rows under no cap; a capped email locks its contact, alone.
    plain = [(i, row) for i, row in new if items[i].frequency_cap is None]
    for index, row in new:
        if items[index].frequency_cap is not None:
            insert_one(index, row)
    if not plain:
        return mine
    try:
        with transaction.atomic():
            Message.objects.bulk_create([row for _, row in plain], ignore_conflicts=True)
    except DatabaseError:
        # A row the database refuses (a subject too long for its column, a contact erased a
        # moment ago): each alone, so that email fails and the others go on.
        for index, row in plain:
            insert_one(index, row)
        return mine
    # Ours are the rows with our tokens; a key another worker inserted first kept its row.
    ours = dict(
        Message.objects.filter(token__in=[row.token for _, row in plain]).values_list("token", "pk")
    )
    for index, row in plain:
        if row.token in ours:
            row.pk = ours[row.token]
            row._state.adding = False
            mine.append((index, row))
        else:
            taken(index, row)
    return mine


_RESEND_SUFFIX = re.compile(r"^(?P<base>.*):resend-(?P<n>\d+)$")


def message_resend(*, message: Message, user: Any) -> Message:
    """A person's decision to send again a message whose delivery is `unknown` (or `failed`).

    Creates a new ledger row (key `<original key>:resend-<n>`, recording who resent it and
    which row it resends) with the same rendered content, and sends it through the same
    delivery code. The old row stays as it was. Each row can be resent once (the new key is
    unique); if the resend fails too, resend the new row. Refused for any other status, when
    the template is gone, and for marketing mail to a contact who has unsubscribed since.
    Raises ResendRefused, or SendTransientError / SendPermanentError like a send.
    """
    with transaction.atomic():
        old = Message.objects.select_for_update().get(pk=message.pk)
        if old.status not in Message.RESENDABLE:
            raise ResendRefused(
                f"Only a message whose delivery is unknown or failed can be resent; this one "
                f"is {old.get_status_display().lower()}."
            )
        template = old.template
        if template is None and old.source != Message.API:
            raise ResendRefused("Its template has been deleted, so it can not be resent.")
        contact = Contact.objects.get(pk=old.contact_id)
        kind = message_email_type(old, template)
        if kind == Template.MARKETING and not contact.subscribed:
            raise ResendRefused(
                f"{contact.email} has unsubscribed since; marketing mail is not sent."
            )
        match = _RESEND_SUFFIX.match(old.idempotency_key)
        base, n = (match["base"], int(match["n"])) if match else (old.idempotency_key, 0)
        key = f"{base}:resend-{n + 1}"
        if Message.objects.filter(idempotency_key=key).exists():
            raise ResendRefused("This message has already been resent.")
        try:
            with transaction.atomic():
                new = Message.objects.create(
                    idempotency_key=key,
                    contact=contact,
                    template=template,
                    to_email=old.to_email,
                    from_email=old.from_email,
                    subject=old.subject,
                    html=old.html,
                    text=old.text,
                    status=Message.SENDING,
                    resend_of=old,
                    resent_by=user,
                    source=old.source,
                    email_type=old.email_type,
                    reply_to=old.reply_to,
                    headers=old.headers,
                    attachments=old.attachments,
                    attachment_content_id=old.attachment_content_id,
                )
        except IntegrityError as exc:
            raise ResendRefused("This message has already been resent.") from exc
    log.info("message %s resent as %s by %s", old.pk, new.pk, getattr(user, "pk", None))
    return _deliver(new, template, contact)


def _deliver(message: Message, template: Template | None, contact: Contact) -> Message:
    try:
        email = _build_email(message, template, contact)
    except Exception as exc:  # noqa: BLE001 - nothing was sent: the row fails with the reason
        error = f"Not sent: the email could not be built ({type(exc).__name__}: {exc})"[:2000]
        message.status, message.error = Message.FAILED, error
        message.save(update_fields=["status", "error", "updated_at"])
        metrics.email_result(Message.FAILED)
        raise SendPermanentError(error) from exc
    connection = _provider_connection()
    try:
        # Nothing of the message has left yet: any failure here is safe to retry.
        connection.open()
    except Exception as exc:  # noqa: BLE001 - the provider could not be reached
        _provider_connection_drop(connection)
        error = f"{type(exc).__name__}: {exc}"[:2000]
        _release(message, error)
        metrics.email_result(Message.FAILED if message.status == Message.FAILED else "retry")
        raise SendTransientError(error) from exc
    email.connection = connection
    try:
        email.send()
    except Exception as exc:  # noqa: BLE001 - classified below, recorded either way
        _provider_connection_drop(connection)
        failure = _send_failed(message, exc)
        if failure is None:
            return message
        raise failure from exc
    finally:
        _provider_connection_done(connection)
    status = getattr(email, "anymail_status", None)
    provider_id = getattr(status, "message_id", None)
    _sent([(message, "" if provider_id is None else str(provider_id))])
    return message


def _deliver_many(
    rows: list[tuple[Message, Template | None, Contact]],
) -> list[SendResult | Exception]:
    """_deliver for rows already in the ledger ("sending"), in one call to a provider with a
    batch API (backends with `send_batch`); each row keeps _deliver's rules. Returns, per row,
    its SendResult or what _deliver would have raised."""
    results: list[SendResult | Exception | None] = [None] * len(rows)
    emails: list[tuple[int, LedgerEmail]] = []
    for index, (message, template, contact) in enumerate(rows):
        try:
            emails.append((index, _build_email(message, template, contact)))
        except Exception as exc:  # noqa: BLE001 - nothing was sent: the row fails with the reason
            error = f"Not sent: the email could not be built ({type(exc).__name__}: {exc})"[:2000]
            message.status, message.error = Message.FAILED, error
            message.save(update_fields=["status", "error", "updated_at"])
            metrics.email_result(Message.FAILED)
            results[index] = SendPermanentError(error)
    if not emails:
        return [r if r is not None else SendSkipped("not sent") for r in results]
    sending = [rows[index][0] for index, _ in emails]
    connection = _provider_connection()
    answers: list[str | Exception]
    try:
        # Nothing of the messages has left yet: any failure here is safe to retry.
        connection.open()
    except Exception as exc:  # noqa: BLE001 - the provider could not be reached
        _provider_connection_drop(connection)
        error = f"{type(exc).__name__}: {exc}"[:2000]
        for (index, _), message in zip(emails, sending, strict=True):
            _release(message, error)
            metrics.email_result(Message.FAILED if message.status == Message.FAILED else "retry")
            results[index] = SendTransientError(error)
        return [r if r is not None else SendSkipped("not sent") for r in results]
    try:
        answers = connection.send_batch([email for _, email in emails])
        if len(answers) != len(emails):
            raise RuntimeError(f"{len(answers)} answers for {len(emails)} emails")
    except Exception as exc:  # noqa: BLE001 - the backend broke before an answer: per row
        _provider_connection_drop(connection)
        answers = [exc] * len(emails)
    finally:
        _provider_connection_done(connection)
    # What the provider took is recorded first, whatever happens to the others.
    _sent([(m, a) for m, a in zip(sending, answers, strict=True) if isinstance(a, str)])
    for (index, _), message, answer in zip(emails, sending, answers, strict=True):
        if isinstance(answer, str):
            results[index] = SendResult(message, sent_now=True)
            continue
        # Refused (this message, or its whole call): as a single send's failure.
        try:
            failure = _send_failed(message, answer)
        except Exception as exc:  # noqa: BLE001 - the row stays "sending": unknown on retry
            log.exception("recording the failed send of message %s failed", message.pk)
            results[index] = exc
            continue
        results[index] = SendResult(message, sent_now=True) if failure is None else failure
    return [r if r is not None else SendSkipped("not sent") for r in results]


def _send_failed(
    message: Message, exc: Exception
) -> SendTransientError | SendPermanentError | None:
    """Records what a failed provider call means for the row; returns the error its sender
    raises, or None when the row is now unknown (returned as it is, never sent again)."""
    error = f"{type(exc).__name__}: {exc}"[:2000]
    if _may_have_been_accepted(exc) and not settings.EMAIL_PROVIDER_IDEMPOTENT:
        # A timeout or a dropped connection while sending: the provider may have taken it.
        # Sending again could deliver it twice, so it is not sent again (at most once); ops
        # see it as unknown and a person may resend it.
        message.status = Message.UNKNOWN
        message.error = f"The send was interrupted ({error}); not sent again to avoid a duplicate."
        message.save(update_fields=["status", "error", "updated_at"])
        metrics.email_result(Message.UNKNOWN)
        return None
    if _is_transient(exc):
        # Refused before acceptance (or a provider that de-duplicates on our key): free the
        # key so the retry can send.
        _release(message, error)
        metrics.email_result(Message.FAILED if message.status == Message.FAILED else "retry")
        return SendTransientError(error)
    message.status, message.error = Message.FAILED, error
    message.save(update_fields=["status", "error", "updated_at"])
    metrics.email_result(Message.FAILED)
    return SendPermanentError(error)


def _sent(sent: list[tuple[Message, str]]) -> None:
    """Records rows the provider took (with its id for each): one statement for all, and each
    one's `email.sent` event."""
    if not sent:
        return
    now = timezone.now()
    for message, provider_id in sent:
        message.provider_message_id = provider_id[:255]
        message.status = Message.SENT
        message.sent_at = message.updated_at = now
        # Sent: an attachment's content is not needed any more (its name and size stay).
        message.attachments = [
            {k: v for k, v in a.items() if k != "content"} for a in message.attachments
        ]
    if len(sent) == 1:
        sent[0][0].save(
            update_fields=["status", "provider_message_id", "sent_at", "attachments", "updated_at"]
        )
    else:
        Message.objects.bulk_update(
            [message for message, _ in sent],
            ["status", "provider_message_id", "sent_at", "attachments", "updated_at"],
        )
    for message, _ in sent:
        metrics.email_result(Message.SENT)
        try:  # one event's trouble (a contact erased a moment ago) is not the others'
            system_event_record(
                contact_id=message.contact_id,
                name="email.sent",
                data=message_event_data(message),
                now=now,
            )
        except Exception:  # noqa: BLE001 - the email is sent and recorded; only its event is lost
            if len(sent) == 1:
                raise
            log.exception("recording email.sent for message %s failed", message.pk)


# A provider's HTTP API (django-anymail) is called over one kept-alive connection per thread:
# no TCP and TLS handshake per email while emails flow. Reused only within a few seconds of
# its last use: servers close idle keep-alive connections (some after 5 s), and a request
# racing that close fails as an interrupted send (unknown, not sent again). SMTP gets a
# connection per email: a server drops idle SMTP sessions, with the same risk.
_REUSE_IDLE_SECONDS = 3.0
_kept = threading.local()


def _provider_connection() -> Any:
    connection, backend, last_used = getattr(_kept, "entry", (None, "", 0.0))
    if (
        connection is not None
        and backend == settings.EMAIL_BACKEND
        and time.monotonic() - last_used < _REUSE_IDLE_SECONDS
    ):
        return connection
    _provider_connection_drop(connection)
    return get_connection()


def _provider_connection_done(connection: Any) -> None:
    """After a send: keep the connection for this thread's next one, or close it."""
    if isinstance(connection, AnymailRequestsBackend) and connection.session is not None:
        _kept.entry = (connection, settings.EMAIL_BACKEND, time.monotonic())
        return
    _provider_connection_drop(connection)


def _provider_connection_drop(connection: Any) -> None:
    if getattr(_kept, "entry", (None,))[0] is connection:
        _kept.entry = (None, "", 0.0)
    if connection is not None:
        with contextlib.suppress(Exception):
            connection.close()


def _release(message: Message, error: str) -> None:
    """Nothing of the message left: a retry may send it. A workflow send's row goes (the step's
    retry creates it again); an API send's goes back to the queue for the sweep to retry
    (templates_app.sending.messages_sweep), until it has had Message.API_MAX_ATTEMPTS."""
    if message.source != Message.API:
        message.delete()
        return
    final = message.attempts >= Message.API_MAX_ATTEMPTS
    message.status = Message.FAILED if final else Message.QUEUED
    message.error = error
    message.save(update_fields=["status", "error", "updated_at"])


def message_event_data(message: Message) -> dict[str, Any]:
    """Plunk's data of an `email.*` system event about a message we sent."""
    from_name, from_address = parseaddr(message.from_email)
    return {
        "subject": message.subject,
        "from": from_address or message.from_email,
        "fromName": from_name,
        "messageId": message.provider_message_id,
        "emailId": str(message.pk),
        "templateId": str(message.template_id) if message.template_id is not None else None,
        # Plunk's names for where the email came from: a /v1/send is TRANSACTIONAL there.
        "sourceType": "TRANSACTIONAL" if message.source == Message.API else "WORKFLOW",
        "sentAt": message.sent_at.isoformat() if message.sent_at else None,
    }


def message_email_type(message: Message, template: Template | None) -> str:
    """Marketing or transactional: the row's own (an API send), else its template's."""
    if message.email_type:
        return message.email_type
    return template.type if template is not None else Template.TRANSACTIONAL


def _build_email(message: Message, template: Template | None, contact: Contact) -> LedgerEmail:
    # An API send's own headers (validated by the API: none that the message sets itself).
    headers = dict(message.headers or {})
    kind = message_email_type(message, template)
    reply_to = message.reply_to or (template.reply_to if template is not None else "")
    # Only to the contact: a CUSTOM recipient's one-click unsubscribe must not unsubscribe them.
    if kind == Template.MARKETING and message.to_email.lower() == contact.email.lower():
        url = unsubscribe_url(contact)
        headers["List-Unsubscribe"] = f"<{url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    email = LedgerEmail(
        subject=message.subject,
        body=message.text,
        from_email=message.from_email,
        to=[message.to_email],
        reply_to=[reply_to] if reply_to else None,
        headers=headers,
    )
    email.attach_alternative(message.html, "text/html")
    for attachment in _attachments_with_content(message):
        email.attach(_attachment_part(attachment))
    # Read by django-anymail backends (ignored by smtp/console): correlate provider events by
    # an unguessable token, never the row id (see message_find).
    email.metadata = {"message_token": message.token, "idempotency_key": message.idempotency_key}  # type: ignore[attr-defined]
    email.tags = [kind]  # type: ignore[attr-defined]
    return email


def _attachments_with_content(message: Message) -> list[dict[str, Any]]:
    """The row's attachments with their content: from the request's shared SendAttachments
    (an API send stores it once for all its recipients), or in the row itself (rows recorded
    before that)."""
    listed = message.attachments or []
    if not listed or all("content" in item for item in listed):
        return listed
    shared = message.attachment_content
    if shared is None or len(shared.items) != len(listed):
        raise ValueError("the attachments' content is no longer stored")
    return shared.items


def _attachment_part(attachment: dict[str, Any]) -> MIMEPart:
    maintype, _, subtype = attachment["contentType"].partition("/")
    part = MIMEPart()
    cid = attachment.get("contentId")
    part.set_content(
        base64.b64decode(attachment["content"]),
        maintype=maintype,
        subtype=subtype,
        disposition=attachment.get("disposition") or "attachment",
        filename=attachment["filename"],
        cid=f"<{cid}>" if cid else None,
    )
    return part


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _may_have_been_accepted(exc: Exception) -> bool:
    """A failure after (part of) the message went out, with no answer from the provider: a
    timeout or a connection dropped mid-send. An explicit answer (an SMTP code, an HTTP status)
    or a connection that never opened means it was not taken."""
    import requests

    for cause in _causes(exc):
        if isinstance(cause, BatchAnswerUnreadable):  # a 200 we can not read: maybe all taken
            return True
        if isinstance(cause, smtplib.SMTPResponseException | smtplib.SMTPRecipientsRefused):
            return False
        if getattr(getattr(cause, "response", None), "status_code", None) is not None:
            return False
        if isinstance(
            cause,
            requests.exceptions.ConnectTimeout | ConnectionRefusedError | socket.gaierror,
        ):
            return False
    return any(
        isinstance(
            cause,
            socket.timeout
            | TimeoutError
            | smtplib.SMTPServerDisconnected
            | ConnectionResetError
            | BrokenPipeError
            | requests.exceptions.ReadTimeout
            | requests.exceptions.ChunkedEncodingError
            | requests.exceptions.ConnectionError,
        )
        for cause in _causes(exc)
    )


def _is_transient(exc: Exception) -> bool:
    """Worth retrying: SMTP 4xx, HTTP 408/429/5xx from an API, or the network failing."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:  # anymail API errors (they are OSErrors too, so this goes first)
        return status in (408, 429) or status >= 500
    return isinstance(exc, smtplib.SMTPServerDisconnected | socket.timeout | OSError)


# --- Provider events (delivered, opened, clicked, bounced, complained) ------------------------

# How far along a message is; a late "delivered" never overwrites "opened".
_PROGRESS = {
    Message.SENT: 1,
    Message.DELIVERED: 2,
    Message.OPENED: 3,
    Message.CLICKED: 4,
    Message.BOUNCED: 5,
    Message.COMPLAINED: 6,
}
PROVIDER_EVENTS = {
    "delivered": Message.DELIVERED,
    "opened": Message.OPENED,
    "clicked": Message.CLICKED,
    "bounced": Message.BOUNCED,
    "complained": Message.COMPLAINED,
}


def message_find(*, provider_message_id: str = "", token: str = "") -> Message | None:
    """The message a provider event is about: by the provider's id, or (for an event that
    arrives before the provider's id was recorded) by the token we gave it in the metadata."""
    if provider_message_id:
        found = Message.objects.filter(provider_message_id=provider_message_id).first()
        if found:
            return found
    if token:
        return Message.objects.filter(token=token).first()
    return None


def message_apply_provider_event(*, message: Message, event_type: str, detail: str = "") -> bool:
    """Moves the message's status forward for a provider event; a hard bounce or a complaint
    unsubscribes the contact. Returns True if the event is one we track."""
    status = PROVIDER_EVENTS.get(event_type)
    if status is None:
        return False
    with transaction.atomic():
        locked = Message.objects.select_for_update().get(pk=message.pk)
        if _PROGRESS.get(status, 0) > _PROGRESS.get(locked.status, 0):
            locked.status = status
            if detail and status in (Message.BOUNCED, Message.COMPLAINED):
                locked.error = detail[:2000]
            locked.save(update_fields=["status", "error", "updated_at"])
        if status in (Message.BOUNCED, Message.COMPLAINED) and message_to_contact(locked):
            # Through the service, so a real change records `contact.unsubscribed`. A message
            # sent to a fixed address (a team inbox) says nothing about the contact's address.
            contact_set_subscribed(contact=Contact(pk=locked.contact_id), subscribed=False)
    return True


def message_to_contact(message: Message) -> bool:
    """Whether the message went to its contact's own address (not a fixed recipient)."""
    contact_email = Contact.objects.filter(pk=message.contact_id).values_list("email", flat=True)
    return message.to_email == contact_email.first()


# --- Templates: create, change, delete, duplicate, usage (the API's writes) -------------------

# What a preview renders with when it is given neither a contact nor data.
PREVIEW_SAMPLE_DATA = {"firstName": "Ada", "lastName": "Lovelace", "plan": "pro"}
TEMPLATE_FIELDS = (
    "name",
    "description",
    "type",
    "subject",
    "html",
    "mjml",
    "text",
    "from_email",
    "reply_to",
)
MAX_USAGE_STEPS = 1000  # steps listed by template_usage; the count is always exact


class TemplateNameTaken(Exception):
    """Another template has this name (names are unique)."""


class TemplateInUse(Exception):
    """The template is used by workflow steps (Step.template is PROTECT): it can not be
    deleted. `workflows` names them."""

    def __init__(self, workflows: list[str]):
        self.workflows = workflows
        names = ", ".join(f"'{name}'" for name in workflows)
        super().__init__(
            f"The template is used by the Send Email steps of {names}; change those steps to "
            "another template first."
        )


def template_problems_of(template: Template) -> list[Problem]:
    """template_problems for a template's fields as they are now (saved or not)."""
    return template_problems(
        subject=template.subject,
        html_body=template.html,
        text_body=template.text,
        mjml_body=template.mjml,
    )


def template_prepare(template: Template) -> None:
    """Checks the template before a save (TemplateError {field: "Liquid syntax error, line N:
    ..."} or {"mjml": "MJML error, line N: ..."}) and, for an MJML template, derives its
    `html` from the MJML (see Template.html)."""
    problems = template_problems_of(template)
    if not template.mjml and not template.html.strip():
        raise TemplateError({"html": "An HTML body or an MJML source is required."})
    if problems:
        raise TemplateError({p.field: p.message for p in problems})
    if template.mjml:
        template.html = mjml_display_html(template.mjml)


def _template_save(template: Template, **kwargs: Any) -> None:
    try:
        with transaction.atomic():
            template.save(**kwargs)
    except IntegrityError as exc:  # the one unique column
        raise TemplateNameTaken(f"A template named '{template.name}' already exists.") from exc


def template_create(
    *,
    name: str,
    subject: str,
    html: str = "",
    text: str = "",
    type: str = Template.MARKETING,  # noqa: A002 - the model's field name
    from_email: str = "",
    reply_to: str = "",
    description: str = "",
    mjml: str = "",
) -> Template:
    """A new template, checked first (template_prepare: TemplateError naming the field and
    the line); TemplateNameTaken when the name is in use. With `mjml`, `html` is derived."""
    template = Template(
        name=name,
        description=description,
        type=type,
        subject=subject,
        html=html,
        mjml=mjml,
        text=text,
        from_email=from_email,
        reply_to=reply_to,
    )
    template_prepare(template)
    _template_save(template)
    return template


def template_update(*, template: Template, **changes: Any) -> Template:
    """Changes some of TEMPLATE_FIELDS, checking the Liquid of the result. Steps refer to a
    template by key, so a rename is safe."""
    unknown = set(changes) - set(TEMPLATE_FIELDS)
    if unknown:
        raise TypeError(f"not template fields: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        locked = Template.objects.select_for_update().get(pk=template.pk)
        for field, value in changes.items():
            setattr(locked, field, value)
        template_prepare(locked)
        if changes:
            fields = {*changes, "html"} if locked.mjml else set(changes)
            _template_save(locked, update_fields=[*fields, "updated_at"])
    return locked


def template_usage(*, template: Template, limit: int = MAX_USAGE_STEPS) -> dict[str, Any]:
    """The workflows whose steps use the template (their steps listed up to `limit`), the
    number of such steps and of emails sent with it."""
    steps = template.steps.order_by("workflow__name", "id").values(
        "id", "key", "name", "type", "workflow_id", "workflow__name", "workflow__enabled"
    )
    workflows: dict[int, dict[str, Any]] = {}
    for step in steps[:limit]:
        workflow = workflows.setdefault(
            step["workflow_id"],
            {
                "id": step["workflow_id"],
                "name": step["workflow__name"],
                "enabled": step["workflow__enabled"],
                "steps": [],
            },
        )
        workflow["steps"].append({"id": step["id"], "key": step["key"], "name": step["name"]})
    return {
        "workflowSteps": template.steps.count(),
        "emailsSent": Message.objects.filter(template=template).count(),
        "workflows": list(workflows.values()),
    }


def template_delete(*, template: Template) -> None:
    """Deletes an unused template; TemplateInUse names the workflows whose steps use it.

    The row is locked first: a graph save adding a step that points at it (the foreign key
    takes a share lock on the row) waits for this to finish, or this waits for it and then
    sees its step."""
    with transaction.atomic():
        locked = Template.objects.select_for_update().get(pk=template.pk)
        names = list(
            locked.steps.order_by("workflow__name")
            .values_list("workflow__name", flat=True)
            .distinct()[:20]
        )
        if names:
            raise TemplateInUse(names)
        locked.delete()


def _copy_names(name: str, limit: int) -> Iterator[str]:
    for n in range(1, 1000):
        suffix = " (Copy)" if n == 1 else f" (Copy {n})"
        yield name[: limit - len(suffix)] + suffix


def template_duplicate(*, template: Template) -> Template:
    """A copy named "<name> (Copy)", or "(Copy 2)", "(Copy 3)"... when that is taken."""
    limit = Template._meta.get_field("name").max_length or 200
    candidates = list(_copy_names(template.name, limit))
    taken = set(Template.objects.filter(name__in=candidates[:50]).values_list("name", flat=True))
    for name in candidates:
        if name in taken:
            continue
        copy = Template(**{f: getattr(template, f) for f in TEMPLATE_FIELDS if f != "name"})
        copy.name = name
        try:
            _template_save(copy)
        except TemplateNameTaken:  # taken a moment ago, or past the first 50 we looked at
            continue
        return copy
    raise TemplateNameTaken(f"No free name for a copy of '{template.name}'.")
