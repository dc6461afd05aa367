from datetime import timedelta
from typing import Any

import requests
from pydantic import AnyHttpUrl, Field

from workflows_app.steps.base import (
    Outcome,
    RunContext,
    StepConfig,
    StepFailed,
    StepRetry,
    StepType,
)

MAX_ATTEMPTS = 5
MAX_RESPONSE_BYTES = 64 * 1024


class WebhookConfig(StepConfig):
    url: AnyHttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    timeout_seconds: int = Field(default=10, ge=1, le=30)


def default_body(ctx: RunContext) -> dict[str, Any]:
    contact, execution = ctx.contact, ctx.execution
    return {
        "contact": {
            "id": str(contact.pk),
            "email": contact.email,
            "subscribed": contact.subscribed,
            "data": contact.data,
        },
        "event": execution.context,
        "workflow": {"id": execution.workflow_id, "name": execution.workflow.name},
        "execution": {"id": execution.pk, "started_at": execution.started_at.isoformat()},
    }


class Webhook(StepType):
    """POSTs JSON to a URL; delivered at least once, with a stable `webhook-id` per visit."""

    type = "webhook"
    label = "Webhook"
    description = "POST the contact and event data to a URL."
    Config = WebhookConfig
    side_effects = True

    def run(self, ctx: RunContext) -> Outcome:
        cfg = ctx.config
        body = cfg.body if cfg.body is not None else default_body(ctx)
        headers = {**cfg.headers, "webhook-id": ctx.visit_key, "User-Agent": "lifecycle-webhook"}
        attempt = ctx.step_run.attempts + 1
        try:
            response = requests.post(
                str(cfg.url),
                json=body,
                headers=headers,
                timeout=cfg.timeout_seconds,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return self._retry_or_fail(ctx, attempt, f"{type(exc).__name__}: {exc}")
        snippet = response.text[:500]
        if response.status_code in (408, 429) or response.status_code >= 500:
            return self._retry_or_fail(ctx, attempt, f"HTTP {response.status_code}: {snippet}")
        if response.status_code >= 300:
            raise StepFailed(f"HTTP {response.status_code}: {snippet}")
        reply: Any = None
        if (
            "json" in response.headers.get("Content-Type", "")
            and len(response.content) <= MAX_RESPONSE_BYTES
        ):
            try:
                reply = response.json()
            except ValueError:
                reply = None
        return Outcome(
            kind="next",
            output={"status": response.status_code, "response": reply},
            context_update={ctx.step.key: reply} if reply is not None else {},
        )

    def _retry_or_fail(self, ctx: RunContext, attempt: int, error: str) -> Outcome:
        if attempt >= MAX_ATTEMPTS:
            raise StepFailed(f"after {attempt} attempts: {error}")
        raise StepRetry(error, ctx.now + timedelta(seconds=5 * 3**attempt))
