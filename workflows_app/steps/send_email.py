from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from pydantic import Field, field_validator, model_validator

from templates_app.models import Template
from templates_app.policy import FrequencyCap, FrequencyCapped, frequency_cap_for, quiet_until
from templates_app.rendering import TemplateError
from templates_app.services import (
    Outgoing,
    SendPermanentError,
    SendResult,
    SendSkipped,
    SendTransientError,
    batch_size,
    message_send,
    messages_send_many,
)
from workflows_app.steps.base import (
    Outcome,
    RetryPolicy,
    RunContext,
    StepConfig,
    StepFailed,
    StepHold,
    StepType,
)


class Recipient(StepConfig):
    """Who gets the email: the contact (default), or a fixed address (`CUSTOM`), such as a
    team inbox told about the contact. The address is plain text, as on Plunk (no Liquid)."""

    type: Literal["CONTACT", "CUSTOM"] = "CONTACT"
    customEmail: str = Field(default="", max_length=254)  # noqa: N815 - Plunk's name

    @field_validator("customEmail")
    @classmethod
    def _an_address(cls, value: str) -> str:
        value = value.strip()
        if value:
            try:
                validate_email(value)
            except ValidationError:
                raise ValueError(f"{value[:80]!r} is not an email address") from None
        return value

    @model_validator(mode="after")
    def _custom_needs_an_address(self) -> "Recipient":
        if self.type == "CUSTOM" and not self.customEmail:
            raise ValueError("a CUSTOM recipient needs customEmail")
        return self


class SendEmailConfig(StepConfig):
    template: str = Field(min_length=1, max_length=200, description="Template name")
    recipient: Recipient | None = None

    @model_validator(mode="before")
    @classmethod
    def _plunk_shape(cls, data: Any) -> Any:
        """Plunk's `templateId`: a template's name in our files, or our Template's key (an
        integer), read here as the name it has now."""
        if not isinstance(data, dict) or "templateId" not in data or "template" in data:
            return data
        data = dict(data)
        ref = data.pop("templateId")
        if isinstance(ref, int) and not isinstance(ref, bool):
            name = Template.objects.filter(pk=ref).values_list("name", flat=True).first()
            if name is None:
                raise ValueError(f"template #{ref} does not exist")
            ref = name
        data["template"] = ref
        return data


@dataclass(frozen=True)
class _Plan:
    template: Template
    to_email: str | None  # a CUSTOM recipient's address; None: the contact
    cap: FrequencyCap | None


def _given(result: SendResult | Exception) -> Callable[[], SendResult]:
    def send() -> SendResult:
        if isinstance(result, Exception):
            raise result
        return result

    return send


