"""POST /v1/track: validate, then record the contact and event and start/resume executions.

It does database work only: new and resumed executions get `wake_at = now`, which makes the
execution row itself the outbox the clock hands to workers. Nothing is sent in the request.

On PostgreSQL all of it is one statement (key check, idempotency claim, contact upsert, event
insert, starts, resumes): one round trip, atomic without BEGIN/COMMIT. The cap on contact
data is checked inside it (contact_data_capped() raises, so a refused call writes nothing).
Contact data is written with contacts_app's rules (contact_data_changes: `null` deletes,
`""` is ignored, reserved keys are dropped) as `(data || set) - unset`. A call that may change
an existing contact's subscription also reads the old value under the row lock and, on a real
change, records `contact.subscribed` / `contact.unsubscribed` and starts and resumes workflows
for it, in the same statement.
Elsewhere (SQLite) the same effects come from the ORM services in one transaction; tests run
both on PostgreSQL.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from contacts_app import safejson
from contacts_app.emails import email_error
from contacts_app.models import ApiKey, IdempotencyKey
from contacts_app.services import (
    ContactDataTooLarge,
    KeyInfo,
    contact_data_changes,
    contact_upsert,
    event_record,
    normalize_email,
    subscription_event_name,
)
from workflows_app import engine

# Raised by contact_data_capped() (contacts_app migration 0002) inside the one statement.
CONTACT_DATA_TOO_LARGE_SQLSTATE = "LC413"
# Raised on purpose (a division by zero) by the statement when a contact it could have flipped
# was created by a concurrent call after the statement's snapshot: the old subscription is
# unknown, so the whole statement is undone and run again (it then sees the contact).
SUBSCRIPTION_RACE_SQLSTATE = "22012"

# Names only the system records (Plunk's): `email.*`, the contact events, segment changes.
RESERVED_EVENT = re.compile(r"email\..*|contact\.(un)?subscribed|segment\..+\.(entry|exit)", re.S)


def event_name_reserved(name: str) -> bool:
    return RESERVED_EVENT.fullmatch(name) is not None


class TrackRejected(Exception):
    def __init__(self, code: str, message: str, fields: dict[str, str] | None = None):
        self.code = code
        self.message = message
        self.fields = fields
        super().__init__(message)


class KeyRevoked(TrackRejected):
    def __init__(self):
        super().__init__("authentication_failed", "Invalid or revoked API key.")


class DataTooLarge(TrackRejected):
    def __init__(self, limit: int):
        message = (
            f"The contact's data would be larger than {limit} bytes as JSON "
            "(CONTACT_MAX_DATA_BYTES); nothing was recorded."
        )
        super().__init__("validation_error", message, {"data": message})


class DuplicateRequest(TrackRejected):
    def __init__(self):
        super().__init__(
            "duplicate_request",
            "A request with this Idempotency-Key was already accepted in the last 24 hours; "
            "nothing new was recorded.",
        )


@dataclass(frozen=True)
class TrackInput:
    event: str
    email: str
    subscribed: bool | None
    contact_data: dict[str, Any]  # persistent values only: merged into the contact
    event_data: dict[str, Any]  # every value, unwrapped: the event and the workflow context


@dataclass(frozen=True)
class TrackResult:
    contact_id: str
    event_id: str
    timestamp: datetime
    started: int
    resumed: int


def track_loads(raw: bytes) -> Any:
    """Decodes a /v1/track body with safejson's rules (no NaN/Infinity, no out-of-range numbers,
    bounded nesting); raises TrackRejected("invalid_json"), naming the field when it can."""
    try:
        return safejson.loads(raw)
    except safejson.JsonRejected as exc:
        message = f"The body is not valid JSON: {exc}."
        raise TrackRejected("invalid_json", message, _field_at_fault(raw, message)) from None
    except ValueError:
        raise TrackRejected("invalid_json", "The body is not valid JSON.") from None


_REFUSED = object()  # stands for a number safejson refuses, in a leniently read body


def _lenient_float(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else _REFUSED


def _lenient_int(text: str) -> Any:
    return _REFUSED if len(text.lstrip("-")) > 100 else int(text)


def _field_at_fault(raw: bytes, message: str) -> dict[str, str] | None:
    """The top-level field holding what safejson refused: the body read again leniently (each
    refused number replaced by a marker), then each field searched. Runs only for a refused
    body; None when the body itself is at fault (e.g. nested too deep to read at all)."""
    try:
        body = json.loads(
            raw,
            parse_constant=lambda _: _REFUSED,
            parse_float=_lenient_float,
            parse_int=_lenient_int,
        )
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    for name, value in body.items():
        if safejson.depth(value) >= safejson.MAX_DEPTH or _holds_refused(value):
            return {str(name)[:100]: message}
    return None


def _holds_refused(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if item is _REFUSED:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _is_wrapped(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and "value" in value
        and "persistent" in value
        and len(value) == 2
        and isinstance(value["persistent"], bool)
    )


def track_parse(body: Any) -> TrackInput:
    """Validates a decoded /v1/track body; raises TrackRejected naming every field at fault."""
    if not isinstance(body, dict):
        raise TrackRejected("invalid_body", "The body must be a JSON object.")
    errors: dict[str, str] = {}

    event = body.get("event")
    if not isinstance(event, str) or not event.strip():
        errors["event"] = "Required: a non-empty string."
    elif len(event) > settings.TRACK_MAX_EVENT_LENGTH:
        errors["event"] = f"At most {settings.TRACK_MAX_EVENT_LENGTH} characters."
    elif safejson.unstorable(event):
        errors["event"] = "Must not contain NUL characters or invalid Unicode."
    elif event_name_reserved(event.strip()):
        errors["event"] = (
            "reserved_event: names starting with `email.`, `contact.subscribed`, "
            "`contact.unsubscribed` and `segment.<name>.entry` / `.exit` are system events; "
            "only the system records them."
        )

    email = body.get("email")
    if not isinstance(email, str) or not email.strip():
        errors["email"] = "Required: an email address."
    elif len(email) > 1000:  # normalising a megabyte of text is work for nothing
        errors["email"] = "Not a valid email address."
    else:
        email = normalize_email(email)
        if problem := email_error(email):
            errors["email"] = problem

    subscribed = body.get("subscribed")
    if subscribed is not None and not isinstance(subscribed, bool):
        errors["subscribed"] = "Must be true or false."

    data = body.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors["data"] = "Must be an object."
    elif safejson.depth(data) > settings.TRACK_MAX_DATA_DEPTH:
        errors["data"] = f"Nested deeper than {settings.TRACK_MAX_DATA_DEPTH} levels."
    elif safejson.unstorable(data):
        errors["data"] = "Strings must not contain NUL characters or invalid Unicode."
    elif len(json.dumps(data)) > settings.TRACK_MAX_DATA_BYTES:
        errors["data"] = f"Larger than {settings.TRACK_MAX_DATA_BYTES} bytes."

    if errors:
        raise TrackRejected("validation_error", "Invalid request: " + ", ".join(errors), errors)

    contact_data: dict[str, Any] = {}
    event_data: dict[str, Any] = {}
    for key, value in data.items():
        if _is_wrapped(value):
            event_data[key] = value["value"]
            if value["persistent"]:
                contact_data[key] = value["value"]
        else:
            event_data[key] = value
            contact_data[key] = value
    assert isinstance(event, str) and isinstance(email, str)
    return TrackInput(event.strip(), email, subscribed, contact_data, event_data)


def track(
    *,
    key: KeyInfo,
    payload: TrackInput,
    idempotency_key: str | None = None,
    now: datetime | None = None,
    fast: bool | None = None,
) -> TrackResult:
    now = now or timezone.now()
    if fast is None:
        fast = connection.vendor == "postgresql"
    if fast:
        return _track_one_statement(key, payload, idempotency_key, now)
    return _track_orm(key, payload, idempotency_key, now)


def _track_orm(key: KeyInfo, p: TrackInput, idempotency_key: str | None, now: datetime):
    try:
        with transaction.atomic():
            if not ApiKey.objects.filter(pk=key.id, revoked_at__isnull=True).exists():
                raise KeyRevoked()
            if idempotency_key is not None:
                _claim_idempotency_key(key.id, idempotency_key, now)
            contact, _ = contact_upsert(
                email=p.email,
                subscribed=p.subscribed,
                data=p.contact_data,
                may_resubscribe=key.kind != ApiKey.PUBLIC,
            )
            event = event_record(contact=contact, name=p.event, data=p.event_data, at=now)
            started = engine.executions_start(contact=contact, event=event, now=now)
            resumed = engine.executions_resume(contact=contact, event=event, now=now)
    except ContactDataTooLarge as exc:  # the transaction rolled back: nothing was recorded
        raise DataTooLarge(exc.limit) from None
    return TrackResult(str(contact.pk), str(event.pk), now, started, resumed)


def track_internal(
    *, contact_id: Any, name: str, data: dict[str, Any], now: datetime | None = None
) -> TrackResult:
    """Records an event that did not come through the API (a system event: `email.open` from
    a provider webhook, `contact.unsubscribed`, ...) with the same effects: it starts and
    resumes workflows like a tracked one."""
    now = now or timezone.now()
    from contacts_app.models import Contact

    if connection.vendor == "postgresql":
        # One statement: every email sent records `email.sent`, so this is on the send path.
        params = {
            "event_id": uuid.uuid4(),
            "contact_id": contact_id,
            "event": name,
            "event_data": json.dumps(data),
            "now": now,
        }
        if connection.in_atomic_block:
            with transaction.atomic():  # a savepoint: an error leaves the caller's work intact
                row = _execute(_INTERNAL_SQL, params)
        else:
            row = _execute(_INTERNAL_SQL, params)
        event_id, started, resumed = row
        if event_id is None:
            raise Contact.DoesNotExist(f"contact {contact_id} does not exist")
        return TrackResult(str(contact_id), str(event_id), now, started, resumed)
    with transaction.atomic():
        contact = Contact.objects.get(pk=contact_id)
        event = event_record(contact=contact, name=name, data=data, at=now)
        started = engine.executions_start(contact=contact, event=event, now=now)
        resumed = engine.executions_resume(contact=contact, event=event, now=now)
    return TrackResult(str(contact.pk), str(event.pk), now, started, resumed)


def _claim_idempotency_key(key_id: int, idempotency_key: str, now: datetime) -> None:
    cutoff = now - timedelta(seconds=settings.IDEMPOTENCY_WINDOW_SECONDS)
    try:
        with transaction.atomic():
            IdempotencyKey.objects.create(api_key_id=key_id, key=idempotency_key, created_at=now)
            return
    except IntegrityError:
        pass
    if not IdempotencyKey.objects.filter(
        api_key_id=key_id, key=idempotency_key, created_at__lt=cutoff
    ).update(created_at=now):
        raise DuplicateRequest()


# The key check gates every write: a key revoked a moment ago writes nothing.
_KEY = """
k AS (
  SELECT 1 FROM contacts_app_apikey WHERE id = %(key_id)s AND revoked_at IS NULL
)"""
# With an Idempotency-Key, the claim gates every write instead (and is itself gated on the key).
_KEY_AND_IDEMPOTENCY = """
k AS (
  INSERT INTO contacts_app_idempotencykey (api_key_id, key, created_at)
  SELECT %(key_id)s, %(idem)s, %(now)s
  WHERE EXISTS (SELECT 1 FROM contacts_app_apikey WHERE id = %(key_id)s AND revoked_at IS NULL)
  ON CONFLICT (api_key_id, key) DO UPDATE SET created_at = EXCLUDED.created_at
    WHERE contacts_app_idempotencykey.created_at < %(cutoff)s
  RETURNING 1
)"""
_CONTACT = """,
c AS (
  INSERT INTO contacts_app_contact (id, email, subscribed, data, created_at, updated_at)
  SELECT %(contact_id)s, %(email)s, COALESCE(%(subscribed)s, true),
         contact_data_capped(%(contact_data)s::jsonb, %(max_data)s::int), %(now)s, %(now)s
  FROM k{old_join}
  ON CONFLICT (email) DO UPDATE SET
    data = contact_data_capped(
      (contacts_app_contact.data || EXCLUDED.data) - %(unset)s::text[], %(max_data)s::int),
    subscribed = COALESCE(%(subscribed_existing)s, contacts_app_contact.subscribed),
    updated_at = EXCLUDED.updated_at
  RETURNING id, subscribed
),"""
_EVENT = """
e AS (
  INSERT INTO contacts_app_event (id, contact_id, name, data, created_at)
  SELECT %(event_id)s, c.id, %(event)s, %(event_data)s::jsonb, %(now)s FROM c
  RETURNING id, contact_id
),"""
# A call that may flip an existing contact: `old` reads its subscription under a row lock (the
# one the upsert's update takes anyway; a locking read returns the latest committed row, not
# the snapshot's, and the lock is held until the statement ends), and is joined into the
# upsert's source so that it is read before the upsert writes. A flip is an
# existing contact whose subscription differs afterwards: its event (`flip`) gets the same
# starts and resumes as a tracked event (engine.START_AND_RESUME_SQL, renamed).
_OLD = """,
old AS (
  SELECT id, subscribed FROM contacts_app_contact WHERE email = %(email)s FOR NO KEY UPDATE
)"""
_OLD_JOIN = " LEFT JOIN old ON true"
_FLIP = """
flip AS (
  INSERT INTO contacts_app_event (id, contact_id, name, data, created_at)
  SELECT %(flip_id)s, c.id, %(flip)s, '{}'::jsonb, %(now)s
  FROM c JOIN old ON old.id = c.id
  WHERE old.subscribed IS DISTINCT FROM c.subscribed
  RETURNING id, contact_id
),"""


def _renamed_for_flip(sql: str) -> str:
    """engine.START_AND_RESUME_SQL for the `flip` event: CTE `e` -> `flip`, its parameters ->
    flip's, its members `started`/`resumed` -> `flip_started`/`flip_resumed`."""
    out = sql.replace("%(event_data)s", "%(flip_data)s").replace("%(event)s", "%(flip)s")
    out = re.sub(r"\be\b(?=[.\s,)]|$)", "flip", out)
    out = re.sub(r"\b(started|resumed) AS \(", r"flip_\1 AS (", out)
    return out


