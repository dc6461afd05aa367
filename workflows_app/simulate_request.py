"""The dry run's request (POST /v1/workflows/<id>/simulate and the canvas's Test panel): parsed
and checked here, every field at fault named, with /v1/track's limits for data."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings

from contacts_app import safejson
from contacts_app.emails import email_error, normalize_email
from contacts_app.services import contact_data_size
from workflows_app.event_names import current_event_name
from workflows_app.track import event_name_reserved

MAX_EVENTS = 100
HORIZON = timedelta(days=365)  # the virtual time a dry run covers
MADE_UP_EMAIL = "someone@example.com"
_BODY_KEYS = {"contact", "trigger", "events"}


class SimulationInvalid(ValueError):
    """The dry run's request is invalid; `fields` maps each field at fault to what is wrong."""

    def __init__(self, fields: dict[str, str]):
        self.fields = fields
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))


@dataclass(frozen=True)
class SimulatedEvent:
    name: str
    after: float  # seconds from the start
    data: dict[str, Any]  # the event's data, as a resumed run's context gets it
    contact_data: dict[str, Any]  # what it writes into the contact (/v1/track's persistent part)


@dataclass(frozen=True)
class SimulationRequest:
    """A validated dry-run body (simulation_parse). `email` names an existing contact; without
    it the contact is made up from `data` (and `made_up_email`, `subscribed`)."""

    email: str | None
    data: dict[str, Any] = field(default_factory=dict)
    made_up_email: str = MADE_UP_EMAIL
    subscribed: bool = True
    trigger_data: dict[str, Any] = field(default_factory=dict)
    events: list[SimulatedEvent] = field(default_factory=list)


# --- Parsing the request ----------------------------------------------------------------------


def _json_object(value: Any, where: str, errors: dict[str, str]) -> dict[str, Any]:
    """An object of event or contact data, within /v1/track's limits for `data`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors[where] = "Must be an object."
    elif safejson.depth(value) > settings.TRACK_MAX_DATA_DEPTH:
        errors[where] = f"Nested deeper than {settings.TRACK_MAX_DATA_DEPTH} levels."
    elif problem := safejson.unstorable(value):
        errors[where] = f"Cannot be stored: {problem}."
    elif len(json.dumps(value)) > settings.TRACK_MAX_DATA_BYTES:
        errors[where] = f"Larger than {settings.TRACK_MAX_DATA_BYTES} bytes."
    else:
        return value
    return {}


def track_data_split(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(event data, contact data) as /v1/track reads `data`: `{value, persistent}` is unwrapped,
    and only persistent values (and plain ones) are written into the contact."""
    event_data: dict[str, Any] = {}
    contact_data: dict[str, Any] = {}
    for key, value in data.items():
        wrapped = (
            isinstance(value, dict)
            and set(value) == {"value", "persistent"}
            and isinstance(value["persistent"], bool)
        )
        event_data[key] = value["value"] if wrapped else value
        if not wrapped or value["persistent"]:
            contact_data[key] = event_data[key]
    return event_data, contact_data


def _email(value: Any, where: str, errors: dict[str, str]) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 1000:
        errors[where] = "An email address."
        return ""
    email = normalize_email(value)
    if problem := email_error(email):
        errors[where] = problem
    return email


def _unknown_keys(value: dict[str, Any], allowed: set[str], where: str, errors: dict[str, str]):
    for key in value:
        if key not in allowed:
            name = f"{where}.{key}" if where else str(key)
            errors[name[:200]] = f"Unknown field; the fields are {', '.join(sorted(allowed))}."


