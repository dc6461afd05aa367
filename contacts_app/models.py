import hashlib
import secrets
import uuid

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from contacts_app.emails import email_error, normalize_email


class Contact(models.Model):
    """A person we may email. Emails are stored lower-cased, so one address is one contact."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(max_length=254, unique=True)
    subscribed = models.BooleanField(default=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The contacts API's default order (newest first), paged by (created_at, id).
            models.Index(fields=["created_at", "id"], name="contact_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(email=Lower("email")), name="contact_email_lowercase"
            ),
        ]

    def __str__(self) -> str:
        return self.email

    def save(self, *args, **kwargs):
        self.email = normalize_email(self.email)
        super().save(*args, **kwargs)

    def clean(self):
        # The admin's form: the same rules as /v1/track (IDNA domain, 64-character local part).
        self.email = normalize_email(self.email)
        if problem := email_error(self.email):
            raise ValidationError({"email": problem})


class Event(models.Model):
    """Every tracked event is kept; data holds the event's full payload (persistent or not)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="events")
    name = models.CharField(max_length=255)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["contact", "-created_at"], name="event_contact_time"),
            models.Index(fields=["name", "-created_at"], name="event_name_time"),
            # The events API's unfiltered list and counts over a period.
            models.Index(fields=["-created_at"], name="event_time"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.contact_id})"


class ApiKey(models.Model):
    PUBLIC = "public"
    SECRET = "secret"
    KIND_CHOICES = [(PUBLIC, "Public (pk_, /v1/track only)"), (SECRET, "Secret (sk_, every API)")]
    PREFIXES = {PUBLIC: "pk_", SECRET: "sk_"}

    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=KIND_CHOICES, default=SECRET)
    prefix = models.CharField(
        max_length=16, editable=False, help_text="First characters, to tell keys apart."
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per minute for this key; empty means no limit."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @staticmethod
    def hash(raw: str) -> str:
        # Keys are 32 random bytes, so a fast hash is enough; a slow one would cost every request.
        return hashlib.sha256(raw.encode()).hexdigest()

    @classmethod
    def generate(cls, kind: str) -> str:
        return cls.PREFIXES[kind] + secrets.token_urlsafe(32)


class IdempotencyKey(models.Model):
    """An Idempotency-Key header seen on /v1/track, per API key; repeats in the window get 409."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE)
    key = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_key_unique"),
        ]

    def __str__(self) -> str:
        return self.key


class RateLimitWindow(models.Model):
    """A fixed one-minute window counter for keys that have a rate limit."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE)
    window_start = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["api_key", "window_start"], name="ratelimit_window_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.api_key_id} @ {self.window_start:%H:%M}: {self.count}"


class ContactJob(models.Model):
    """A contact import or bulk change, run by the worker in batches (contacts_app/jobs.py).

    `done` counts the rows (import) or contacts (bulk) handled so far; it commits with the
    batch it counts, so a retried job continues after the last committed batch. `payload`
    holds what the job works on (the bulk selection; the import's delimiter), `cursor` where a
    query-mode job has got to, `csv_text` the uploaded file (at most 5 MB)."""

    IMPORT = "import"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    DELETE = "delete"
    KIND_CHOICES = [
        (IMPORT, "CSV import"),
        (SUBSCRIBE, "Bulk subscribe"),
        (UNSUBSCRIBE, "Bulk unsubscribe"),
        (DELETE, "Bulk delete"),
    ]
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STATE_CHOICES = [
        (QUEUED, "Queued"),
        (RUNNING, "Running"),
        (COMPLETED, "Completed"),
        (FAILED, "Failed"),
    ]
    UNFINISHED = (QUEUED, RUNNING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=KIND_CHOICES)
    state = models.CharField(max_length=16, choices=STATE_CHOICES, default=QUEUED)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    failed_reason = models.TextField(blank=True)
    payload = models.JSONField(default=dict, blank=True)
    cursor = models.CharField(max_length=64, blank=True)
    csv_text = models.TextField(blank=True)
    filename = models.CharField(max_length=255, blank=True)
    created_by = models.CharField(max_length=255, blank=True)
    errors_seen = models.PositiveSmallIntegerField(
        default=0, help_text="Runs that stopped on an unexpected error (the job fails at 3)."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "contact job"
        indexes = [models.Index(fields=["state", "updated_at"], name="contactjob_state_updated")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.pk} ({self.state})"

    @property
    def progress(self) -> int:
        """Percent done, 0-100: 100 once completed, at most 99 before."""
        if self.state == self.COMPLETED:
            return 100
        if not self.total:
            return 0
        return min(99, self.done * 100 // self.total)
