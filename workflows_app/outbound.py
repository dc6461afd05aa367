"""Outbound HTTP for the Webhook step: SSRF-guarded, signed, size-capped.

Every connection (the first and each redirect) goes through requests-hardened's IP filter,
which resolves the host once and connects to that very address, refusing private, loopback,
link-local (cloud metadata), multicast and other reserved ranges - unless
WEBHOOK_ALLOW_PRIVATE_NETWORKS is on. Signatures follow the Standard Webhooks spec.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import InvalidIPAddress
from standardwebhooks.webhooks import Webhook as Signer

MAX_REDIRECTS = 5


class Refused(Exception):
    """The request must not be made (scheme or address not allowed): retrying will not help."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool

    def json(self) -> Any:
        content_type = self.headers.get("content-type", "")
        if self.truncated or "json" not in content_type:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def snippet(self, limit: int = 500) -> str:
        return self.body[:limit].decode("utf-8", "replace")


def _session() -> requests.Session:
    allow_private = settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS
    session = HTTPSession(
        Config(
            ip_filter_enable=not allow_private,
            ip_filter_allow_loopback_ips=settings.WEBHOOK_ALLOW_LOOPBACK,
            never_redirect=False,
            default_timeout=(5, 10),
            user_agent_override="lifecycle-webhook/1",
        )
    )
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


def post_json(
    *,
    url: str,
    payload: Any,
    headers: dict[str, str],
    timeout: float,
    secret: str,
    msg_id: str,
    at: datetime,
) -> Reply:
    """POSTs `payload` signed with `secret`. Raises Refused, or requests' errors for the
    network (the caller decides whether to retry)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused(f"only http and https URLs are allowed, not {scheme!r}")
    body = json.dumps(payload, separators=(",", ":"), default=str)
    all_headers = {
        **headers,
        "Content-Type": "application/json",
        **sign_headers(secret=secret, msg_id=msg_id, body=body, at=at),
    }
    cap = settings.WEBHOOK_MAX_RESPONSE_BYTES
    try:
        with (
            _session() as session,
            session.post(
                url, data=body.encode(), headers=all_headers, timeout=timeout, stream=True
            ) as response,
        ):
            chunks, size, truncated = [], 0, False
            for chunk in response.iter_content(8192):
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:
                    truncated = True
                    break
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
    except requests.exceptions.InvalidURL as exc:
        raise Refused(f"invalid URL: {exc}") from exc
