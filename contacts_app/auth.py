"""API key authentication: `Authorization: Bearer <key>`; secret keys may call every API,
public keys only /v1/track."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.throttling import BaseThrottle

from contacts_app.models import ApiKey
from contacts_app.services import KeyInfo, RateLimit, apikey_lookup, ratelimit_hit


class ApiClient:
    """The request's `user` for API calls: the key, not a person."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, key_hash: str, info: KeyInfo):
        self.key_hash = key_hash
        self.key = info

    @property
    def is_secret(self) -> bool:
        return self.key.kind == ApiKey.SECRET


def bearer_key(header: str) -> str:
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise exceptions.NotAuthenticated("Send your API key as 'Authorization: Bearer <key>'.")
    return raw.strip()


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            raise exceptions.NotAuthenticated(
                "Missing API key: send 'Authorization: Bearer <key>'."
            )
        raw = bearer_key(header)
        if len(raw) > 200 or not raw.isascii():  # keys are short URL-safe ASCII
            raise exceptions.AuthenticationFailed("Invalid API key.")
        key_hash, info = apikey_lookup(raw)
        if info is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return ApiClient(key_hash, info), info

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class IsSecretKey(BasePermission):
    message = "This endpoint needs a secret key (sk_...); public keys may only call /v1/track."

    def has_permission(self, request, view):
        return isinstance(request.user, ApiClient) and request.user.is_secret


class IsAnyKey(BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, ApiClient)


class KeyRateThrottle(BaseThrottle):
    """Every API call counts in its key's per-minute window (shared by all endpoints; see
    ratelimit_of). The standing is kept on the request for the RateLimit-* headers
    (config.middleware.RateLimitHeadersMiddleware)."""

    def allow_request(self, request, view) -> bool:
        if not isinstance(request.user, ApiClient):
            return True
        rate = ratelimit_hit(key=request.user.key, now=timezone.now())
        request._request.ratelimit = rate
        self.rate: RateLimit | None = rate
        return rate is None or not rate.exceeded

    def wait(self) -> float | None:
        return self.rate.reset if self.rate is not None else None
