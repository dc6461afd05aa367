from django.conf import settings
from django.core.checks import Tags, Warning, register

from templates_app.webhooks import TRACKING_ENDPOINTS, tracking_problems


@register(Tags.security)
def check_tracking_webhook_secrets(app_configs, **kwargs):
    """Tracking is reachable (an anymail provider) but refuses everything without its secrets."""
    provider = settings.EMAIL_PROVIDER
    problems = tracking_problems(provider)
    if provider not in TRACKING_ENDPOINTS or not problems:
        return []
    return [
        Warning(
            f"/anymail/{provider}/tracking/ refuses every provider event: "
            + "; ".join(problems)
            + ".",
            hint="Set the webhook's basic auth secret (ANYMAIL_WEBHOOK_SECRET=user:pass, put "
            "in the URL you give the provider) and, where the provider signs its webhooks, its "
            "signing key. See the README's Email section.",
            id="templates_app.W001",
        )
    ]
