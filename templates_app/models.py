import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from contacts_app.models import Contact


class Template(models.Model):
    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"
    TYPE_CHOICES = [
        (MARKETING, "Marketing (never sent to unsubscribed contacts)"),
        (TRANSACTIONAL, "Transactional (always sent)"),
    ]

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True, help_text="What it is for; not sent.")
    type = models.CharField(max_length=20, choices=TYPE_CHOICES, default=MARKETING)
    subject = models.CharField(max_length=998)
    # With `mjml` set, `html` is derived: the MJML compiled with its Liquid in place, kept for
    # the API's `body` and for switching back to HTML; sends render and compile the MJML.
    html = models.TextField("HTML body", blank=True)
    mjml = models.TextField(
        "MJML source",
        blank=True,
        help_text="Empty: an HTML template. Set: the source of truth, compiled for every send.",
    )
    text = models.TextField("text body", blank=True, help_text="Empty: derived from the HTML.")
    from_email = models.CharField(
        max_length=320, blank=True, help_text="Empty: DEFAULT_FROM_EMAIL."
    )
    reply_to = models.CharField(max_length=320, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SendAttachments(models.Model):
    """The attachments of one POST /v1/send, stored once for all its recipients' ledger rows
    (each row keeps only their names and sizes). Deleted by the send sweep
    (templates_app.sending.messages_sweep) once no row that may still be delivered or resent
    points at it."""

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # [{filename, content (base64), contentType, disposition, contentId, size}]
    items = models.JSONField(default=list)

    class Meta:
        verbose_name = "send attachments"
        verbose_name_plural = "send attachments"

    def __str__(self) -> str:
        names = ", ".join(str(item.get("filename", "")) for item in self.items or [])
        return f"Attachments {self.pk}: {names}"


def message_token() -> str:
    return secrets.token_urlsafe(24)


class Message(models.Model):
    """The send ledger: one row per email, created before sending and updated after.

    `idempotency_key` is unique: for a workflow send it is derived from the execution and the
    step visit, so a retried task finds the row and does not send again. `token` is the
    unguessable reference the provider carries back in its events (never the row id).
    A resend (of an `unknown` or `failed` row, by a person) is a new row pointing at the old.
    """

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    FAILED = "failed"
    UNKNOWN = "unknown"
    STATUS_CHOICES = [
        (QUEUED, "Queued"),
        (SENDING, "Sending"),
        (SENT, "Sent"),
        (DELIVERED, "Delivered"),
        (OPENED, "Opened"),
        (CLICKED, "Clicked"),
        (BOUNCED, "Bounced"),
        (COMPLAINED, "Complained"),
        (FAILED, "Failed"),
        (UNKNOWN, "Unknown (a worker stopped while sending)"),
    ]

    idempotency_key = models.CharField(max_length=200, unique=True)
    token = models.CharField(max_length=64, unique=True, default=message_token, editable=False)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="messages")
    template = models.ForeignKey(Template, null=True, blank=True, on_delete=models.SET_NULL)
    to_email = models.EmailField(max_length=254)
    from_email = models.CharField(max_length=320)
    subject = models.CharField(max_length=998)
    html = models.TextField(blank=True)
    text = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=QUEUED)
    provider_message_id = models.CharField(max_length=255, blank=True, db_index=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    sent_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    resend_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="resends"
    )
    resent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # POST /v1/send: the row holds everything its delivery needs (templates_app/sending.py).
    WORKFLOW = "workflow"
    API = "api"
    SOURCE_CHOICES = [(WORKFLOW, "Workflow"), (API, "API (/v1/send)")]
    source = models.CharField(max_length=10, choices=SOURCE_CHOICES, default=WORKFLOW)
    email_type = models.CharField(
        max_length=20,
        choices=Template.TYPE_CHOICES,
        blank=True,
        help_text="Empty: the template's type.",
    )
    reply_to = models.CharField(max_length=320, blank=True, help_text="Empty: the template's.")
    headers = models.JSONField(default=dict, blank=True)
    # [{filename, contentType, disposition, contentId, size}]: what was attached; the content is
    # in `attachment_content`, shared by the rows of one request.
    attachments = models.JSONField(default=list, blank=True)
    attachment_content = models.ForeignKey(
        SendAttachments,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
        help_text="The attachments' content (kept while the row may still be sent or resent).",
    )
    attempts = models.PositiveSmallIntegerField(default=0)

    RESENDABLE = (UNKNOWN, FAILED)
    API_MAX_ATTEMPTS = 5  # deliveries of an API send refused for a transient reason

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["contact", "-created_at"], name="message_contact_time"),
            # The ops list of sends left unknown by a worker that died.
            models.Index(
                fields=["-created_at"],
                name="message_unknown",
                condition=models.Q(status="unknown"),
            ),
            # The sweep of API sends whose task was lost (templates_app.sending.messages_sweep).
            models.Index(
                fields=["updated_at"],
                name="message_api_pending",
                condition=models.Q(source="api", status__in=["queued", "sending"]),
            ),
        ]
        permissions = [
            ("resend_message", "Can resend a message whose delivery is unknown or failed"),
        ]

    def __str__(self) -> str:
        return f"{self.subject} → {self.to_email}"
