"""What goes to the provider: the message class every send uses, and email backends that pass
the ledger key to providers that de-duplicate on it."""

from __future__ import annotations

import email.policy
import re
from email.headerregistry import HeaderRegistry, UnstructuredHeader

from anymail.backends.resend import EmailBackend as AnymailResendBackend
from django.core.mail import EmailMultiAlternatives

_ENTRY = r"<[^<>\s]+>"
_LIST = re.compile(rf"\s*{_ENTRY}\s*(?:,\s*{_ENTRY}\s*)*")


class _RawListHeader(UnstructuredHeader):
    """`List-Unsubscribe` / `List-Unsubscribe-Post` written as they are.

    Python's default folding turns a long header into RFC 2047 encoded-words, which Gmail and
    Yahoo do not decode, so the one-click unsubscribe (RFC 8058) would be invisible to them.
    RFC 2369 lets a line fold only between entries, never inside `<...>`; a single entry may be
    long (up to RFC 5322's 998 characters).
    """

    name: str  # given by BaseHeader, which the registry mixes in

    def fold(self, *, policy):  # noqa: D102 - see the class
        value = str(self)
        if not value.isascii() or "\r" in value or "\n" in value:
            return super().fold(policy=policy)  # type: ignore[misc]  # BaseHeader's folding
        if not _LIST.fullmatch(value):  # List-Unsubscribe-Post, or not a list of <...>
            return f"{self.name}: {value.strip()}{policy.linesep}"
        entries = re.findall(_ENTRY, value)
        width = policy.max_line_length or 78
        lines = [f"{self.name}: {entries[0]}"]
        for entry in entries[1:]:
            if len(lines[-1]) + 2 + len(entry) <= width:
                lines[-1] += f", {entry}"
            else:
                lines[-1] += ","
                lines.append(f" {entry}")
        return policy.linesep.join(lines) + policy.linesep


_headers = HeaderRegistry()
# The registry mixes BaseHeader into the class it is given, as it does for its own.
_headers.map_to_type("list-unsubscribe", _RawListHeader)  # type: ignore[arg-type]
_headers.map_to_type("list-unsubscribe-post", _RawListHeader)  # type: ignore[arg-type]


class LedgerEmail(EmailMultiAlternatives):
    """Every email we send. SMTP, console and MIME-building providers (Amazon SES) call
    `message()`; API providers (anymail) take `extra_headers` as they are."""

    def message(self, *, policy=email.policy.default):
        return super().message(policy=policy.clone(header_factory=_headers))


class ResendEmailBackend(AnymailResendBackend):
    """Resend's API sends at most one email per Idempotency-Key (24 h), so a send retried after
    a worker died between the provider's acceptance and our ledger update is not doubled."""

    def build_message_payload(self, message, defaults):
        payload = super().build_message_payload(message, defaults)
        key = (getattr(message, "metadata", None) or {}).get("idempotency_key")
        if key:
            payload.headers["Idempotency-Key"] = key[:256]
        return payload
