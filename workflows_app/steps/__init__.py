"""The step types. STEP_TYPES is the single source of truth: model choices, graph validation,
the workflow file format and the canvas palette are all derived from it.

Adding a step type: see docs/adding-a-step-type.md.
"""

from workflows_app.steps.base import StepType
from workflows_app.steps.condition import Condition
from workflows_app.steps.delay import Delay
from workflows_app.steps.exit import Exit
from workflows_app.steps.send_email import SendEmail
from workflows_app.steps.split import Split
from workflows_app.steps.update_contact import UpdateContact
from workflows_app.steps.wait_for_event import WaitForEvent
from workflows_app.steps.webhook import Webhook

STEP_TYPES: dict[str, StepType] = {
    step.type: step
    for step in (
        SendEmail(),
        Delay(),
        WaitForEvent(),
        Condition(),
        Split(),
        Webhook(),
        UpdateContact(),
        Exit(),
    )
}


def step_type_choices() -> list[tuple[str, str]]:
    return [(name, step.label) for name, step in STEP_TYPES.items()]
