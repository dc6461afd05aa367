"""Contacts, events and API keys: the actions every path (API, admin, engine, shell) uses."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import connection, transaction
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


# Keys a write never stores: the variables every template gets (a contact's own `email` or
# `unsubscribeUrl` would be shadowed or, worse, shadow them) and Plunk's `plunk_*`.
RESERVED_DATA_KEYS = frozenset({"id", "email", "unsubscribeUrl", "subscribeUrl", "manageUrl"})
RESERVED_DATA_PREFIX = "plunk_"


def contact_data_is_reserved(key: str) -> bool:
    return key in RESERVED_DATA_KEYS or key.startswith(RESERVED_DATA_PREFIX)


def contact_data_changes(data: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """What writing `data` into a contact's data means, for every write path (/v1/track's SQL
    and ORM paths, contact_upsert, the Update Contact step, the admin): returns (set, unset),
    applied as `(data || set) - unset`. Plunk's rules: `null` deletes the key, `""` changes
    nothing, reserved keys (`id`, `email`, the three page URLs, `plunk_*`) are dropped."""
    to_set: dict[str, Any] = {}
    to_unset: list[str] = []
    for key, value in (data or {}).items():
        if contact_data_is_reserved(key) or value == "":
            continue
        if value is None:
            to_unset.append(key)
        else:
            to_set[key] = value
    return to_set, to_unset


def _merged(current: dict[str, Any], to_set: dict[str, Any], to_unset: list[str]):
    merged = {**current, **to_set}
    for key in to_unset:
        merged.pop(key, None)
    return merged


# --- System events: contact.subscribed / contact.unsubscribed ----------------------------------
# contacts_app sits below workflows_app, so it can not start workflows itself. Every service
# here that changes `subscribed` reports a real flip to one recorder, in the transaction of the
# change; workflows_app registers its recorder (track_internal: store the event, start and
# resume workflows) in WorkflowsAppConfig.ready(). Without it the event is only stored.
# A plain callback rather than a Django signal: one receiver, called explicitly, easy to follow.

SystemEventRecorder = Callable[..., Any]
_system_event_recorder: SystemEventRecorder | None = None


def system_event_recorder_set(recorder: SystemEventRecorder | None) -> None:
    """recorder(contact_id=..., name=..., data=..., now=...) records a system event."""
    global _system_event_recorder
    _system_event_recorder = recorder


def system_event_record(
    *, contact_id: Any, name: str, data: dict[str, Any] | None = None, now: datetime | None = None
) -> None:
    """Records a system event (`contact.*`, `email.*`) for a contact, like a tracked event."""
    now = now or timezone.now()
    if _system_event_recorder is not None:
        _system_event_recorder(contact_id=contact_id, name=name, data=data or {}, now=now)
    else:
        Event.objects.create(contact_id=contact_id, name=name, data=data or {}, created_at=now)


def subscription_event_name(subscribed: bool) -> str:
    return "contact.subscribed" if subscribed else "contact.unsubscribed"


def _subscription_flipped(contact_id: Any, subscribed: bool, now: datetime) -> None:
    system_event_record(contact_id=contact_id, name=subscription_event_name(subscribed), now=now)


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
    """Create the contact or merge `data` into it (top-level keys, with contact_data_changes'
    rules); returns (contact, created).

    `subscribed` changes only when given; new contacts are subscribed unless told otherwise.
    With `may_resubscribe=False` (a public key) `subscribed=True` does not change an existing
    contact: only the contact may undo an unsubscribe. A real change of an existing contact's
    subscription records `contact.subscribed` / `contact.unsubscribed` in the same transaction.
    Raises ContactDataTooLarge, writing nothing, when the merged data would pass
    CONTACT_MAX_DATA_BYTES.
    """
    email = normalize_email(email)
    now = timezone.now()
    to_set, to_unset = contact_data_changes(data)
    with transaction.atomic():
        contact = Contact.objects.select_for_update().filter(email=email).first()
        if contact is None:
            if to_set:
                _check_data_size(to_set)
            contact, created = Contact.objects.get_or_create(
                email=email,
                defaults={
                    "subscribed": True if subscribed is None else subscribed,
                    "data": to_set,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            if created:
                return contact, True
            contact = Contact.objects.select_for_update().get(pk=contact.pk)
        if to_set or to_unset:
            merged = _merged(contact.data, to_set, to_unset)
            if to_set:
                _check_data_size(merged)
            contact.data = merged
        was_subscribed = contact.subscribed
        if subscribed is not None and (may_resubscribe or not subscribed):
            contact.subscribed = subscribed
        contact.updated_at = now
        contact.save(update_fields=["data", "subscribed", "updated_at"])
        if contact.subscribed != was_subscribed:
            _subscription_flipped(contact.pk, contact.subscribed, now)
    return contact, False


def contact_update_data(
    *,
    contact: Contact,
    set: dict[str, Any] | None = None,  # noqa: A002 - the workflow format's own word
    unset: list[str] | None = None,
    subscribed: bool | None = None,
) -> Contact:
    """Sets and removes data keys (`set` with contact_data_changes' rules: a `null` value
    removes its key) and may change `subscribed` (a real change records `contact.subscribed` /
    `contact.unsubscribed` in the same transaction). Raises ContactDataTooLarge, writing
    nothing, when the data would pass CONTACT_MAX_DATA_BYTES (only setting keys can grow it)."""
    now = timezone.now()
    to_set, nulls = contact_data_changes(set)
    to_unset = list(dict.fromkeys([*(unset or []), *nulls]))
    limit = settings.CONTACT_MAX_DATA_BYTES if to_set else 0
    if connection.vendor == "postgresql":
        # One statement (row lock, merge, write) instead of a transaction of four: this runs
        # for every Update Contact step, so it is on the engine's hot path. `old` reads the
        # subscription under the row lock, so a flip is seen exactly (only when one can happen:
        # then the statement and the event it records share a transaction).
        table = Contact._meta.db_table
        merged = "(c.data || %s::jsonb) - %s::text[]"
        changes: list[Any] = [json.dumps(to_set), to_unset]
        params: list[Any] = [contact.pk, *changes, subscribed, now, contact.pk]
        within_limit = ""
        if limit:  # the cap in the same statement: nothing is written past it
            within_limit = f" AND octet_length(({merged})::text) <= %s"
            params += [*changes, limit]
        sql = (
            f"WITH old AS (SELECT id, subscribed FROM {table} WHERE id = %s FOR UPDATE) "
            f"UPDATE {table} c SET data = {merged}, "
            "subscribed = COALESCE(%s, c.subscribed), updated_at = %s "
            f"FROM old WHERE c.id = %s AND c.id = old.id{within_limit} "
            "RETURNING c.id, c.email, c.subscribed, c.data, c.created_at, c.updated_at, "
            "old.subscribed"
        )
        with transaction.atomic() if subscribed is not None else nullcontext():
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                row = cursor.fetchone()
            if row is None:
                if limit and Contact.objects.filter(pk=contact.pk).exists():
                    raise ContactDataTooLarge(limit)
                raise Contact.DoesNotExist(f"contact {contact.pk} does not exist")
            values = list(row[:6])
            if isinstance(values[3], str):
                values[3] = json.loads(values[3])
            if values[2] != row[6]:
                _subscription_flipped(values[0], values[2], now)
        return Contact.from_db(
            connection.alias,
            ["id", "email", "subscribed", "data", "created_at", "updated_at"],
            values,
        )
    with transaction.atomic():
        fresh = Contact.objects.select_for_update().get(pk=contact.pk)
        data = _merged(fresh.data, to_set, to_unset)
        if limit:
            _check_data_size(data)
        fresh.data = data
        was_subscribed = fresh.subscribed
        if subscribed is not None:
            fresh.subscribed = subscribed
        fresh.updated_at = now
        fresh.save(update_fields=["data", "subscribed", "updated_at"])
        if fresh.subscribed != was_subscribed:
            _subscription_flipped(fresh.pk, fresh.subscribed, now)
    return fresh


def contact_replace(
    *, contact: Contact, email: str, subscribed: bool, data: dict[str, Any]
) -> Contact:
    """A person's edit of a whole contact (the admin form): `data` is the contact's data as it
    should be, written with contact_data_changes' rules (keys left out are removed, `null`
    removes, `""` leaves the key as it was, reserved keys are dropped). A real change of
    `subscribed` records its event. Raises ContactDataTooLarge, writing nothing."""
    now = timezone.now()
    to_set, to_unset = contact_data_changes(data)
    with transaction.atomic():
        fresh = Contact.objects.select_for_update().get(pk=contact.pk)
        kept = {key for key, value in data.items() if value == ""}
        gone = [key for key in fresh.data if key not in data and key not in kept]
        merged = _merged(fresh.data, to_set, [*to_unset, *gone])
        # Reserved keys already stored (written before these rules) go too.
        merged = {key: value for key, value in merged.items() if not contact_data_is_reserved(key)}
        if to_set:  # only setting keys can grow it
            _check_data_size(merged)
        was_subscribed = fresh.subscribed
        fresh.email = normalize_email(email)
        fresh.subscribed = subscribed
        fresh.data = merged
        fresh.updated_at = now
        fresh.save(update_fields=["email", "data", "subscribed", "updated_at"])
        if fresh.subscribed != was_subscribed:
            _subscription_flipped(fresh.pk, fresh.subscribed, now)
    return fresh


def contact_set_subscribed(*, contact: Contact, subscribed: bool) -> bool:
    """Subscribes or unsubscribes; returns whether it changed anything. A real change records
    `contact.subscribed` / `contact.unsubscribed` in the same transaction."""
    now = timezone.now()
    with transaction.atomic():
        changed = bool(
            Contact.objects.filter(pk=contact.pk)
            .exclude(subscribed=subscribed)
            .update(subscribed=subscribed, updated_at=now)
        )
        if changed:
            _subscription_flipped(contact.pk, subscribed, now)
    return changed


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


# The preference page (`manageUrl`) and the resubscribe page (`subscribeUrl`) have tokens of
# their own: a token signed for one page does not open another.
SUBSCRIBE_SALT = "contacts.subscribe"
MANAGE_SALT = "contacts.manage"


def subscribe_token(contact: Contact) -> str:
    return signing.dumps(str(contact.pk), salt=SUBSCRIBE_SALT, compress=True)


def subscribe_url(contact: Contact) -> str:
    path = reverse("subscribe", kwargs={"token": subscribe_token(contact)})
    return settings.PUBLIC_URL + path


def manage_token(contact: Contact) -> str:
    return signing.dumps(str(contact.pk), salt=MANAGE_SALT, compress=True)


def manage_url(contact: Contact) -> str:
    path = reverse("manage", kwargs={"token": manage_token(contact)})
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


@dataclass(frozen=True)
class RateLimit:
    """A key's standing in its current minute, for the RateLimit-* headers."""

    limit: int
    count: int
    reset: int  # seconds until the next window

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(0, self.limit - self.count)),
            "RateLimit-Reset": str(self.reset),
        }
        if self.exceeded:
            headers["Retry-After"] = str(self.reset)
        return headers


