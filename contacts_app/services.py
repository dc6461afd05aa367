"""Contacts, events and API keys: the actions every path (API, admin, engine, shell) uses."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import connection, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from contacts_app.emails import normalize_email
from contacts_app.models import ApiKey, Contact, Event, RateLimitWindow

__all__ = ["normalize_email"]  # re-exported: the one normal form of an address (emails.py)

# --- Contacts and events ----------------------------------------------------------------------


class ContactDataTooLarge(ValueError):
    """The contact's data would pass CONTACT_MAX_DATA_BYTES; nothing was written."""

    def __init__(self, limit: int, size: int | None = None):
        self.limit = limit
        would_be = f" ({size} bytes)" if size is not None else ""
        super().__init__(
            f"The contact's data would be larger than {limit} bytes as JSON{would_be} "
            "(CONTACT_MAX_DATA_BYTES); nothing was changed."
        )


def contact_data_size(data: dict[str, Any]) -> int:
    """Size of contact data as measured against CONTACT_MAX_DATA_BYTES: its JSON text in UTF-8
    bytes (what PostgreSQL's `octet_length(data::text)` measures, give or take number spelling)."""
    return len(json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _check_data_size(data: dict[str, Any]) -> None:
    limit = settings.CONTACT_MAX_DATA_BYTES
    if limit and (size := contact_data_size(data)) > limit:
        raise ContactDataTooLarge(limit, size)


def contact_upsert(
    *,
    email: str,
    subscribed: bool | None = None,
    data: dict[str, Any] | None = None,
    may_resubscribe: bool = True,
) -> tuple[Contact, bool]:
    """Create the contact or merge `data` into it (top-level keys); returns (contact, created).

    `subscribed` changes only when given; new contacts are subscribed unless told otherwise.
    With `may_resubscribe=False` (a public key) `subscribed=True` does not change an existing
    contact: only the contact may undo an unsubscribe. Raises ContactDataTooLarge, writing
    nothing, when the merged data would pass CONTACT_MAX_DATA_BYTES.
    """
    email = normalize_email(email)
    now = timezone.now()
    with transaction.atomic():
        contact = Contact.objects.select_for_update().filter(email=email).first()
        if contact is None:
            if data:
                _check_data_size(data)
            contact, created = Contact.objects.get_or_create(
                email=email,
                defaults={
                    "subscribed": True if subscribed is None else subscribed,
                    "data": dict(data or {}),
                    "created_at": now,
                    "updated_at": now,
                },
            )
            if created:
                return contact, True
            contact = Contact.objects.select_for_update().get(pk=contact.pk)
        if data:
            merged = {**contact.data, **data}
            _check_data_size(merged)
            contact.data = merged
        if subscribed is not None and (may_resubscribe or not subscribed):
            contact.subscribed = subscribed
        contact.updated_at = now
        contact.save(update_fields=["data", "subscribed", "updated_at"])
    return contact, False


def contact_update_data(
    *,
    contact: Contact,
    set: dict[str, Any] | None = None,  # noqa: A002 - the workflow format's own word
    unset: list[str] | None = None,
    subscribed: bool | None = None,
) -> Contact:
    """Raises ContactDataTooLarge, writing nothing, when the data would pass
    CONTACT_MAX_DATA_BYTES (only setting keys can grow it)."""
    now = timezone.now()
    limit = settings.CONTACT_MAX_DATA_BYTES if set else 0
    if connection.vendor == "postgresql":
        # One statement (row lock, merge, write) instead of a transaction of four: this runs
        # for every Update Contact step, so it is on the engine's hot path.
        merged = "(data || %s::jsonb) - %s::text[]"
        changes: list[Any] = [json.dumps(set or {}), list(unset or [])]
        params: list[Any] = [*changes, subscribed, now, contact.pk]
        within_limit = ""
        if limit:  # the cap in the same statement: nothing is written past it
            within_limit = f" AND octet_length(({merged})::text) <= %s"
            params += [*changes, limit]
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Contact._meta.db_table} SET data = {merged}, "
                "subscribed = COALESCE(%s, subscribed), updated_at = %s "
                f"WHERE id = %s{within_limit} "
                "RETURNING id, email, subscribed, data, created_at, updated_at",
                params,
            )
            row = cursor.fetchone()
        if row is None:
            if limit and Contact.objects.filter(pk=contact.pk).exists():
                raise ContactDataTooLarge(limit)
            raise Contact.DoesNotExist(f"contact {contact.pk} does not exist")
        values = list(row)
        if isinstance(values[3], str):
            values[3] = json.loads(values[3])
        return Contact.from_db(
            connection.alias,
            ["id", "email", "subscribed", "data", "created_at", "updated_at"],
            values,
        )
    with transaction.atomic():
        fresh = Contact.objects.select_for_update().get(pk=contact.pk)
        data = {**fresh.data, **(set or {})}
        for key in unset or []:
            data.pop(key, None)
        if limit:
            _check_data_size(data)
        fresh.data = data
        if subscribed is not None:
            fresh.subscribed = subscribed
        fresh.updated_at = now
        fresh.save(update_fields=["data", "subscribed", "updated_at"])
    return fresh


