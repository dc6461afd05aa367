from typing import Any

from pydantic import Field, model_validator

from contacts_app.services import ContactDataTooLarge, contact_update_data
from workflows_app.steps.base import Outcome, RunContext, StepConfig, StepFailed, StepType


class UpdateContactConfig(StepConfig):
    set: dict[str, Any] = Field(default_factory=dict)
    unset: list[str] = Field(default_factory=list)
    subscribed: bool | None = None

    @model_validator(mode="after")
    def _changes_something(self):
        if not self.set and not self.unset and self.subscribed is None:
            raise ValueError("set a key, remove a key or change subscribed")
        if both := set(self.set) & set(self.unset):
            raise ValueError(f"keys both set and removed: {', '.join(sorted(both))}")
        return self


class UpdateContact(StepType):
    """Writes are absolute (set to a value, remove a key), so repeating a visit is harmless."""

    type = "update_contact"
    label = "Update Contact"
    description = "Set or remove contact data, or change the subscription."
    Config = UpdateContactConfig
    side_effects = True

    def run(self, ctx: RunContext) -> Outcome:
        cfg = ctx.config
        try:
            contact = contact_update_data(
                contact=ctx.contact, set=cfg.set, unset=cfg.unset, subscribed=cfg.subscribed
            )
        except ContactDataTooLarge as exc:
            raise StepFailed(str(exc)) from exc
        # Later steps of this pass (a condition, an email) read the run's copy: keep it current.
        ctx.contact.data, ctx.contact.subscribed = contact.data, contact.subscribed
        return Outcome(
            kind="next",
            output={"data": contact.data, "subscribed": contact.subscribed},
        )
