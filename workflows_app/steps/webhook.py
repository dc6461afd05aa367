import random
import re
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from django.conf import settings
from pydantic import AnyHttpUrl, Field, field_validator

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
MAX_TIMEOUT_SECONDS = 30
# RFC 9110 field names are tokens; values may not carry CR, LF or NUL (header injection).
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
HEADER_VALUE_FORBIDDEN = re.compile(r"[\r\n\x00]")


class WebhookConfig(StepConfig):
    url: AnyHttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = Field(default=None, description="JSON; Liquid in string values. Empty: default.")
    # The whole call, redirects and body included (capped by WEBHOOK_MAX_TIMEOUT_SECONDS).
    timeout_seconds: int = Field(default=10, ge=1, le=MAX_TIMEOUT_SECONDS)

    @field_validator("headers")
    @classmethod
    def _headers_are_single_lines(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(
                    f"header name {name[:60]!r} must be a single word of letters, digits "
                    "and !#$%&'*+-.^_`|~"
                )
            if HEADER_VALUE_FORBIDDEN.search(value):
                raise ValueError(
                    f"the value of header {name!r} contains a line break or NUL character"
                )
        return headers


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
                timeout=min(cfg.timeout_seconds, settings.WEBHOOK_MAX_TIMEOUT_SECONDS),
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
        # Only what jsonb can store is kept (NaN, NUL characters ... would otherwise make every
        # write of the run fail and leave it RUNNING); the notes say what was changed.
        parsed = reply.parse()
        output: dict[str, Any] = {"status": reply.status, "attempts": attempt}
        output["response"] = parsed.data
        if parsed.notes:
            output["notes"] = parsed.notes
        return Outcome(
            kind="next",
            output=output,
            context_update={ctx.step.key: parsed.data} if parsed.data is not None else {},
        )

    def _retry(self, ctx: RunContext, attempt: int, error: str, retry_after: str | None = None):
        if attempt >= MAX_ATTEMPTS:
            raise StepFailed(f"gave up after {attempt} attempts; last: {error}")
        raise StepRetry(error, backoff(attempt, ctx.now, retry_after))
