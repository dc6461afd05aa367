from workflows_app.steps.base import Duration, Outcome, RunContext, StepType


class Delay(StepType):
    type = "delay"
    label = "Delay"
    description = "Wait for a fixed time, then continue."
    Config = Duration
    form = "delay"  # hand-written: static/canvas/ConfigPanel.jsx FORMS
    waits = True

    def run(self, ctx: RunContext) -> Outcome:
        wake_at = ctx.step_run.started_at
        return Outcome(kind="wait_until", wake_at=wake_at + ctx.config.as_timedelta())
