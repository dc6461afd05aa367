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
from django.db import IntegrityError, connection, transaction
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


# --- The contacts API's writes: PATCH, the privacy erase, the data overview -------------------


class ContactEmailTaken(ValueError):
    """Another contact already has the address; nothing was written."""

    def __init__(self, email: str):
        self.email = email
        super().__init__(f"Another contact already has the email address {email}.")


_KEEP: Any = object()  # contact_patch: "leave the data as it is"


def contact_patch(
    *,
    contact: Contact,
    email: str | None = None,
    data: dict[str, Any] | None = _KEEP,
    subscribed: bool | None = None,
) -> Contact:
    """Changes what is given, in one transaction: the address (ContactEmailTaken when another
    contact has it), the data (`None` wipes it; an object is merged with contact_data_changes'
    rules) and the subscription (a real flip records its event). Raises ContactDataTooLarge,
    writing nothing."""
    try:
        with transaction.atomic():
            fresh = Contact.objects.select_for_update().get(pk=contact.pk)
            new_email = normalize_email(email) if email is not None else fresh.email
            moving = new_email != fresh.email
            if moving and Contact.objects.filter(email=new_email).exists():
                raise ContactEmailTaken(new_email)
            if moving:
                fresh.email = new_email
                fresh.updated_at = timezone.now()
                fresh.save(update_fields=["email", "updated_at"])
            if data is None:
                fresh = contact_replace(
                    contact=fresh,
                    email=fresh.email,
                    subscribed=fresh.subscribed if subscribed is None else subscribed,
                    data={},
                )
                subscribed = None  # written
            merge = data if isinstance(data, dict) else None
            if merge or subscribed is not None:
                fresh = contact_update_data(contact=fresh, set=merge, subscribed=subscribed)
    except IntegrityError:
        # Another request took the address between the check and the write.
        if email is not None and Contact.objects.filter(email=normalize_email(email)).exists():
            raise ContactEmailTaken(normalize_email(email)) from None
        raise
    return fresh


# Erasing a contact cancels its runs first, which only workflows_app can do (it sits above this
# app), so it registers its eraser (workflows_app.services.contact_erase) in its AppConfig, like
# the system-event recorder above.
ContactEraser = Callable[..., dict[str, int]]
_contact_eraser: ContactEraser | None = None


def contact_eraser_set(eraser: ContactEraser | None) -> None:
    """eraser(contact=..., by=...) erases a contact with everything it owns."""
    global _contact_eraser
    _contact_eraser = eraser


def contact_privacy_erase(*, contact: Contact, by: str = "") -> dict[str, int]:
    """The privacy erase (workflows_app.services.contact_erase): cancels the contact's active
    runs, then removes it with its events, messages and executions."""
    if _contact_eraser is None:
        raise RuntimeError("No contact eraser registered: is workflows_app installed?")
    return _contact_eraser(contact=contact, by=by)


# The data overview reads the FIELDS_SAMPLE most recent contacts, not all of them: its cost stays
# bounded however many contacts there are.
FIELDS_SAMPLE = 1000
FIELD_VALUES_TOP = 50


@dataclass(frozen=True)
class DataField:
    field: str
    type: str  # string, number, boolean, object, array, null, or mixed
    contacts: int  # how many sampled contacts have it


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    return "array"


def _field_type(types: set[str]) -> str:
    """One JSON type for a field: its values' type, `null` only when every value is null,
    `mixed` when the values have several types."""
    types = types - {"null"} or types
    return types.pop() if len(types) == 1 else "mixed"


def _sample_sql() -> str:
    table = Contact._meta.db_table
    return f"SELECT data FROM {table} ORDER BY created_at DESC, id DESC LIMIT %s"


def contact_data_fields(*, sample: int | None = None) -> tuple[list[DataField], int]:
    """The top-level data keys of the `sample` (FIELDS_SAMPLE) most recent contacts, with
    their JSON type and how many of those contacts have each (most common first); and how
    many contacts were sampled."""
    sample = sample or FIELDS_SAMPLE
    types: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    if connection.vendor == "postgresql":
        sql = (
            f"WITH sample AS ({_sample_sql()}) "
            "SELECT e.key, array_agg(DISTINCT jsonb_typeof(e.value)), count(*) "
            "FROM sample, jsonb_each(CASE WHEN jsonb_typeof(sample.data) = 'object' "
            "THEN sample.data ELSE '{}'::jsonb END) e GROUP BY e.key"
        )
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM ({_sample_sql()}) s", [sample])
            (sampled,) = cursor.fetchone()
            cursor.execute(sql, [sample])
            for key, key_types, count in cursor.fetchall():
                types[key] = set(key_types)
                counts[key] = count
    else:
        sampled = 0
        rows = Contact.objects.order_by("-created_at", "-id").values_list("data", flat=True)
        for data in rows[:sample].iterator(chunk_size=100):
            sampled += 1
            for key, value in (data if isinstance(data, dict) else {}).items():
                types.setdefault(key, set()).add(_json_type(value))
                counts[key] = counts.get(key, 0) + 1
    fields = [DataField(key, _field_type(types[key]), counts[key]) for key in counts]
    fields.sort(key=lambda f: (-f.contacts, f.field))
    return fields, sampled


@dataclass(frozen=True)
class FieldValues:
    values: list[tuple[Any, int]]  # (value, how many sampled contacts have it), most first
    distinct: int  # how many distinct values, listed or not
    sampled: int  # how many contacts were read


def contact_data_field_values(
    *, field: str, sample: int | None = None, top: int | None = None
) -> FieldValues:
    """The `top` (FIELD_VALUES_TOP) most common values of data key `field` among the `sample`
    (FIELDS_SAMPLE) most recent contacts. Values are compared as JSON (`1` and `"1"` differ)."""
    sample, top = sample or FIELDS_SAMPLE, top or FIELD_VALUES_TOP
    sampled = Contact.objects.all()[:sample].count()
    if connection.vendor == "postgresql":
        sql = (
            f"WITH sample AS ({_sample_sql()}), "
            "hits AS (SELECT (data -> %s)::text AS value FROM sample "
            "WHERE jsonb_typeof(data) = 'object' AND data ? %s) "
            "SELECT value, count(*) AS n, count(*) OVER () FROM hits "
            "GROUP BY value ORDER BY n DESC, value LIMIT %s"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [sample, field, field, top])
            rows = cursor.fetchall()
        values = [(json.loads(text), n) for text, n, _ in rows]
        return FieldValues(values, rows[0][2] if rows else 0, sampled)
    seen: dict[str, tuple[Any, int]] = {}
    rows = Contact.objects.order_by("-created_at", "-id").values_list("data", flat=True)
    for data in rows[:sample].iterator(chunk_size=100):
        if isinstance(data, dict) and field in data:
            text = json.dumps(data[field], sort_keys=True)
            value, n = seen.get(text, (data[field], 0))
            seen[text] = (value, n + 1)
    ranked = sorted(seen.items(), key=lambda item: (-item[1][1], item[0]))
    return FieldValues([pair for _, pair in ranked[:top]], len(seen), sampled)
