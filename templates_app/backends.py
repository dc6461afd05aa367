"""What goes to the provider: the message class every send uses, and email backends that pass
the ledger key to providers that de-duplicate on it."""

from __future__ import annotations

import contextlib
import email.policy
import re
import smtplib
import socket
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from typing import Any

import requests
from anymail.backends.postmark import EmailBackend as AnymailPostmarkBackend
from anymail.backends.resend import EmailBackend as AnymailResendBackend
from anymail.exceptions import AnymailRequestsAPIError
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend

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


class BatchItemRefused(Exception):
    """The provider answered a batch call, and refused this one message of it (nothing sent)."""

    def __init__(self, code: Any, message: str):
        self.code = code
        super().__init__(f"{message} (error {code})")


class PostmarkEmailBackend(AnymailPostmarkBackend):
    """anymail's Postmark backend, able to send different messages in one call as well.

    Postmark's `/email/batch` takes up to 500 whole messages and answers 200 with one result per
    message, in order (each with its own `ErrorCode`, 0 when accepted). anymail uses that API
    only for one message with per-recipient merge data, so `send_batch` builds each message's
    payload with anymail (the same JSON a single send posts) and posts the list itself.
    """

    batch_limit = 500

    def send_batch(self, messages: list[Any]) -> list[str | BatchItemRefused]:
        """Sends `messages` in one call; returns, for each, the provider's message id or why
        this message was refused. A failure of the whole call (the network, an HTTP error, an
        answer that can not be read) raises as a single send would: nothing tells which, if
        any, of the messages were taken."""
        if not messages:
            return []
        if len(messages) > self.batch_limit:
            raise ValueError(f"at most {self.batch_limit} messages per call")
        payloads = []
        for message in messages:
            payload = self.build_message_payload(message, self.send_defaults)
            if payload.get_api_endpoint() != "email":  # templates, merge data: not ours
                raise ValueError("only plain messages can be sent in a batch")
            payloads.append(payload)
        first, message = payloads[0], messages[0]
        params = first.get_request_params(self.api_url)
        params["url"] = f"{self.api_url}email/batch"
        params["data"] = first.serialize_json([p.data for p in payloads])
        params.setdefault("timeout", self.timeout)
        if self.session is None:
            raise RuntimeError("the backend's session is not open")
        try:
            response = self.session.request(**params)
        except requests.RequestException as err:
            # As anymail's own posting does: both an anymail error and the requests one, so
            # the ledger classifies it (templates_app.services) as it does a single send.
            error_class = type("AnymailRequestsAPIError", (AnymailRequestsAPIError, type(err)), {})
            raise error_class(
                f"Error posting to {params['url']}:", email_message=message, payload=first
            ) from err
        if response.status_code != 200:
            raise AnymailRequestsAPIError(
                email_message=message, payload=first, response=response, backend=self
            )
        replies = self.deserialize_json_response(response, first, message)
        if not isinstance(replies, list) or len(replies) != len(messages):
            raise AnymailRequestsAPIError(
                "Postmark's batch answer does not have one result per message",
                email_message=message,
                payload=first,
                response=response,
                backend=self,
            )
        results: list[str | BatchItemRefused] = []
        for reply in replies:
            if not isinstance(reply, dict) or not isinstance(reply.get("ErrorCode", 0), int):
                raise AnymailRequestsAPIError(
                    "Postmark's batch answer has a result that can not be read",
                    email_message=message,
                    payload=first,
                    response=response,
                    backend=self,
                )
            code = reply.get("ErrorCode", 0)
            if code == 0:  # accepted (an id is expected; its absence does not undo that)
                results.append(str(reply.get("MessageID") or ""))
            else:
                results.append(BatchItemRefused(code, str(reply.get("Message", ""))[:500]))
        return results


class SMTPBackend(DjangoSMTPBackend):
    """Django's SMTP backend with a deadline on each phase as a whole, not only on each socket
    operation: opening (connect, greeting, EHLO, STARTTLS, login) and sending each end within
    EMAIL_TIMEOUT, so a server answering a byte at a time can not hold a send past the run's
    lease. At the deadline the connection's socket is shut down and the phase fails; a send cut
    off that way after its data went out is recorded as `unknown` by the ledger, never resent."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sockets: list[socket.socket] = []  # this backend's connection, for the deadline

    @property
    def connection_class(self):
        return _WatchedSMTPSSL if self.use_ssl else _WatchedSMTP

    def open(self):
        token = _opening.set(self._sockets)
        try:
            with _deadline(self.timeout, self._sockets):
                return super().open()
        finally:
            _opening.reset(token)

    def send_messages(self, email_messages):
        with _deadline(self.timeout, self._sockets):
            return super().send_messages(email_messages)

    def close(self):
        try:
            super().close()
        finally:
            self._sockets.clear()


# The backend whose open() is creating a connection: smtplib connects in its constructor, so
# the socket is handed over from there.
_opening: ContextVar[list[socket.socket] | None] = ContextVar("smtp_opening", default=None)


class _Watched:
    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        sockets = _opening.get()
        if sockets is not None:
            sockets.append(sock)
        return sock


class _WatchedSMTP(_Watched, smtplib.SMTP):
    pass


class _WatchedSMTPSSL(_Watched, smtplib.SMTP_SSL):
    pass


@contextlib.contextmanager
def _deadline(seconds: float | None, sockets: list[socket.socket]) -> Iterator[None]:
    if not seconds:
        yield
        return
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        for sock in list(sockets):
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
    if fired.is_set():
        # A reply cut short by the shutdown can still parse ("250 " of "250 queued as ..."):
        # whatever the phase returned, it did not finish in time.
        raise TimeoutError(f"the mail server did not finish within {seconds:g} s")
