from pydantic import Field

from workflows_app.steps.base import Outcome, RunContext, StepConfig, StepType


class ExitConfig(StepConfig):
    reason: str = Field(default="", max_length=500)


class Exit(StepType):
    type = "exit"
    label = "Exit"
    description = "End the run here, with an optional reason."
    Config = ExitConfig
    branches = ()

    def run(self, ctx: RunContext) -> Outcome:
        return Outcome(kind="exit", reason=ctx.config.reason)