class SendEmail(StepType):
    """Sends a template at most once per step visit (the ledger key), to the contact or to a
    fixed address (then without the subscription check; the message is still the contact's)."""

    type = "send_email"
    label = "Send Email"
    description = "Send a template to the contact, or to a fixed address."
    Config = SendEmailConfig
    form = "send_email"  # hand-written: static/canvas/ConfigPanel.jsx FORMS
    side_effects = True
    waits_on_network = True
    template_field = "template"
    # A provider's transient refusal (SMTP 4xx, HTTP 429/5xx): five visits, a minute apart at
    # first.
    retry_policy = RetryPolicy(max_attempts=5, base_seconds=60)

    def stored_config(self, raw: dict[str, Any], parsed: Any) -> dict[str, Any]:
        """One form: `{template}`, with `recipient` only for a fixed address (the contact is
        the default, however it was written)."""
        config = parsed.model_dump(mode="json", exclude_unset=True)
        config["template"] = parsed.template  # what templateId named
        config.pop("recipient", None)
        recipient = parsed.recipient
        if recipient is not None and recipient.type == "CUSTOM":
            config["recipient"] = {"type": "CUSTOM", "customEmail": recipient.customEmail}
        return config

    def run(self, ctx: RunContext) -> Outcome:
        # By key: the name in the config is only what the editor shows.
        template = (
            Template.objects.filter(pk=ctx.step.template_id).first()
            if ctx.step.template_id is not None
            else None
        )
        plan = self._plan(ctx, template)
        # A dry run (workflows_app.simulate) records the send instead of making it.
        send = message_send if ctx.dry_run is None else ctx.dry_run.message_send
        return self._outcome(
            ctx,
            plan,
            lambda: send(
                idempotency_key=ctx.visit_key,
                template=plan.template,
                contact=ctx.contact,
                context=ctx.execution.context,
                workflow_name=ctx.execution.workflow.name,
                to_email=plan.to_email,
                frequency_cap=plan.cap,
            ),
        )

    def batch_size(self) -> int:
        return batch_size()

    def run_many(self, ctxs: list[RunContext]) -> list[Outcome | Exception]:
        """The visits' emails in one provider call (templates_app.services.messages_send_many),
        each with run()'s rules and its own outcome."""
        ids = {ctx.step.template_id for ctx in ctxs if ctx.step.template_id is not None}
        templates = Template.objects.in_bulk(ids)
        results: list[Outcome | Exception | None] = [None] * len(ctxs)
        plans: dict[int, _Plan] = {}
        for index, ctx in enumerate(ctxs):
            try:
                if ctx.dry_run is not None:  # never from the engine; recorded, not sent
                    results[index] = self.run(ctx)
                    continue
                template = templates.get(ctx.step.template_id)  # type: ignore[arg-type]
                plans[index] = self._plan(ctx, template)
            except Exception as exc:  # noqa: BLE001 - this visit's outcome, as run() raises it
                results[index] = exc
        order = list(plans)
        try:
            sends: list[SendResult | Exception] = messages_send_many(
                [
                    Outgoing(
                        idempotency_key=ctxs[index].visit_key,
                        template=plans[index].template,
                        contact=ctxs[index].contact,
                        context=ctxs[index].execution.context,
                        workflow_name=ctxs[index].execution.workflow.name,
                        to_email=plans[index].to_email,
                        frequency_cap=plans[index].cap,
                    )
                    for index in order
                ]
            )
        except Exception as exc:  # noqa: BLE001 - e.g. the database went away: these visits'
            sends = [exc] * len(order)
        for index, sent in zip(order, sends, strict=True):
            try:
                results[index] = self._outcome(ctxs[index], plans[index], _given(sent))
            except Exception as exc:  # noqa: BLE001 - as run() raises it
                results[index] = exc
        return [r if r is not None else StepFailed("not run") for r in results]

    def _plan(self, ctx: RunContext, template: Template | None) -> _Plan:
        """What this visit sends, and to whom, under which rules; raises StepFailed (no
        template) or StepHold (quiet hours)."""
        if template is None:
            raise StepFailed(f"template {ctx.config.template!r} does not exist")
        recipient = ctx.config.recipient
        custom = recipient.customEmail if recipient and recipient.type == "CUSTOM" else None
        # The send policy (templates_app.policy) is for marketing mail to the contact only.
        policy = template.type == Template.MARKETING and custom is None
        if policy and ctx.contact.subscribed:
            until = quiet_until(ctx.contact, ctx.now)
            if until is not None:  # the run waits, then this same visit sends
                raise StepHold("quiet hours", until)
        cap = frequency_cap_for(ctx.execution.workflow.frequency_cap) if policy else None
        return _Plan(template, custom, cap)

    def _outcome(self, ctx: RunContext, plan: _Plan, send: Callable[[], SendResult]) -> Outcome:
        """The visit's outcome from its send (which raises what message_send raises)."""
        template = plan.template
        # What the engine wrote when it held this visit stays in its output.
        output = ctx.step_run.output if isinstance(ctx.step_run.output, dict) else {}
        held = {k: v for k, v in output.items() if k.startswith("held_")}
        try:
            result = send()
        except FrequencyCapped as exc:  # the run goes on; `reason` is what stats group by
            return Outcome(
                kind="next",
                skipped=True,
                output={"skipped": str(exc), "reason": exc.reason, **held},
            )
        except SendSkipped as exc:
            return Outcome(kind="next", skipped=True, output={"skipped": str(exc), **held})
        except SendTransientError as exc:
            self.retry(ctx, f"provider error: {exc}")
        except SendPermanentError as exc:
            raise StepFailed(f"provider refused the message: {exc}") from exc
        except TemplateError as exc:  # a limit or an error in the template: retrying won't help
            raise StepFailed(f"template {template.name!r}: {exc}") from exc
        message = result.message
        return Outcome(
            kind="next",
            output={
                "message_id": message.pk,
                "status": message.status,
                "to": message.to_email,
                **held,
            },
            message_id=message.pk,
        )