def ratelimit_of(key: KeyInfo) -> int:
    """Requests per minute allowed to `key` (0: none). Public keys are published in web pages:
    anyone may use them, so they are limited unless the key says otherwise; secret keys get
    SECRET_KEY_RATE_LIMIT_PER_MINUTE."""
    if key.rate_limit_per_minute is not None:
        return key.rate_limit_per_minute
    if key.kind == ApiKey.PUBLIC:
        return settings.PUBLIC_KEY_RATE_LIMIT_PER_MINUTE
    return settings.SECRET_KEY_RATE_LIMIT_PER_MINUTE


def ratelimit_hit(*, key: KeyInfo, now: datetime) -> RateLimit | None:
    """Counts one request in the key's current minute (every endpoint shares it). None when
    the key has no limit."""
    limit = ratelimit_of(key)
    if not limit:
        return None
    window = now.replace(second=0, microsecond=0)
    # One statement (PostgreSQL and SQLite alike): it is on /v1/track's hot path. Concurrent
    # calls serialise on the window's row.
    table = RateLimitWindow._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (api_key_id, window_start, count) VALUES (%s, %s, 1) "
            "ON CONFLICT (api_key_id, window_start) DO UPDATE "
            f"SET count = {table}.count + 1 RETURNING count",
            [key.id, window],
        )
        (count,) = cursor.fetchone()
    return RateLimit(limit=limit, count=count, reset=max(1, 60 - now.second))
