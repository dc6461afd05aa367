from typing import Any

from pydantic import Field, model_validator

from workflows_app.event_names import current_event_name
from workflows_app.steps.base import (
    UNITS,
    Duration,
    Outcome,
    RunContext,
    StepConfig,
    StepType,
)


def duration_from_seconds(seconds: Any) -> Any:
    """Plunk's timeout (seconds) as a Duration: in the largest unit that divides it exactly
    (86400 reads as 1 day), else in seconds. Not a number: left for the validator to refuse."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return seconds
    for unit in ("weeks", "days", "hours", "minutes"):
        if seconds > 0 and seconds % UNITS[unit] == 0:
            return {"amount": int(seconds // UNITS[unit]), "unit": unit}
    return {"amount": seconds, "unit": "seconds"}


class WaitForEventConfig(StepConfig):
    event: str = Field(min_length=1, max_length=255)
    timeout: Duration | None = None

    @model_validator(mode="before")
    @classmethod
    def _plunk_shape(cls, data: Any) -> Any:
        """Plunk's `{eventName, timeout: seconds}`; a timeout of 0 is none there (falsy)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "eventName" in data and "event" not in data:
            data["event"] = data.pop("eventName")
        if isinstance(data.get("event"), str):
            data["event"] = current_event_name(data["event"])
        timeout = data.get("timeout")
        if timeout == 0 and not isinstance(timeout, bool):
            data["timeout"] = None
        elif not isinstance(timeout, dict) and timeout is not None:
            data["timeout"] = duration_from_seconds(timeout)
        return data


class WaitForEvent(StepType):
    """Waits until the contact does `event` (branch `event`) or the timeout passes (`timeout`).

    Only events tracked after the wait began count. Whichever of the two claims the execution
    first (both are version-checked updates of a WAITING row) wins; the other changes nothing.
    The resuming event's data is merged into the context at the top level (Plunk's rule) and
    kept under the event's name (the engine does it, in the same update that resumes the run).
    """

    type = "wait_for_event"
    label = "Wait for Event"
    description = "Wait until the contact does something, or a timeout passes."
    Config = WaitForEventConfig
    form = "wait_for_event"  # hand-written: static/canvas/ConfigPanel.jsx FORMS
    branches = ("event", "timeout")
    branch_requires = {"timeout": "timeout"}
    waits = True

    def stored_config(self, raw: dict[str, Any], parsed: Any) -> dict[str, Any]:
        # Our shape, whatever was sent, without a timeout that is none: `{event}`,
        # `{event, timeout: null}` and Plunk's `{eventName, timeout: 0}` are stored alike.
        return parsed.model_dump(mode="json", exclude_defaults=True)

    def run(self, ctx: RunContext) -> Outcome:
        timeout = ctx.config.timeout
        wake_at = ctx.step_run.started_at + timeout.as_timedelta() if timeout else None
        return Outcome(kind="wait_for_event", event=ctx.config.event, wake_at=wake_at)
