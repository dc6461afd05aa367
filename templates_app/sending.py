"""POST /v1/send: transactional and template sends through the ledger, delivered by a worker.

The request does database work only, in one transaction: claim the Idempotency-Key (if any),
upsert each recipient as a contact, render, and create one ledger row (Message) per recipient
in state QUEUED holding everything its delivery needs (subject, HTML, text, from, reply-to,
headers, attachments, marketing or transactional; the attachments' content is stored once per
request, in a SendAttachments row the request's ledger rows share). After the commit a django-q task
(templates_app.tasks.deliver_messages) delivers the rows through the ledger's own delivery code
(services._deliver), at most once per row: QUEUED -> SENDING is a conditional update, so two
tasks for one row send it once.

A task can be lost (the process died between the commit and the enqueue, or the worker died
before it claimed its rows): messages_sweep, run by the clock's sweep, enqueues again the rows
still QUEUED after QUEUED_RETRY_SECONDS. A row left SENDING (the worker died while sending)
follows the ledger's rule: sent again with the same key only to a provider that de-duplicates
on it (EMAIL_PROVIDER_IDEMPOTENT), else marked UNKNOWN and never sent twice. The sweep also
deletes the attachments' content once no row that may still be delivered or resent needs it.

A worker asked to stop (config/shutdown.py) finishes the email in hand and queues the task's
other rows again, still QUEUED, for the next worker to send at once (no sweep to wait for).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from django_q.tasks import async_task
from markdown_it import MarkdownIt

from config import shutdown
from contacts_app.models import Contact, IdempotencyKey
from contacts_app.services import ContactDataTooLarge, contact_upsert
from templates_app.models import Message, SendAttachments, Template
from templates_app.rendering import TemplateError, _render_deadline, html_to_text, render
from templates_app.services import (
    SendPermanentError,
    SendTransientError,
    _deliver,
    template_variables,
)

log = logging.getLogger(__name__)

MAX_RECIPIENTS = 100
MAX_BODY_CHARS = 1_000_000  # the body (HTML or Markdown) as sent, before rendering
MAX_ATTACHMENTS = 10
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024  # decoded, all attachments together
# The whole request: 10 MB of attachments is 13.3 MB of base64, plus a 1 MB body and the rest.
MAX_REQUEST_BYTES = 16 * 1024 * 1024
QUEUED_RETRY_SECONDS = 120  # a row still queued this long after its last enqueue: again
TASK_SIZE = 25  # rows per delivery task
SWEEP_LIMIT = 500  # rows per sweep


def sending_stuck_seconds() -> int:
    """A row SENDING for this long has lost its worker: a live one finishes within the SMTP
    backend's deadlines (EMAIL_TIMEOUT to open, EMAIL_TIMEOUT to send)."""
    return max(QUEUED_RETRY_SECONDS, 4 * int(settings.EMAIL_TIMEOUT or 0))


class SendRejected(Exception):
    """The send can not be accepted; nothing was recorded."""

    def __init__(self, code: str, message: str, fields: dict[str, str] | None = None):
        self.code = code
        self.message = message
        self.fields = fields
        super().__init__(message)


class DuplicateSend(SendRejected):
    def __init__(self) -> None:
        super().__init__(
            "duplicate_request",
            "A request with this Idempotency-Key was already accepted in the last 24 hours; "
            "nothing new was recorded.",
        )


@dataclass(frozen=True)
class Recipient:
    email: str  # normalised
    name: str = ""


@dataclass(frozen=True)
class SendRequest:
    """A validated /v1/send body (templates_app.send_api parses it)."""

    recipients: list[Recipient]
    template: Template | None = None
    subject: str | None = None  # with a template: replaces the template's subject
    body: str | None = None
    markdown: bool = False
    contact_data: dict[str, Any] = field(default_factory=dict)  # persistent values only
    context: dict[str, Any] = field(default_factory=dict)  # every value: Liquid's scope
    from_address: str = ""
    from_name: str = ""
    reply_to: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # [{filename, content (base64), contentType, disposition, contentId, size}]
    attachments: list[dict[str, Any]] = field(default_factory=list)
    subscribed: bool | None = None  # for new contacts; None: unsubscribed (Plunk's default)


@dataclass(frozen=True)
class SendOutcome:
    contact_id: str
    email: str
    message_id: int | None
    error_code: str = ""
    error_message: str = ""


