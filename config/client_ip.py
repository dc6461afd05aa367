"""Who sent a request, for the login throttle (django-axes' AXES_CLIENT_IP_CALLABLE)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """REMOTE_ADDR, or, behind PROXY_COUNT trusted proxies, the address the outermost of them
    saw. Each proxy appends the address it received from to X-Forwarded-For, so that one is
    the PROXY_COUNT-th entry from the right; everything left of it was written by the client
    and is never trusted."""
    remote = request.META.get("REMOTE_ADDR", "")
    count = settings.PROXY_COUNT
    if count <= 0:
        return remote
    forwarded = [
        part.strip()
        for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        if part.strip()
    ]
    if len(forwarded) < count:
        return remote  # not what our proxies send: the address we can see is all we know
    return forwarded[-count]
