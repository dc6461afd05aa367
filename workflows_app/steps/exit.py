from typing import Any

from pydantic import Field

from workflows_app.steps.base import Outcome, RunContext, StepConfig, StepType

# Plunk's reason when a config gives none. An empty reason is kept: the run then records none.
DEFAULT_REASON = "exit_step"


class ExitConfig(StepConfig):
    reason: str = Field(default=DEFAULT_REASON, max_length=500)


class Exit(StepType):
    type = "exit"
    label = "Exit"
    description = "End the run here, with an optional reason."
    Config = ExitConfig
    form = "exit"  # hand-written: static/canvas/ConfigPanel.jsx FORMS
    branches = ()

    def stored_config(self, raw: dict[str, Any], parsed: Any) -> dict[str, Any]:
        # `{}` and `{reason: "exit_step"}` mean the same, and are stored alike (as `{}`).
        return parsed.model_dump(mode="json", exclude_defaults=True)

    def run(self, ctx: RunContext) -> Outcome:
        return Outcome(kind="exit", reason=ctx.config.reason)
