"""The send policy for marketing mail: a frequency cap across every workflow, and quiet hours in
the contact's time zone. Transactional mail is never held back and never counts.

The questions are plain functions of a contact and a time (`quiet_until`,
`frequency_cap_exceeded`), so the Send Email step and a dry run ask the same ones. The cap is
enforced by the ledger (templates_app.services.message_send), which calls
`frequency_cap_check` in the transaction that inserts the message: the check and the insert
hold the contact's row lock, so two workflows sending to one contact at the same moment take
turns and a cap of 1 lets one through.

config/settings.py validates the settings with the parsers below at start-up, before the apps
load: so this module imports models only inside the functions that query them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, available_timezones

from django.conf import settings
from django.core.exceptions import ValidationError

if TYPE_CHECKING:
    from contacts_app.models import Contact

# A workflow's frequency_cap: empty for MARKETING_FREQUENCY_CAP, this word for no cap at all.
NO_CAP = "none"

_UNITS = {
    "s": (1, "second"),
    "m": (60, "minute"),
    "h": (3600, "hour"),
    "d": (86400, "day"),
    "w": (604800, "week"),
}
_CAP = re.compile(r"(\d{1,6})/(\d{1,6})([smhdw])")
_MAX_WINDOW = timedelta(days=366)
_HOURS = re.compile(r"(\d\d):(\d\d)-(\d\d):(\d\d)")


@dataclass(frozen=True)
class FrequencyCap:
    """At most `limit` marketing emails to a contact in any rolling `window`."""

    limit: int
    amount: int
    unit: str  # s, m, h, d or w
    text: str  # as written, e.g. "3/7d"

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.amount * _UNITS[self.unit][0])

    def describe_window(self) -> str:
        word = _UNITS[self.unit][1]
        return f"{self.amount} {word}{'' if self.amount == 1 else 's'}"


def parse_frequency_cap(text: str) -> FrequencyCap | None:
    """`<limit>/<amount><unit>` (units s, m, h, d, w), e.g. `3/7d`: at most 3 marketing emails
    per contact in any rolling 7 days. Empty: no cap. Raises ValueError saying what is
    expected."""
    text = text.strip()
    if not text:
        return None
    match = _CAP.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text[:40]!r} is not a frequency cap: write <emails>/<period> with a unit of s, "
            "m, h, d or w, e.g. 3/7d (at most 3 marketing emails per contact in any 7 days)"
        )
    limit, amount, unit = int(match[1]), int(match[2]), match[3]
    if limit < 1 or amount < 1:
        raise ValueError(f"{text!r}: the number of emails and the period must be at least 1")
    cap = FrequencyCap(limit, amount, unit, text)
    if cap.window > _MAX_WINDOW:
        raise ValueError(f"{text!r}: the period may be at most {_MAX_WINDOW.days} days")
    return cap


def parse_quiet_hours(text: str) -> tuple[time, time] | None:
    """`HH:MM-HH:MM` (24-hour clock), e.g. `21:00-08:00`, which crosses midnight. Empty: no
    quiet hours. Raises ValueError saying what is expected."""
    text = text.strip()
    if not text:
        return None
    match = _HOURS.fullmatch(text.replace(" ", ""))
    try:
        if match is None:
            raise ValueError
        start = time(int(match[1]), int(match[2]))
        end = time(int(match[3]), int(match[4]))
    except ValueError:
        raise ValueError(
            f"{text[:40]!r} is not a window of the day: write HH:MM-HH:MM on a 24-hour clock, "
            "e.g. 21:00-08:00"
        ) from None
    if start == end:
        raise ValueError(f"{text!r}: the start and the end must differ")
    return start, end


def parse_timezone(name: str) -> ZoneInfo:
    """An IANA time zone name (`Europe/Paris`, `UTC`); ValueError for anything else."""
    zone = _zone(name.strip())
    if zone is None:
        raise ValueError(f"{name[:60]!r} is not an IANA time zone name (e.g. Europe/Paris, UTC)")
    return zone


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    # Only IANA's own names: the tz database also holds files such as "localtime" (the
    # server's own zone), "posixrules" and "right/..." that are not a place's time.
    if not name or len(name) > 64 or name not in _iana_names():
        return None
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # unknown, not a key (a path), a folder ("America")
        return None


@functools.cache
def _iana_names() -> frozenset[str]:
    return frozenset(available_timezones()) - {"localtime", "Factory", "posixrules"}


# The settings, parsed once per value (tests change them).
_cap_setting = functools.lru_cache(maxsize=8)(parse_frequency_cap)
_quiet_setting = functools.lru_cache(maxsize=8)(parse_quiet_hours)


def frequency_cap_for(override: str) -> FrequencyCap | None:
    """The cap a workflow's sends obey: its own `override` (Workflow.frequency_cap), none at
    all for "none", MARKETING_FREQUENCY_CAP when empty."""
    override = override.strip()
    if override.lower() == NO_CAP:
        return None
    if override:
        return _cap_setting(override)
    return _cap_setting(settings.MARKETING_FREQUENCY_CAP)


def validate_frequency_cap_override(value: str) -> None:
    """Workflow.frequency_cap's validator: empty, "none", or a cap like 3/7d."""
    if value.strip().lower() == NO_CAP:
        return
    try:
        parse_frequency_cap(value)
    except ValueError as exc:
        raise ValidationError(
            f"{exc}. Leave it empty to use MARKETING_FREQUENCY_CAP, or write {NO_CAP!r} for no "
            "cap on this workflow."
        ) from None


