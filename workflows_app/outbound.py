"""Outbound HTTP for the Webhook step: SSRF-guarded, signed, size-capped, time-boxed.

Every connection (the first and each redirect) goes through requests-hardened's IP filter,
which resolves the host once and connects to that very address, refusing private, loopback,
link-local (cloud metadata), multicast and other reserved ranges - unless
WEBHOOK_ALLOW_PRIVATE_NETWORKS is on. An IPv6 address that embeds an IPv4 one (`::127.0.0.1`,
`::ffff:127.0.0.1`) is judged as the IPv4 address it carries. Signatures follow the Standard
Webhooks spec.

`timeout` bounds the whole call - connecting, every redirect, the headers and the body - not
each socket read: a watchdog shuts down the call's sockets at the deadline, so a receiver
that drips bytes cannot hold a worker (and the run's lease) any longer than that.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import InvalidIPAddress
from requests_hardened.ip_filter_adapter import IPFilterAdapter
from standardwebhooks.webhooks import Webhook as Signer

from contacts_app import safejson

MAX_REDIRECTS = 5


class Refused(Exception):
    """The request must not be made (scheme or address not allowed): retrying will not help."""


class DeadlineExceeded(requests.Timeout):
    """The whole call took longer than its timeout (a transient error: retried)."""


@dataclass(frozen=True)
class Parsed:
    """A JSON reply as it can be stored: `data` is jsonb-safe; `notes` say what was changed or
    why nothing was kept."""

    data: Any
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool

    def parse(self) -> Parsed:
        """The JSON reply, strictly parsed and made storable. Not JSON: None, no notes."""
        content_type = self.headers.get("content-type", "")
        if self.truncated or "json" not in content_type:
            return Parsed(None)
        try:
            value = safejson.loads(self.body)
        except safejson.JsonRejected as exc:
            return Parsed(None, [f"reply not kept: {exc}"])
        except ValueError:
            return Parsed(None)
        data, notes = safejson.sanitize(value)
        return Parsed(data, [f"reply {note}" for note in notes])

    def json(self) -> Any:
        return self.parse().data

    def snippet(self, limit: int = 500) -> str:
        # Stored as the step's error: a text column refuses NUL characters.
        return self.body[:limit].decode("utf-8", "replace").replace("\x00", "")


# --- The deadline -----------------------------------------------------------------------------


class _Watchdog:
    """Holds the sockets of one call and shuts them down when its deadline passes."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check(self) -> None:
        if self.fired or self.remaining() <= 0:
            raise DeadlineExceeded(f"no complete reply within {self.seconds:g} s")

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            fired = self.fired
        if fired:
            _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    # The plain socket's shutdown (also under TLS): a blocked read in the worker's thread then
    # returns at once, and the call fails.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _judged_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a connection to `host` (an IP literal, brackets allowed) really reaches: the
    embedded IPv4 address of an IPv4-compatible (::a.b.c.d) or -mapped IPv6 one."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if int(ip) >> 32 == 0 and int(ip) > 1:  # ::/96 minus :: and ::1
            return ipaddress.IPv4Address(int(ip))
    return ip