_FLIP_START_AND_RESUME = ",\n" + _renamed_for_flip(engine.START_AND_RESUME_SQL).lstrip("\n")
_SELECT = """
SELECT (SELECT id FROM c), (SELECT id FROM e),
       (SELECT count(*) FROM started){flip_started},
       (SELECT count(*) FROM resumed){flip_resumed},
       EXISTS (SELECT 1 FROM contacts_app_apikey
               WHERE id = %(key_id)s AND revoked_at IS NULL){raced}
"""
# The counts are the tracked event's, as on the ORM path (a data-modifying CTE runs whether or
# not it is read). `raced` divides by zero when the contact was created by a concurrent call
# after this statement's snapshot (c updated a row that `old` did not see).
_SELECT_FLIP = _SELECT.format(
    flip_started="",
    flip_resumed="",
    raced=""",
       1 / (CASE WHEN EXISTS (SELECT 1 FROM c WHERE c.id <> %(contact_id)s)
                  AND NOT EXISTS (SELECT 1 FROM old) THEN 0 ELSE 1 END)""",
)


def _statement(*, idempotent: bool, flip: bool) -> str:
    key = _KEY_AND_IDEMPOTENCY if idempotent else _KEY
    if not flip:
        record = _CONTACT.format(old_join="") + _EVENT
        select = _SELECT.format(flip_started="", flip_resumed="", raced="")
        return "WITH" + key + record + engine.START_AND_RESUME_SQL + select
    record = _OLD + _CONTACT.format(old_join=_OLD_JOIN) + _EVENT + _FLIP
    return (
        "WITH" + key + record + engine.START_AND_RESUME_SQL + _FLIP_START_AND_RESUME + _SELECT_FLIP
    )