# --- Quiet hours ------------------------------------------------------------------------------


def contact_timezone(contact: Contact) -> ZoneInfo:
    """The contact's `timezone` data key when it is an IANA name, else DEFAULT_TIMEZONE."""
    data = contact.data if isinstance(contact.data, dict) else {}
    name = data.get("timezone")
    zone = _zone(name.strip()) if isinstance(name, str) else None
    return zone or parse_timezone(settings.DEFAULT_TIMEZONE)


def quiet_until(contact: Contact, now: datetime) -> datetime | None:
    """When QUIET_HOURS end for `contact` if `now` falls inside them (in UTC), else None.

    Read on the contact's wall clock, so a daylight-saving change moves the window with the
    clock: 21:00-08:00 in Europe/Paris opens at 08:00 local time on the day the clocks change
    too. The window includes its start and excludes its end (it is open again at 08:00)."""
    window = _quiet_setting(settings.QUIET_HOURS)
    if window is None:
        return None
    start, end = window
    zone = contact_timezone(contact)
    local = now.astimezone(zone)
    wall = local.time()
    if start < end:
        inside, day = start <= wall < end, local.date()
    else:  # crosses midnight: from the evening to the next morning
        inside = wall >= start or wall < end
        day = local.date() + timedelta(days=1) if wall >= start else local.date()
    if not inside:
        return None
    opening = _opening(day, end, zone, now)
    return opening if opening > now else None  # never a hold already over: it would loop


def _opening(day: date, end: time, zone: ZoneInfo, now: datetime) -> datetime:
    """The first moment after `now` when the wall clock in `zone` shows `end` on `day`.

    A time the clocks pass twice (autumn) is taken the first time, or the second if the first
    is over; a time they jump over (spring) opens the window at the jump."""
    wall = datetime.combine(day, end)
    opening = wall.replace(tzinfo=zone).astimezone(UTC)
    if opening.astimezone(zone).replace(tzinfo=None) != wall:  # skipped: back to the jump
        while (opening - timedelta(minutes=1)).astimezone(zone).replace(tzinfo=None) >= wall:
            opening -= timedelta(minutes=1)
    if opening <= now:
        opening = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return opening


# --- The frequency cap ------------------------------------------------------------------------


class FrequencyCapped(Exception):
    """Not sent: the contact already had the cap's number of marketing emails in its window."""

    reason = "frequency cap"


def marketing_sent_count(*, contact: Contact, since: datetime) -> int:
    """Marketing emails to `contact` since `since` (exclusive) that were sent or are being
    sent, from any workflow or the API; failed ones do not count, nor mail to another address
    (a Send Email step's CUSTOM recipient) and transactional mail."""
    from django.db.models import Q

    from templates_app.models import Message, Template

    marketing = Q(email_type=Template.MARKETING) | Q(
        email_type="", template__type=Template.MARKETING
    )
    return (
        Message.objects.filter(marketing, contact_id=contact.pk, created_at__gt=since)
        .filter(to_email__iexact=contact.email)
        .exclude(status=Message.FAILED)
        .count()
    )


def frequency_cap_exceeded(
    *, contact: Contact, cap: FrequencyCap | None, now: datetime
) -> str | None:
    """Why a marketing email to `contact` at `now` would go over `cap` ("frequency cap: ..."),
    or None when it may be sent. Reads only: `frequency_cap_check` is the locked form."""
    if cap is None:
        return None
    sent = marketing_sent_count(contact=contact, since=now - cap.window)
    if sent < cap.limit:
        return None
    return (
        f"frequency cap: {sent} marketing email{'' if sent == 1 else 's'} to this contact in "
        f"the last {cap.describe_window()} (cap {cap.text})"
    )


def frequency_cap_check(*, contact: Contact, cap: FrequencyCap, now: datetime) -> None:
    """Raises FrequencyCapped when a marketing email to `contact` now would go over `cap`.

    Call it inside the transaction that inserts the ledger row: it first locks the contact's
    row (FOR NO KEY UPDATE: inserts of its events and messages do not wait on it), so a
    concurrent send to the same contact waits here until this one's row is committed, and
    then counts it. SQLite has no row locks: it writes one transaction at a time, which
    narrows the race but does not close it (SQLite is for a first run on a laptop)."""
    from contacts_app.models import Contact

    list(Contact.objects.select_for_update(no_key=True).filter(pk=contact.pk).values_list("pk"))
    reason = frequency_cap_exceeded(contact=contact, cap=cap, now=now)
    if reason is not None:
        raise FrequencyCapped(reason)
