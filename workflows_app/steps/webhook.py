import re
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from django.conf import settings
from pydantic import AnyHttpUrl, Field, TypeAdapter, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from config import metrics
from templates_app.rendering import TemplateError, render_json, render_typed_json
from templates_app.services import template_variables
from workflows_app.outbound import Refused, post_json
from workflows_app.steps.base import (
    Outcome,
    RunContext,
    StepConfig,
    StepFailed,
    StepType,
)

RETRY_STATUSES = {408, 429}
MAX_TIMEOUT_SECONDS = 30
MAX_URL_LENGTH = 2083
# RFC 9110 field names are tokens; values may not carry CR, LF or NUL (header injection).
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
HEADER_VALUE_FORBIDDEN = re.compile(r"[\r\n\x00]")
LIQUID = re.compile(r"\{\{|\{%")
_HTTP_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)


def url_problem(url: str, *, rendered: bool) -> str | None:
    """What is wrong with a webhook URL, or None. A URL with Liquid in it can only be checked
    for its scheme when saved; once rendered, it is checked whole."""
    if not url.lower().startswith(("http://", "https://")):
        return "the URL must start with http:// or https://"
    if len(url) > MAX_URL_LENGTH:
        return f"the URL is longer than {MAX_URL_LENGTH} characters"
    if not rendered and LIQUID.search(url):
        return None
    try:
        _HTTP_URL.validate_python(url)
        host = urlsplit(url).hostname
    except PydanticValidationError as exc:
        return f"not a valid URL: {exc.errors()[0]['msg']}"
    except ValueError as exc:  # urlsplit: a malformed IPv6 address or port
        return f"not a valid URL: {exc}"
    if not host:  # pydantic reads `https:///x` as host "x"; requests would not
        return "not a valid URL: it has no host"
    return None


def header_problem(name: str, value: str) -> str | None:
    if not HEADER_NAME.fullmatch(name):
        return (
            f"header name {name[:60]!r} must be a single word of letters, digits "
            "and !#$%&'*+-.^_`|~"
        )
    if HEADER_VALUE_FORBIDDEN.search(value):
        return f"the value of header {name!r} contains a line break or NUL character"
    return None


