"""Email addresses as contacts are keyed by: one normal form for every path (track, API, admin).

The local part is lower-cased (and NFC-normalised); the domain is stored in its IDNA ASCII form
(UTS #46 mapping, then punycode), so `ann@MÜNCHEN.de`, `ann@münchen.de` and
`ann@xn--mnchen-3ya.de` are one contact, and lower-casing never leaves a stray combining
character in the domain (`İ`.lower() is `i` + U+0307). An ASCII domain is what every mail
transport sends to, with or without SMTPUTF8.
"""

from __future__ import annotations

import unicodedata

import idna
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from contacts_app.safejson import unstorable

MAX_LENGTH = 254  # RFC 5321 path limit, as Django's EmailField
MAX_LOCAL_PART = 64


def _ascii_domain(domain: str) -> str:
    """The domain's IDNA ASCII form; raises idna.IDNAError (a UnicodeError) when it has none."""
    if domain.isascii() and "xn--" not in domain.lower():
        return domain.lower()  # the common case: nothing to map, no idna call
    return idna.encode(domain, uts46=True).decode("ascii")


def normalize_email(email: str) -> str:
    """The stored form of an address. Never raises: an address whose domain has no IDNA form
    keeps a lower-cased domain, and email_error() says what is wrong with it."""
    email = email.strip()
    local, at, domain = email.rpartition("@")
    if not at:
        return email.lower()
    local = unicodedata.normalize("NFC", local.lower())
    try:
        domain = _ascii_domain(domain)
    except (UnicodeError, ValueError):
        domain = domain.lower()
    return f"{local}@{domain}"


def email_error(email: str) -> str:
    """Why a normalised address cannot be a contact's, or "" when it can."""
    if len(email) > MAX_LENGTH:
        return f"At most {MAX_LENGTH} characters."
    if unstorable(email):
        return "Must not contain NUL characters or invalid Unicode."
    # A quoted local part may hold almost anything; control characters and line separators
    # (\x0b, \x85, \u2028...) would break the To: header of every email sent to it.
    if email.splitlines() != [email] or any(unicodedata.category(c) == "Cc" for c in email):
        return "Must not contain control characters or line breaks."
    local, at, domain = email.rpartition("@")
    if not at or not local:
        return "Not a valid email address."
    if len(local) > MAX_LOCAL_PART:
        return f"The part before @ is at most {MAX_LOCAL_PART} characters."
    if not domain.isascii() or "xn--" in domain:
        try:
            idna.encode(domain, uts46=True)
        except (UnicodeError, ValueError) as exc:
            return f"The domain is not a valid internationalised domain name: {exc}."
    try:
        validate_email(email)
    except ValidationError:
        return "Not a valid email address."
    return ""
