from typing import Any

from pydantic import Field, model_validator

from contacts_app.services import ContactDataTooLarge, contact_update_data
from workflows_app.steps.base import Outcome, RunContext, StepConfig, StepFailed, StepType

SUBSCRIPTION_ACTIONS: dict[str, bool | None] = {
    "none": None,
    "subscribe": True,
    "unsubscribe": False,
}


class UpdateContactConfig(StepConfig):
    set: dict[str, Any] = Field(default_factory=dict)
    unset: list[str] = Field(default_factory=list)
    subscribed: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _plunk_shape(cls, data: Any) -> Any:
        """Plunk's `{updates, subscriptionAction}`, with its data rules: a null value removes
        the key, an empty string changes nothing."""
        if not isinstance(data, dict) or not {"updates", "subscriptionAction"} & set(data):
            return data
        if {"set", "unset", "subscribed"} & set(data):
            raise ValueError(
                "use either updates/subscriptionAction (Plunk's shape) or set/unset/subscribed"
            )
        rest = set(data) - {"updates", "subscriptionAction"}
        if rest:
            raise ValueError(f"unknown fields: {', '.join(sorted(map(str, rest)))}")
        updates = data.get("updates")
        updates = {} if updates is None else updates
        action = data.get("subscriptionAction")
        action = "none" if action is None else action
        if not isinstance(updates, dict):
            raise ValueError("updates must be an object")
        if not isinstance(action, str) or action not in SUBSCRIPTION_ACTIONS:
            raise ValueError("subscriptionAction must be one of none, subscribe, unsubscribe")
        return {
            "set": {k: v for k, v in updates.items() if v is not None and v != ""},
            "unset": [k for k, v in updates.items() if v is None],
            "subscribed": SUBSCRIPTION_ACTIONS[action],
        }

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
    form = "update_contact"  # hand-written: static/canvas/ConfigPanel.jsx FORMS
    side_effects = True

    def stored_config(self, raw: dict[str, Any], parsed: Any) -> dict[str, Any]:
        # Ours, whatever was sent (Plunk's as the set/unset/subscribed it means), without the
        # fields that change nothing (`unset: []`, `subscribed: null`), so equal meanings are
        # stored alike.
        return parsed.model_dump(mode="json", exclude_defaults=True)

    def run(self, ctx: RunContext) -> Outcome:
        cfg = ctx.config
        # A dry run (workflows_app.simulate) changes only its own copy of the contact.
        update = contact_update_data if ctx.dry_run is None else ctx.dry_run.contact_update_data
        try:
            contact = update(
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
