import random
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from pydantic import AnyHttpUrl, Field

from templates_app.rendering import TemplateError, render_json
from templates_app.services import template_variables
from workflows_app.outbound import Refused, post_json
from workflows_app.steps.base import (
    Outcome,
    RunContext,
    StepConfig,
    StepFailed,
    StepRetry,
    StepType,
)

MAX_ATTEMPTS = 6
RETRY_STATUSES = {408, 429}


class WebhookConfig(StepConfig):
    url: AnyHttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = Field(default=None, description="JSON; Liquid in string values. Empty: default.")
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


def backoff(attempt: int, now: datetime, retry_after: str | None = None) -> datetime:
    """Exponential with full jitter (10 s, 20 s, 40 s ... capped at 1 h); a Retry-After
    header (seconds or an HTTP date, at most a day) wins when it asks for longer."""
    delay = random.uniform(0.5, 1.0) * min(3600, 10 * 2 ** (attempt - 1))
    if retry_after:
        try:
            asked = float(retry_after)
        except ValueError:
            try:
                asked = (parsedate_to_datetime(retry_after) - now).total_seconds()
            except (TypeError, ValueError):
                asked = 0
        delay = max(delay, min(asked, 86400))
    return now + timedelta(seconds=delay)


class Webhook(StepType):
    """POSTs JSON to a URL, signed (Standard Webhooks) with the workflow's secret.

    Delivered at least once: retries of one step visit reuse its `webhook-id`, so receivers
    can de-duplicate. Retries wait in the database (the run's wake_at), not in a worker.
    """

    type = "webhook"
    label = "Webhook"
    description = "POST the contact and event data to a URL."
    Config = WebhookConfig
    side_effects = True

    def run(self, ctx: RunContext) -> Outcome:
        cfg = ctx.config
        body = default_body(ctx)
        if cfg.body is not None:
            variables = template_variables(
                contact=ctx.contact,
                context=ctx.execution.context,
                workflow_name=ctx.execution.workflow.name,
            )
            try:
                body = render_json(cfg.body, variables)
            except TemplateError as exc:
                raise StepFailed(f"body template: {exc}") from exc
        attempt = ctx.step_run.attempts + 1
        try:
            reply = post_json(
                url=str(cfg.url),
                payload=body,
                headers=cfg.headers,
                timeout=cfg.timeout_seconds,
                secret=ctx.execution.workflow.signing_secret,
                msg_id=ctx.visit_key,
                at=ctx.now,
            )
        except Refused as exc:
            raise StepFailed(f"refused: {exc}") from exc
        except requests.RequestException as exc:
            self._retry(ctx, attempt, f"{type(exc).__name__}: {exc}")
        if reply.status in RETRY_STATUSES or reply.status >= 500:
            self._retry(
                ctx,
                attempt,
                f"HTTP {reply.status}: {reply.snippet()}",
                reply.headers.get("retry-after"),
            )
        if reply.status >= 300:
            raise StepFailed(f"HTTP {reply.status}: {reply.snippet()}")
        data = reply.json()
        return Outcome(
            kind="next",
            output={"status": reply.status, "attempts": attempt, "response": data},
            context_update={ctx.step.key: data} if data is not None else {},
        )

    def _retry(self, ctx: RunContext, attempt: int, error: str, retry_after: str | None = None):
        if attempt >= MAX_ATTEMPTS:
            raise StepFailed(f"gave up after {attempt} attempts; last: {error}")
        raise StepRetry(error, backoff(attempt, ctx.now, retry_after))
