from typing import Any

from pydantic import Field

from workflows_app.steps.base import Duration, Outcome, RunContext, StepConfig, StepType


class WaitForEventConfig(StepConfig):
    event: str = Field(min_length=1, max_length=255)
    timeout: Duration | None = None


class WaitForEvent(StepType):
    """Waits until the contact does `event` (branch `event`) or the timeout passes (`timeout`).

    Only events tracked after the wait began count. Whichever of the two claims the execution
    first (both are version-checked updates of a WAITING row) wins; the other changes nothing.
    """

    type = "wait_for_event"
    label = "Wait for Event"
    description = "Wait until the contact does something, or a timeout passes."
    Config = WaitForEventConfig
    branches = ("event", "timeout")

    def branches_for(self, config: Any) -> tuple[str, ...]:
        return ("event", "timeout") if config.timeout else ("event",)

    def run(self, ctx: RunContext) -> Outcome:
        timeout = ctx.config.timeout
        wake_at = ctx.step_run.started_at + timeout.as_timedelta() if timeout else None
        return Outcome(kind="wait_for_event", event=ctx.config.event, wake_at=wake_at)