def literal_refusal(url: str) -> str | None:
    """Why a call to `url` would be refused before any connection, when its host is an IP
    literal the guard refuses (a dry run, which looks nothing up, asks this); None when it is
    not, or when only resolving the name could tell."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return f"invalid URL: {url[:200]!r}"
    ip = _judged_address(host)
    if ip is None or settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS:
        return None
    if ip.is_loopback and settings.WEBHOOK_ALLOW_LOOPBACK:
        return None
    if ip.is_private or ip.is_reserved or ip.is_multicast or ip.is_loopback or ip.is_link_local:
        return (
            f"the URL resolves to a private or reserved address ({ip}); set "
            "WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow internal targets"
        )
    return None


class _GuardedMixin:
    """Tracks every connection of the call (for the watchdog) and bounds each connect by the
    time left."""

    watchdog: _Watchdog

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        pool = super().get_connection_with_tls_context(  # type: ignore[misc]
            request, verify, proxies=proxies, cert=cert
        )
        if not getattr(pool.ConnectionCls, "_tracked", False):
            pool.ConnectionCls = _tracked(pool.ConnectionCls, self.watchdog)
        return pool


def _tracked(base: type, watchdog: _Watchdog) -> type:
    class Tracked(base):  # type: ignore[valid-type, misc]
        _tracked = True

        def _new_conn(self) -> socket.socket:
            watchdog.check()
            timeout: Any = getattr(self, "timeout", None)
            if isinstance(timeout, int | float):
                self.timeout = max(0.01, min(timeout, watchdog.remaining()))
            sock = super()._new_conn()
            watchdog.add(sock)
            return sock

    return Tracked


class _FilteredAdapter(_GuardedMixin, IPFilterAdapter):
    def __init__(self, watchdog: _Watchdog, **kwargs: Any):
        super().__init__(**kwargs)
        self.watchdog = watchdog

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        # requests-hardened checks the resolved address; an IPv4-compatible IPv6 address
        # (::127.0.0.1) is none of its "private" ranges, yet reaches the IPv4 host it embeds.
        ip = _judged_address(host_params["host"])
        if (
            isinstance(ip, ipaddress.IPv4Address)
            and not (self._allow_loopback and ip.is_loopback)
            and (ip.is_private or ip.is_reserved or ip.is_multicast or ip.is_loopback)
        ):
            raise InvalidIPAddress(ip)
        return host_params, pool_kwargs


class _PlainAdapter(_GuardedMixin, HTTPAdapter):
    def __init__(self, watchdog: _Watchdog):
        super().__init__()
        self.watchdog = watchdog


def _session(watchdog: _Watchdog) -> requests.Session:
    allow_private = settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS
    session = HTTPSession(
        Config(
            ip_filter_enable=False,  # our adapters below filter (and track) instead
            ip_filter_allow_loopback_ips=settings.WEBHOOK_ALLOW_LOOPBACK,
            never_redirect=False,
            default_timeout=(5, 10),
            user_agent_override="lifecycle-webhook/1",
        )
    )
    for prefix, https in (("http://", False), ("https://", True)):
        adapter: HTTPAdapter
        if allow_private:
            adapter = _PlainAdapter(watchdog)
        else:
            adapter = _FilteredAdapter(
                watchdog, is_https_proto=https, allow_loopback=settings.WEBHOOK_ALLOW_LOOPBACK
            )
        session.mount(prefix, adapter)
    session.max_redirects = MAX_REDIRECTS
    session.trust_env = False  # no proxy from the environment may route around the guard
    return session


def sign_headers(*, secret: str, msg_id: str, body: str, at: datetime) -> dict[str, str]:
    signature = Signer(secret).sign(msg_id=msg_id, timestamp=at, data=body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def post_json(
    *,
    url: str,
    payload: Any,
    headers: dict[str, str],
    timeout: float,
    secret: str,
    msg_id: str,
    at: datetime,
    method: str = "POST",
) -> Reply:
    """Sends `payload` as JSON with `method` (GET sends no body: the signature is then of the
    empty string), signed with `secret`; the whole call (redirects and body included) takes
    at most `timeout` seconds. Raises Refused, or requests' errors for the network
    (DeadlineExceeded, a Timeout, past the deadline; the caller decides whether to retry)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused(f"only http and https URLs are allowed, not {scheme!r}")
    if method not in METHODS:
        raise Refused(f"the method must be one of {', '.join(METHODS)}, not {method[:20]!r}")
    body = "" if method == "GET" else json.dumps(payload, separators=(",", ":"), default=str)
    all_headers = {
        **headers,
        **({} if method == "GET" else {"Content-Type": "application/json"}),
        **sign_headers(secret=secret, msg_id=msg_id, body=body, at=at),
    }
    cap = settings.WEBHOOK_MAX_RESPONSE_BYTES
    watchdog = _Watchdog(timeout)
    try:
        with (
            watchdog,
            _session(watchdog) as session,
            session.request(
                method,
                url,
                data=body.encode() if method != "GET" else None,
                headers=all_headers,
                timeout=(timeout, timeout),
                stream=True,
            ) as response,
        ):
            chunks, size, truncated = [], 0, False
            for chunk in response.iter_content(8192):
                watchdog.check()
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:
                    truncated = True
                    break
            # A socket shut down by the watchdog may look like a body that simply ended.
            watchdog.check()
            content = b"".join(chunks)[:cap]
            return Reply(
                response.status_code,
                {k.lower(): v for k, v in response.headers.items()},
                content,
                truncated,
            )
    except InvalidIPAddress as exc:
        raise Refused(
            f"the URL resolves to a private or reserved address ({exc}); set "
            "WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow internal targets"
        ) from exc
    except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
        # Also a redirect to ftp:, file: or any other scheme: permanent, not retried.
        raise Refused(f"invalid URL: {exc}") from exc
    except requests.RequestException as exc:
        if watchdog.fired and not isinstance(exc, DeadlineExceeded):
            raise DeadlineExceeded(f"no complete reply within {timeout:g} s") from exc
        raise