class WebhookConfig(StepConfig):
    url: str = Field(max_length=MAX_URL_LENGTH, description="http(s) URL; Liquid allowed")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"  # outbound.METHODS
    headers: dict[str, str] = Field(default_factory=dict, description="Liquid in values")
    body: Any = Field(default=None, description="JSON; Liquid in string values. Empty: default.")
    # The whole call, redirects and body included (capped by WEBHOOK_MAX_TIMEOUT_SECONDS).
    timeout_seconds: int = Field(default=10, ge=1, le=MAX_TIMEOUT_SECONDS)

    @model_validator(mode="before")
    @classmethod
    def _method_in_capitals(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("method"), str):
            data = {**data, "method": data["method"].strip().upper()}
        return data

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        url = url.strip()
        problem = url_problem(url, rendered=False)
        if problem:
            raise ValueError(problem)
        return url

    @field_validator("headers")
    @classmethod
    def _headers_are_single_lines(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            problem = header_problem(name, value)
            if problem:
                raise ValueError(problem)
        return headers


def default_body(ctx: RunContext) -> dict[str, Any]:
    """Plunk's default body (`execution.startedAt` its name for our `started_at`, both sent),
    plus the contact's id."""
    contact, execution = ctx.contact, ctx.execution
    started = execution.started_at.isoformat()
    return {
        "contact": {
            "id": str(contact.pk),
            "email": contact.email,
            "subscribed": contact.subscribed,
            "data": contact.data,
        },
        "event": execution.context,
        "workflow": {"id": execution.workflow_id, "name": execution.workflow.name},
        "execution": {"id": execution.pk, "startedAt": started, "started_at": started},
    }


class Webhook(StepType):
    """Calls a URL with JSON (POST by default; GET sends no body), signed (Standard Webhooks)
    with the workflow's secret. The URL, header values and body strings are Liquid, rendered
    with the template scope; the SSRF guard judges the rendered URL.

    Delivered at least once: retries of one step visit reuse its `webhook-id`, so receivers
    can de-duplicate. Retries wait in the database (the run's wake_at), not in a worker.
    """

    type = "webhook"
    label = "Webhook"
    description = "Call a URL with the contact and event data."
    Config = WebhookConfig
    form = "webhook"  # hand-written: static/canvas/ConfigPanel.jsx FORMS
    side_effects = True
    waits_on_network = True

    def stored_config(self, raw: dict[str, Any], parsed: Any) -> dict[str, Any]:
        # One form for one meaning: the URL trimmed, the method in capitals, and no field that
        # only repeats its default (`method: "POST"`, `headers: {}`, `body: null`), so
        # `{url}` and `{url, method: "post", headers: {}}` are stored alike.
        return parsed.model_dump(mode="json", exclude_defaults=True)

    def run(self, ctx: RunContext) -> Outcome:
        cfg = ctx.config
        variables = template_variables(
            contact=ctx.contact,
            context=ctx.execution.context,
            workflow_name=ctx.execution.workflow.name,
        )
        try:
            url = render_json(cfg.url, variables).strip()
            headers = render_json(cfg.headers, variables)
            body = None
            if cfg.method != "GET":
                body = (
                    default_body(ctx)
                    if cfg.body is None
                    else render_typed_json(cfg.body, variables)
                )
        except TemplateError as exc:
            raise StepFailed(f"template: {exc}") from exc
        problem = url_problem(url, rendered=True)
        if problem:
            raise StepFailed(f"rendered URL {url[:200]!r}: {problem}")
        for name, value in headers.items():
            problem = header_problem(name, value)
            if problem:
                raise StepFailed(f"rendered {problem}")
        attempt = ctx.step_run.attempts + 1
        # A dry run (workflows_app.simulate) records the request instead of making it, and
        # answers 200 with an empty body.
        call = post_json if ctx.dry_run is None else ctx.dry_run.post_json
        try:
            reply = call(
                url=url,
                method=cfg.method,
                payload=body,
                headers=headers,
                timeout=min(cfg.timeout_seconds, settings.WEBHOOK_MAX_TIMEOUT_SECONDS),
                secret=ctx.execution.workflow.signing_secret,
                msg_id=ctx.visit_key,
                at=ctx.now,
            )
        except Refused as exc:
            metrics.webhook_call("refused")
            raise StepFailed(f"refused: {exc}") from exc
        except requests.RequestException as exc:
            metrics.webhook_call("retry")
            self.retry(ctx, f"{type(exc).__name__}: {exc}")
        if reply.status in RETRY_STATUSES or reply.status >= 500:
            metrics.webhook_call("retry")
            self.retry(
                ctx, f"HTTP {reply.status}: {reply.snippet()}", reply.headers.get("retry-after")
            )
        if reply.status >= 300:
            metrics.webhook_call("failed")
            raise StepFailed(f"HTTP {reply.status}: {reply.snippet()}")
        if ctx.dry_run is None:  # a dry run's request was not made
            metrics.webhook_call("success")
        # Only what jsonb can store is kept (NaN, NUL characters ... would otherwise make every
        # write of the run fail and leave it RUNNING); the notes say what was changed.
        parsed = reply.parse()
        output: dict[str, Any] = {
            # Plunk's output, then ours.
            "url": url,
            "method": cfg.method,
            "statusCode": reply.status,
            "success": True,
            "response": parsed.data,
            "status": reply.status,
            "attempts": attempt,
        }
        if parsed.notes:
            output["notes"] = parsed.notes
        return Outcome(
            kind="next",
            output=output,
            context_update={ctx.step.key: parsed.data} if parsed.data is not None else {},
        )
