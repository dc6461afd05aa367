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