def _parse_events(raw: Any, errors: dict[str, str]) -> list[SimulatedEvent]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        errors["events"] = "Must be a list of {name, after, data}."
        return []
    if len(raw) > MAX_EVENTS:
        errors["events"] = f"At most {MAX_EVENTS} events."
        return []
    events = []
    horizon = HORIZON.total_seconds()
    for index, item in enumerate(raw):
        where = f"events.{index}"
        if not isinstance(item, dict):
            errors[where] = "Must be an object {name, after, data}."
            continue
        _unknown_keys(item, {"name", "after", "data"}, where, errors)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            errors[f"{where}.name"] = "Required: a non-empty string."
        elif len(name) > settings.TRACK_MAX_EVENT_LENGTH:
            errors[f"{where}.name"] = f"At most {settings.TRACK_MAX_EVENT_LENGTH} characters."
        elif safejson.unstorable(name):
            errors[f"{where}.name"] = "Must not contain NUL characters or invalid Unicode."
        after = item.get("after", 0)
        if isinstance(after, bool) or not isinstance(after, int | float):
            errors[f"{where}.after"] = "Seconds from the start: a number."
        elif (isinstance(after, float) and not math.isfinite(after)) or after < 0:
            errors[f"{where}.after"] = "Seconds from the start: a finite number, 0 or more."
        elif after > horizon:
            errors[f"{where}.after"] = (
                f"At most {int(horizon)} seconds ({HORIZON.days} days, the dry run's horizon)."
            )
        data = _json_object(item.get("data"), f"{where}.data", errors)
        if not any(key.startswith(f"{where}.") or key == where for key in errors):
            name = current_event_name(str(name).strip())
            event_data, contact_data = track_data_split(data)
            # A system event (email.open...) is recorded, not tracked: it writes no contact data.
            if event_name_reserved(name):
                contact_data = {}
            events.append(SimulatedEvent(name, float(after), event_data, contact_data))
    # In time order; events at the same moment in the order listed.
    return sorted(events, key=lambda e: e.after)


def simulation_parse(body: Any) -> SimulationRequest:
    """Validates a dry-run body; raises SimulationInvalid naming every field at fault.

    `{"contact": {"email"} | {"data", "email"?, "subscribed"?}, "trigger": {"data"}?,
    "events": [{"name", "after", "data"?}]?}`: an existing contact by email, or one made up
    from data (and optionally an address, default someone@example.com, and a subscription,
    default subscribed)."""
    if not isinstance(body, dict):
        raise SimulationInvalid({"body": "Must be a JSON object {contact, trigger?, events?}."})
    errors: dict[str, str] = {}
    _unknown_keys(body, _BODY_KEYS, "", errors)

    contact = body.get("contact")
    email: str | None = None
    data: dict[str, Any] = {}
    made_up_email, subscribed = MADE_UP_EMAIL, True
    if not isinstance(contact, dict):
        errors["contact"] = (
            "Required: {email} for an existing contact, or {data, email?} for a made-up one."
        )
    elif "data" in contact:
        _unknown_keys(contact, {"data", "email", "subscribed"}, "contact", errors)
        data = _json_object(contact["data"], "contact.data", errors)
        if contact.get("email") is not None:
            made_up_email = _email(contact["email"], "contact.email", errors)
        if contact.get("subscribed") is not None:
            if isinstance(contact["subscribed"], bool):
                subscribed = contact["subscribed"]
            else:
                errors["contact.subscribed"] = "Must be true or false."
        if data and contact_data_size(data) > settings.CONTACT_MAX_DATA_BYTES > 0:
            errors["contact.data"] = (
                f"Larger than {settings.CONTACT_MAX_DATA_BYTES} bytes (CONTACT_MAX_DATA_BYTES)."
            )
    else:
        _unknown_keys(contact, {"email"}, "contact", errors)
        email = _email(contact.get("email"), "contact.email", errors)

    trigger = body.get("trigger")
    trigger_data: dict[str, Any] = {}
    if trigger is not None:
        if not isinstance(trigger, dict):
            errors["trigger"] = "Must be an object {data}."
        else:
            _unknown_keys(trigger, {"data"}, "trigger", errors)
            trigger_data = _json_object(trigger.get("data"), "trigger.data", errors)

    events = _parse_events(body.get("events"), errors)
    if errors:
        raise SimulationInvalid(errors)
    return SimulationRequest(
        email=email,
        data=data,
        made_up_email=made_up_email,
        subscribed=subscribed,
        trigger_data=trigger_data,
        events=events,
    )