def send_create(
    *,
    api_key_id: int,
    request: SendRequest,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> tuple[list[SendOutcome], datetime]:
    """Records the send: contacts, rendered ledger rows (QUEUED); delivery is enqueued once the
    transaction commits. Returns an outcome per recipient, in order. Raises DuplicateSend or
    SendRejected (a render or contact-data problem), writing nothing."""
    now = now or timezone.now()
    outcomes: list[SendOutcome] = []
    queued: list[int] = []
    with transaction.atomic():
        if idempotency_key is not None:
            claim = _idempotency_claim(api_key_id, idempotency_key, now)
            # Derived from the claim (a row and its time; a reuse after the window is a new
            # time): even two requests that both got past the claim could not create, so send,
            # the same rows twice.
            prefix = f"api-send:{claim.pk}:{int(claim.created_at.timestamp() * 1_000_000)}"
        else:
            prefix = f"api-send:{uuid.uuid4().hex}"
        _contacts_create(request, now)
        contacts = _contacts_upsert(request)
        # One deadline (TEMPLATE_RENDER_TIMEOUT_SECONDS) for every recipient's render: the
        # renders nested in it keep it, so a request can not render for 100 times the limit
        # while holding its contacts' row locks.
        with _render_deadline():
            drafts = [_draft(request, contact) for contact in contacts]
        shared: SendAttachments | None = None
        for index, draft in enumerate(drafts):
            if isinstance(draft, SendOutcome):
                outcomes.append(draft)
                continue
            if request.attachments and shared is None:
                # The content once per request, not once per recipient (10 MB x 100).
                shared = SendAttachments.objects.create(items=request.attachments, created_at=now)
            draft.idempotency_key = f"{prefix}:{index}"
            draft.attachment_content = shared
            draft.save(force_insert=True)
            outcomes.append(SendOutcome(str(draft.contact.pk), draft.contact.email, draft.pk))
            queued.append(draft.pk)
        if queued:
            transaction.on_commit(lambda: _enqueue(queued))
    return outcomes, now


def _idempotency_claim(api_key_id: int, key: str, now: datetime) -> IdempotencyKey:
    """/v1/track's rule (workflows_app.track): one claim per (API key, Idempotency-Key) within
    IDEMPOTENCY_WINDOW_SECONDS. Taken inside the send's transaction, so a refused send (any 4xx)
    releases it."""
    cutoff = now - timedelta(seconds=settings.IDEMPOTENCY_WINDOW_SECONDS)
    with transaction.atomic():
        claim, created = IdempotencyKey.objects.get_or_create(
            api_key_id=api_key_id, key=key, defaults={"created_at": now}
        )
    if created:
        return claim
    if not IdempotencyKey.objects.filter(pk=claim.pk, created_at__lt=cutoff).update(created_at=now):
        raise DuplicateSend()
    claim.created_at = now
    return claim


def _contacts_create(request: SendRequest, now: datetime) -> None:
    """New recipients become contacts with the request's `subscribed` (default false, as on
    Plunk); an existing contact's subscription is left as it is. INSERT ... ON CONFLICT DO
    NOTHING, so a contact created at the same moment by another request is not changed."""
    subscribed = bool(request.subscribed)
    # Sorted, as the upserts: two sends to A,B and B,A take their locks in one order.
    emails = sorted({r.email for r in request.recipients})
    Contact.objects.bulk_create(
        [
            Contact(email=email, subscribed=subscribed, data={}, created_at=now, updated_at=now)
            for email in emails
        ],
        ignore_conflicts=True,
    )


def _contacts_upsert(request: SendRequest) -> list[Contact]:
    """Each recipient's contact with the request's data merged (the row locked until the
    commit), in the request's order. Locked in order of email, so two concurrent sends to the
    same people can not deadlock; a recipient listed twice gets the contact as it was after
    its own upsert, as in the request's order."""
    contacts: dict[int, Contact] = {}
    order = sorted(range(len(request.recipients)), key=lambda i: request.recipients[i].email)
    for index in order:
        recipient = request.recipients[index]
        data = dict(request.contact_data)
        if recipient.name:
            data["name"] = recipient.name
        try:
            contacts[index], _ = contact_upsert(email=recipient.email, data=data)
        except ContactDataTooLarge as exc:
            raise SendRejected("validation_error", str(exc), {"data": str(exc)}) from None
    return [contacts[index] for index in range(len(request.recipients))]


def _draft(request: SendRequest, contact: Contact) -> Message | SendOutcome:
    """The recipient's ledger row, rendered and not saved yet; or the outcome of a refusal."""
    template = request.template
    kind = template.type if template is not None else Template.TRANSACTIONAL
    if kind == Template.MARKETING and not contact.subscribed:
        return SendOutcome(
            str(contact.pk),
            contact.email,
            None,
            "unsubscribed",
            f"{contact.email} is unsubscribed; marketing mail is not sent to them.",
        )
    subject, html, text = _render(request, contact)
    base_from = (template.from_email if template is not None else "") or (
        settings.DEFAULT_FROM_EMAIL
    )
    if request.from_address:
        from_email = _address(request.from_name, request.from_address)
    elif not request.from_name:
        from_email = base_from
    else:
        base_name, base_address = parseaddr(base_from)
        from_email = _address(request.from_name or base_name, base_address or base_from)
    if len(from_email) > (Message._meta.get_field("from_email").max_length or 320):
        problem = "The sender's name and address together are longer than 320 characters."
        raise SendRejected("validation_error", problem, {"name": problem})
    return Message(
        contact=contact,
        template=template,
        to_email=contact.email,
        from_email=from_email,
        subject=subject,
        html=html,
        text=text,
        status=Message.QUEUED,
        source=Message.API,
        email_type=kind,
        reply_to=request.reply_to or (template.reply_to if template is not None else ""),
        headers=request.headers,
        # Names and sizes only: the content is stored once per request (SendAttachments).
        attachments=[{k: v for k, v in a.items() if k != "content"} for a in request.attachments],
    )


def _render(request: SendRequest, contact: Contact) -> tuple[str, str, str]:
    """Liquid first (the scope of a workflow send, with `data` as its context), then Markdown
    for `type: "markdown"`: a value inserted by Liquid is HTML-escaped text, never markup."""
    template = request.template
    where = "template" if template is not None else "body"
    subject = request.subject if request.subject is not None else template.subject  # type: ignore[union-attr]
    try:
        rendered = render(
            subject=subject,
            html_body=template.html if template is not None else request.body or "",
            text_body=template.text if template is not None else "",
            mjml_body=template.mjml if template is not None else "",
            variables=template_variables(contact=contact, context=request.context),
        )
    except TemplateError as exc:
        message = f"Could not render for {contact.email}: {exc.errors.get('template', exc)}"
        raise SendRejected("validation_error", message, {where: message}) from None
    html, text = rendered.html, rendered.text
    if request.markdown and template is None:
        html = MarkdownIt("commonmark").render(html)
        text = html_to_text(html)
    if len(rendered.subject) > 998:
        message = f"The rendered subject for {contact.email} is longer than 998 characters."
        raise SendRejected("validation_error", message, {"subject": message})
    return rendered.subject, html, text


def _address(name: str, address: str) -> str:
    if not name:
        return address
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{address}>'


def _enqueue(ids: list[int]) -> None:
    """After the commit. A failure here loses no mail: the sweep enqueues the rows again."""
    for start in range(0, len(ids), TASK_SIZE):
        try:
            async_task("templates_app.tasks.deliver_messages", ids[start : start + TASK_SIZE])
        except Exception:  # noqa: BLE001 - the sweep recovers the rows
            log.exception("could not enqueue the delivery of messages %s", ids[start:])
            return


# --- Delivery (the worker) -------------------------------------------------------------------


def messages_deliver(ids: list[int]) -> int:
    """Delivers the queued rows among `ids`; returns how many were sent now. A row another
    task claimed (or already sent) is left alone. When the worker is asked to stop, the rows
    not begun are queued again for the next worker."""
    sent = 0
    for index, message_id in enumerate(ids):
        if shutdown.requested():
            _hand_back(ids[index:])
            break
        try:
            message = message_deliver_queued(message_id=message_id)
        except Exception:  # noqa: BLE001 - one broken row never stops the others
            log.exception("delivery of message %s failed", message_id)
            continue
        if message is not None and message.status == Message.SENT:
            sent += 1
    return sent


def _hand_back(ids: list[int]) -> None:
    """The rows among `ids` still QUEUED, in a new task: the next worker sends them at once.
    They are only queued again, never claimed here, so none can be sent twice (a row is sent
    by whoever moves it from QUEUED to SENDING). Should the enqueue fail, the sweep takes
    them after QUEUED_RETRY_SECONDS, as any lost task's."""
    queued = set(
        Message.objects.filter(pk__in=ids, status=Message.QUEUED).values_list("pk", flat=True)
    )
    rest = [pk for pk in ids if pk in queued]
    if rest:
        _enqueue(rest)
        log.info("stopping: handed back %d API send(s) not sent", len(rest))


def message_deliver_queued(*, message_id: int) -> Message | None:
    """Claims one QUEUED row (a conditional update: only one caller gets it) and delivers it
    through the ledger's delivery code. None when the row was not queued."""
    claimed = Message.objects.filter(pk=message_id, status=Message.QUEUED).update(
        status=Message.SENDING, attempts=F("attempts") + 1, updated_at=timezone.now()
    )
    if not claimed:
        return None
    message = Message.objects.select_related("contact", "template").get(pk=message_id)
    contact = message.contact
    if message.email_type == Template.MARKETING and not contact.subscribed:
        # Checked again at the moment of sending, as for a workflow send.
        Message.objects.filter(pk=message.pk, status=Message.SENDING).update(
            status=Message.FAILED,
            error="Not sent: the contact unsubscribed before it could be sent.",
            updated_at=timezone.now(),
        )
        message.refresh_from_db()
        return message
    try:
        return _deliver(message, message.template, contact)
    except SendTransientError as exc:
        # _deliver put the row back in the queue (or failed it after its last attempt).
        log.warning("message %s not sent yet: %s", message_id, exc)
    except SendPermanentError as exc:
        log.warning("message %s refused by the provider: %s", message_id, exc)
    message.refresh_from_db()
    return message


def messages_sweep(*, now: datetime | None = None) -> int:
    """Recovers API sends whose task was lost or whose worker died (the clock's sweep).
    Returns how many rows were enqueued again."""
    now = now or timezone.now()
    stuck_cutoff = now - timedelta(seconds=sending_stuck_seconds())
    stuck = Message.objects.filter(
        source=Message.API, status=Message.SENDING, updated_at__lt=stuck_cutoff
    )
    if settings.EMAIL_PROVIDER_IDEMPOTENT:
        # The provider drops a repeat of our key: sending again is safe, and the only way on.
        stuck.filter(attempts__lt=Message.API_MAX_ATTEMPTS).update(
            status=Message.QUEUED, updated_at=now - timedelta(seconds=QUEUED_RETRY_SECONDS + 1)
        )
    unknown = stuck.update(
        status=Message.UNKNOWN,
        error="The worker stopped while sending; not sent again to avoid a duplicate.",
        updated_at=now,
    )
    if unknown:
        log.warning("%d API send(s) left unknown by a worker that stopped while sending", unknown)
    attachments_prune()
    cutoff = now - timedelta(seconds=QUEUED_RETRY_SECONDS)
    with transaction.atomic():
        ids = list(
            Message.objects.select_for_update(skip_locked=True)
            .filter(source=Message.API, status=Message.QUEUED, updated_at__lt=cutoff)
            .order_by("updated_at")
            .values_list("pk", flat=True)[:SWEEP_LIMIT]
        )
        if not ids:
            return 0
        # Touched, so each row is enqueued again at most once per QUEUED_RETRY_SECONDS.
        Message.objects.filter(pk__in=ids).update(updated_at=now)
        for start in range(0, len(ids), TASK_SIZE):
            async_task("templates_app.tasks.deliver_messages", ids[start : start + TASK_SIZE])
    log.warning("re-queued %d API send(s) whose delivery task was lost", len(ids))
    return len(ids)


def attachments_prune(*, limit: int = SWEEP_LIMIT) -> int:
    """Deletes the attachment content (SendAttachments) no ledger row needs any more: none of
    its rows may still be delivered (queued, sending) or resent (unknown or failed, not resent
    yet; a row is resent once). Content is not kept once its rows are sent, as before it was
    shared. Returns how many were deleted."""
    needed = Message.objects.filter(attachment_content=OuterRef("pk")).filter(
        Q(status__in=[Message.QUEUED, Message.SENDING])
        | Q(status__in=Message.RESENDABLE, resends__isnull=True)
    )
    ids = list(
        SendAttachments.objects.filter(~Exists(needed))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    if not ids:
        return 0
    _, deleted = SendAttachments.objects.filter(pk__in=ids).filter(~Exists(needed)).delete()
    return deleted.get(SendAttachments._meta.label, 0)