# track_internal's: the event of an existing contact, with its starts and resumes.
_INTERNAL_SQL = (
    """WITH
e AS (
  INSERT INTO contacts_app_event (id, contact_id, name, data, created_at)
  SELECT %(event_id)s, id, %(event)s, %(event_data)s::jsonb, %(now)s
  FROM contacts_app_contact WHERE id = %(contact_id)s
  RETURNING id, contact_id
),"""
    + engine.START_AND_RESUME_SQL
    + """
SELECT (SELECT id FROM e), (SELECT count(*) FROM started), (SELECT count(*) FROM resumed)"""
)
_SQL = {
    (idempotent, flip): _statement(idempotent=idempotent, flip=flip)
    for idempotent in (False, True)
    for flip in (False, True)
}


class _PreparedCursor(psycopg.Cursor):
    """Server-side binding, prepared on first use: the statement is parsed and planned once per
    connection instead of on every request (planning was about half its database time)."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        return super().execute(query, params, prepare=True, binary=binary)


def _statement_cursor():
    """A Django cursor (health check, reconnect, error translation, query logging) around a
    psycopg cursor that binds server-side, and prepares when DATABASE_PREPARED_STATEMENTS is on
    (turn it off behind a pooler that does not support prepared statements)."""
    if not settings.DATABASE_PREPARED_STATEMENTS:
        return connection.cursor()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        # What connection.cursor() does, with our cursor class (Django has no hook for it).
        return connection._prepare_cursor(  # type: ignore[attr-defined]
            _PreparedCursor(connection.connection)
        )


def _track_one_statement(key: KeyInfo, p: TrackInput, idempotency_key: str | None, now: datetime):
    to_set, to_unset = contact_data_changes(p.contact_data)
    # A public key may not undo an unsubscribe: its `true` leaves an existing contact as is.
    subscribed_existing = None if p.subscribed and key.kind == ApiKey.PUBLIC else p.subscribed
    params: dict[str, Any] = {
        "key_id": key.id,
        "contact_id": uuid.uuid4(),
        "event_id": uuid.uuid4(),
        "email": p.email,
        "subscribed": p.subscribed,
        "subscribed_existing": subscribed_existing,
        "contact_data": json.dumps(to_set),
        "unset": to_unset,
        # Data that adds no keys cannot grow the contact: skip measuring it (0: no check).
        "max_data": settings.CONTACT_MAX_DATA_BYTES if to_set else 0,
        "event_data": json.dumps(p.event_data),
        "event": p.event,
        "now": now,
    }
    # Only a call that may change an existing contact's subscription pays for the flip check.
    flip = subscribed_existing is not None
    if flip:
        params["flip_id"] = uuid.uuid4()
        params["flip"] = subscription_event_name(bool(subscribed_existing))
        params["flip_data"] = "{}"
    if idempotency_key is not None:
        params["idem"] = idempotency_key
        params["cutoff"] = now - timedelta(seconds=settings.IDEMPOTENCY_WINDOW_SECONDS)
    sql = _SQL[(idempotency_key is not None, flip)]
    for attempt in range(3):
        try:
            if connection.in_atomic_block:
                # Inside a caller's transaction a refusal must not abort it: a savepoint. The
                # view runs in autocommit, where the statement alone is atomic and stays one
                # round trip.
                with transaction.atomic():
                    row = _execute(sql, params)
            else:
                row = _execute(sql, params)
            break
        except DatabaseError as exc:
            sqlstate = getattr(exc.__cause__, "sqlstate", None)
            if sqlstate == CONTACT_DATA_TOO_LARGE_SQLSTATE:
                raise DataTooLarge(settings.CONTACT_MAX_DATA_BYTES) from None
            if flip and sqlstate == SUBSCRIPTION_RACE_SQLSTATE and attempt < 2:
                continue  # nothing was written; the contact is visible to the next attempt
            raise
    contact_id, event_id, started, resumed, key_valid = row[:5]
    if contact_id is None:
        if not key_valid:
            raise KeyRevoked()
        raise DuplicateRequest()
    return TrackResult(str(contact_id), str(event_id), now, started, resumed)


def _execute(sql: str, params: dict[str, Any]) -> tuple:
    with _statement_cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()
