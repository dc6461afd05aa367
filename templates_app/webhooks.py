"""Provider webhooks (tracking, and inbound mail): only the configured provider's endpoints
exist, and they refuse every request unless their secret is configured and the request carries
it: the provider's signature where it signs, otherwise HTTP basic auth (ANYMAIL_WEBHOOK_SECRET).

anymail checks the secrets (HTTP basic auth against ANYMAIL_WEBHOOK_SECRET, and the provider's
own signature where it signs and anymail can verify it), but only those that are configured:
with none, it accepts anything with a warning. Here a missing secret means a refusal.
What an accepted event does is in workflows_app/provider_events.py (anymail's signals).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.module_loading import import_string
from django.views.decorators.csrf import csrf_exempt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackingEndpoint:
    view: str  # anymail's view class
    signing: tuple[str, ...] = ()  # ANYMAIL_* settings with the provider's signing key
    needs: tuple[str, ...] = ()  # Python packages anymail needs to check the signature


_W = "anymail.webhooks."
# Postmark, Mailjet, SparkPost, Brevo and Amazon SES do not sign in a way anymail verifies:
# basic auth is their only check.
TRACKING_ENDPOINTS = {
    "amazon_ses": TrackingEndpoint(_W + "amazon_ses.AmazonSESTrackingWebhookView"),
    "brevo": TrackingEndpoint(_W + "brevo.BrevoTrackingWebhookView"),
    "sendinblue": TrackingEndpoint(_W + "sendinblue.SendinBlueTrackingWebhookView"),
    "mailersend": TrackingEndpoint(
        _W + "mailersend.MailerSendTrackingWebhookView", ("MAILERSEND_SIGNING_SECRET",)
    ),
    "mailgun": TrackingEndpoint(
        _W + "mailgun.MailgunTrackingWebhookView", ("MAILGUN_WEBHOOK_SIGNING_KEY",)
    ),
    "mailjet": TrackingEndpoint(_W + "mailjet.MailjetTrackingWebhookView"),
    "mailtrap": TrackingEndpoint(
        _W + "mailtrap.MailtrapTrackingWebhookView", ("MAILTRAP_TRACKING_SECRET",)
    ),
    "mandrill": TrackingEndpoint(
        _W + "mandrill.MandrillCombinedWebhookView", ("MANDRILL_WEBHOOK_KEY",)
    ),
    "postal": TrackingEndpoint(
        _W + "postal.PostalTrackingWebhookView", ("POSTAL_WEBHOOK_KEY",), needs=("cryptography",)
    ),
    "postmark": TrackingEndpoint(_W + "postmark.PostmarkTrackingWebhookView"),
    "resend": TrackingEndpoint(
        _W + "resend.ResendTrackingWebhookView", ("RESEND_SIGNING_SECRET",), needs=("svix",)
    ),
    "sendgrid": TrackingEndpoint(
        _W + "sendgrid.SendGridTrackingWebhookView",
        ("SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY",),
    ),
    "sparkpost": TrackingEndpoint(_W + "sparkpost.SparkPostTrackingWebhookView"),
    "unisender_go": TrackingEndpoint(
        _W + "unisender_go.UnisenderGoTrackingWebhookView", ("UNISENDER_GO_API_KEY",)
    ),
}


# Inbound mail (anymail's `inbound` signal -> `email.received`). Mandrill's combined endpoint
# above already carries its inbound events.
INBOUND_ENDPOINTS = {
    "amazon_ses": TrackingEndpoint(_W + "amazon_ses.AmazonSESInboundWebhookView"),
    "brevo": TrackingEndpoint(_W + "brevo.BrevoInboundWebhookView"),
    "mailersend": TrackingEndpoint(
        _W + "mailersend.MailerSendInboundWebhookView", ("MAILERSEND_INBOUND_SECRET",)
    ),
    "mailgun": TrackingEndpoint(
        _W + "mailgun.MailgunInboundWebhookView", ("MAILGUN_WEBHOOK_SIGNING_KEY",)
    ),
    "mailjet": TrackingEndpoint(_W + "mailjet.MailjetInboundWebhookView"),
    "mailtrap": TrackingEndpoint(
        _W + "mailtrap.MailtrapInboundWebhookView", ("MAILTRAP_INBOUND_SECRET",)
    ),
    "postal": TrackingEndpoint(
        _W + "postal.PostalInboundWebhookView", ("POSTAL_WEBHOOK_KEY",), needs=("cryptography",)
    ),
    "postmark": TrackingEndpoint(_W + "postmark.PostmarkInboundWebhookView"),
    "resend": TrackingEndpoint(
        _W + "resend.ResendInboundWebhookView", ("RESEND_INBOUND_SECRET",), needs=("svix",)
    ),
    "sendgrid": TrackingEndpoint(_W + "sendgrid.SendGridInboundWebhookView"),
    "sparkpost": TrackingEndpoint(_W + "sparkpost.SparkPostInboundWebhookView"),
}


def _anymail_setting(name: str) -> Any:
    value = (getattr(settings, "ANYMAIL", None) or {}).get(name)
    return value if value else getattr(settings, f"ANYMAIL_{name}", None)


def tracking_problems(
    provider: str, endpoints: dict[str, TrackingEndpoint] = TRACKING_ENDPOINTS
) -> list[str]:
    """What keeps `provider`'s tracking (or inbound) endpoint from accepting anything (empty:
    nothing)."""
    endpoint = endpoints.get(provider)
    if endpoint is None:
        return []
    # Basic auth always, and the provider's own signature where it signs: both must be set.
    required = ("WEBHOOK_SECRET", *endpoint.signing)
    problems = [f"ANYMAIL_{name} is not set" for name in required if not _anymail_setting(name)]
    problems += [
        f"the Python package {package!r} is not installed (to verify {provider}'s signature)"
        for package in endpoint.needs
        if importlib.util.find_spec(package) is None
    ]
    return problems


@functools.cache
def _anymail_view(path: str):
    return import_string(path).as_view()


def _provider_webhook(
    request: HttpRequest, provider: str, endpoints: dict[str, TrackingEndpoint], kind: str
) -> HttpResponse:
    endpoint = endpoints.get(provider)
    if endpoint is None or provider != settings.EMAIL_PROVIDER:
        raise Http404(f"No {kind} webhook for this provider.")
    problems = tracking_problems(provider, endpoints)
    if problems:
        log.warning("refused a %s %s webhook: %s", provider, kind, "; ".join(problems))
        return HttpResponse(
            f"{kind.capitalize()} webhook not configured.", status=403, content_type="text/plain"
        )
    # anymail answers 400 to a wrong or missing basic auth or signature.
    return _anymail_view(endpoint.view)(request)


@csrf_exempt
def tracking_webhook(request: HttpRequest, provider: str) -> HttpResponse:
    return _provider_webhook(request, provider, TRACKING_ENDPOINTS, "tracking")


@csrf_exempt
def inbound_webhook(request: HttpRequest, provider: str) -> HttpResponse:
    """Inbound mail, authenticated exactly like tracking (`email.received`)."""
    return _provider_webhook(request, provider, INBOUND_ENDPOINTS, "inbound")
