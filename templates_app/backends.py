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
from anymail.utils import get_anymail_setting
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


class BatchAnswerUnreadable(AnymailRequestsAPIError):
    """The provider answered a batch call with success (200), in a form we can not read: it may
    well have taken every message (the ledger records them `unknown`, never sends them again)."""


class PostmarkEmailBackend(AnymailPostmarkBackend):
    """anymail's Postmark backend, able to send different messages in one call as well.

    Postmark's `/email/batch` takes up to 500 whole messages (50 MB) and answers 200 with one
    result per message, in order (each with its own `ErrorCode`, 0 when accepted). anymail uses
    that API only for one message with per-recipient merge data, so `send_batch` builds each
    message's payload with anymail (the same JSON a single send posts) and posts the list.
    """

    batch_limit = 500
    batch_max_bytes = 45 * 1024 * 1024  # a call's body, under Postmark's 50 MB

    @classmethod
    def batches(cls) -> bool:
        """Whether send_batch may be used: not when anymail is set to Postmark's bulk API,
        whose messages are shaped differently."""
        return not get_anymail_setting("use_bulk_api", esp_name="Postmark", default=False)

    def send_batch(self, messages: list[Any]) -> list[str | Exception]:
        """Sends `messages` in as few calls as Postmark's limits allow (one, unless they pass
        50 MB); returns, for each, the provider's message id or why it was not (certainly)
        sent: its own refusal (BatchItemRefused), a payload anymail could not build, or the
        failure of its whole call (the network, an HTTP error, BatchAnswerUnreadable), which
        the ledger classifies as it does a single send's."""
        if len(messages) > self.batch_limit:
            raise ValueError(f"at most {self.batch_limit} messages per call")
        if self.session is None:
            raise RuntimeError("the backend's session is not open")
        results: list[str | Exception | None] = [None] * len(messages)
        calls: list[list[tuple[int, Any, str]]] = [[]]
        size = 0
        for index, message in enumerate(messages):
            try:  # one message anymail can not build (an address it refuses) fails alone
                payload = self.build_message_payload(message, self.send_defaults)
                if payload.get_api_endpoint() != "email":  # templates, merge data: not ours
                    raise ValueError("only plain messages can be sent in a batch")
                body = payload.serialize_json(payload.data)
            except Exception as exc:  # noqa: BLE001 - this message's outcome
                results[index] = exc
                continue
            if calls[-1] and size + len(body) + 1 > self.batch_max_bytes:
                calls.append([])
                size = 0
            calls[-1].append((index, payload, body))
            size += len(body) + 1
        for call in calls:
            if call:
                answers = self._post_batch(call, messages)
                for (index, _, _), answer in zip(call, answers, strict=True):
                    results[index] = answer
        return [r if r is not None else RuntimeError("not sent") for r in results]

    def _post_batch(
        self, call: list[tuple[int, Any, str]], messages: list[Any]
    ) -> list[str | Exception]:
        first, message = call[0][1], messages[call[0][0]]
        params = first.get_request_params(self.api_url)
        params["url"] = f"{self.api_url}email/batch"
        params["data"] = "[" + ",".join(body for _, _, body in call) + "]"
        params.setdefault("timeout", self.timeout)
        assert self.session is not None
        failure: Exception
        try:
            response = self.session.request(**params)
        except requests.RequestException as err:
            self.close()  # the connection may be broken: the next call opens a new one
            # As anymail's own posting does: both an anymail error and the requests one, so
            # the ledger classifies it (templates_app.services) as it does a single send.
            error_class = type("AnymailRequestsAPIError", (AnymailRequestsAPIError, type(err)), {})
            failure = error_class(
                f"Error posting to {params['url']}:", email_message=message, payload=first
            )
            failure.__cause__ = err
            return [failure] * len(call)
        if response.status_code != 200:
            failure = AnymailRequestsAPIError(
                email_message=message, payload=first, response=response, backend=self
            )
            return [failure] * len(call)
        try:
            replies = response.json()
        except ValueError:
            replies = None
        readable = (
            isinstance(replies, list)
            and len(replies) == len(call)
            and all(isinstance(r, dict) and isinstance(r.get("ErrorCode", 0), int) for r in replies)
        )
        if not readable:
            failure = BatchAnswerUnreadable(
                "Postmark's batch answer does not have a readable result per message",
                email_message=message,
                payload=first,
                response=response,
                backend=self,
            )
            return [failure] * len(call)
        results: list[str | Exception] = []
        for reply in replies:
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
