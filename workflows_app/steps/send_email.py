from datetime import timedelta

from pydantic import Field

from templates_app.models import Template
from templates_app.rendering import TemplateError
from templates_app.services import (
    SendPermanentError,
    SendSkipped,
    SendTransientError,
    message_send,
)
from workflows_app.steps.base import (
    Outcome,
    RunContext,
    StepConfig,
    StepFailed,
    StepRetry,
    StepType,
)

MAX_ATTEMPTS = 5


class SendEmailConfig(StepConfig):
    template: str = Field(min_length=1, max_length=200, description="Template name")


class SendEmail(StepType):
    """Sends a template to the contact, at most once per step visit (the ledger key)."""

    type = "send_email"
    label = "Send Email"
    description = "Send a template to the contact."
    Config = SendEmailConfig
    side_effects = True
    template_field = "template"

    def run(self, ctx: RunContext) -> Outcome:
        # By key: the name in the config is only what the editor shows.
        template = (
            Template.objects.filter(pk=ctx.step.template_id).first()
            if ctx.step.template_id is not None
            else None
        )
        if template is None:
            raise StepFailed(f"template {ctx.config.template!r} does not exist")
        try:
            result = message_send(
                idempotency_key=ctx.visit_key,
                template=template,
                contact=ctx.contact,
                context=ctx.execution.context,
                workflow_name=ctx.execution.workflow.name,
            )
        except SendSkipped as exc:
            return Outcome(kind="next", skipped=True, output={"skipped": str(exc)})
        except SendTransientError as exc:
            attempt = ctx.step_run.attempts + 1
            if attempt >= MAX_ATTEMPTS:
                raise StepFailed(f"provider error after {attempt} attempts: {exc}") from exc
            raise StepRetry(str(exc), ctx.now + timedelta(seconds=30 * 2**attempt)) from exc
        except SendPermanentError as exc:
            raise StepFailed(f"provider refused the message: {exc}") from exc
        except TemplateError as exc:  # a limit or an error in the template: retrying won't help
            raise StepFailed(f"template {template.name!r}: {exc}") from exc
        message = result.message
        return Outcome(
            kind="next",
            output={"message_id": message.pk, "status": message.status, "to": message.to_email},
            message_id=message.pk,
        )
