"""Email backends that pass the ledger key to providers that de-duplicate on it."""

from anymail.backends.resend import EmailBackend as AnymailResendBackend


class ResendEmailBackend(AnymailResendBackend):
    """Resend's API sends at most one email per Idempotency-Key (24 h), so a send retried after
    a worker died between the provider's acceptance and our ledger update is not doubled."""

    def build_message_payload(self, message, defaults):
        payload = super().build_message_payload(message, defaults)
        key = (getattr(message, "metadata", None) or {}).get("idempotency_key")
        if key:
            payload.headers["Idempotency-Key"] = key[:256]
        return payload