def contact_set_subscribed(*, contact: Contact, subscribed: bool) -> None:
    Contact.objects.filter(pk=contact.pk).update(subscribed=subscribed, updated_at=timezone.now())


def event_record(
    *, contact: Contact, name: str, data: dict[str, Any] | None = None, at: datetime | None = None
) -> Event:
    return Event.objects.create(
        contact=contact, name=name, data=data or {}, created_at=at or timezone.now()
    )


# --- Unsubscribe links ------------------------------------------------------------------------

UNSUBSCRIBE_SALT = "contacts.unsubscribe"


def unsubscribe_token(contact: Contact) -> str:
    return signing.dumps(str(contact.pk), salt=UNSUBSCRIBE_SALT, compress=True)


def unsubscribe_url(contact: Contact) -> str:
    path = reverse("unsubscribe", kwargs={"token": unsubscribe_token(contact)})
    return settings.PUBLIC_URL + path


# --- API keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyInfo:
    id: int
    kind: str
    rate_limit_per_minute: int | None


class _KeyCache:
    """Per-process memory of key hashes, so a request does not look its key up every time.

    Revocation is still seen at once on /v1/track (its statement re-checks the key), and within
    API_KEY_CACHE_SECONDS everywhere else.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, KeyInfo | None]] = {}

    def get(self, key_hash: str) -> tuple[bool, KeyInfo | None]:
        entry = self._entries.get(key_hash)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def put(self, key_hash: str, info: KeyInfo | None) -> None:
        with self._lock:
            if len(self._entries) > 10_000:  # unknown keys must not grow memory without bound
                self._entries.clear()
            self._entries[key_hash] = (time.monotonic() + settings.API_KEY_CACHE_SECONDS, info)

    def forget(self, key_hash: str | None = None) -> None:
        with self._lock:
            if key_hash is None:
                self._entries.clear()
            else:
                self._entries.pop(key_hash, None)


key_cache = _KeyCache()


def apikey_create(
    *, name: str, kind: str = ApiKey.SECRET, rate_limit_per_minute: int | None = None
):
    """Returns (ApiKey, raw key). The raw key is shown once and never stored."""
    raw = ApiKey.generate(kind)
    key = ApiKey.objects.create(
        name=name,
        kind=kind,
        prefix=raw[:10],
        key_hash=ApiKey.hash(raw),
        rate_limit_per_minute=rate_limit_per_minute,
    )
    return key, raw


def apikey_revoke(*, key: ApiKey) -> None:
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key_cache.forget(key.key_hash)


def apikey_lookup(raw: str) -> tuple[str, KeyInfo | None]:
    """Returns (hash, info); info is None for an unknown or revoked key."""
    key_hash = ApiKey.hash(raw)
    hit, info = key_cache.get(key_hash)
    if hit:
        return key_hash, info
    row = (
        ApiKey.objects.filter(key_hash=key_hash, revoked_at__isnull=True)
        .values_list("id", "kind", "rate_limit_per_minute")
        .first()
    )
    info = KeyInfo(*row) if row else None
    key_cache.put(key_hash, info)
    return key_hash, info


LAST_USED_EVERY = timedelta(minutes=1)
_last_used_written: dict[int, datetime] = {}


def apikey_touch(*, key_id: int, now: datetime) -> None:
    """Records last use, at most once a minute per key and process: a write per request would
    cost more than the request."""
    last = _last_used_written.get(key_id)
    if last is not None and now - last < LAST_USED_EVERY:
        return
    _last_used_written[key_id] = now
    ApiKey.objects.filter(pk=key_id).update(last_used_at=now)


def ratelimit_hit(*, key: KeyInfo, now: datetime) -> int:
    """Counts one request in the key's current minute. Returns 0 when allowed, otherwise the
    seconds until the next window (for Retry-After)."""
    limit = key.rate_limit_per_minute
    if limit is None and key.kind == ApiKey.PUBLIC:
        # Public keys are published in web pages: anyone may use them, so they are limited
        # unless the key says otherwise.
        limit = settings.PUBLIC_KEY_RATE_LIMIT_PER_MINUTE
    if not limit:
        return 0
    window = now.replace(second=0, microsecond=0)
    with transaction.atomic():
        row, _ = RateLimitWindow.objects.select_for_update().get_or_create(
            api_key_id=key.id, window_start=window
        )
        RateLimitWindow.objects.filter(pk=row.pk).update(count=F("count") + 1)
        count = row.count + 1
    if count <= limit:
        return 0
    return max(1, 60 - now.second)
