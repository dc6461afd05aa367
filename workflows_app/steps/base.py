"""The interface every step type implements: validate its config, run, return an Outcome.

A step never moves the execution itself; the engine applies the Outcome with a version-checked
update. Steps with side effects (email, webhook, contact writes) make them idempotent per step
visit, using `RunContext.visit_key`.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from contacts_app.models import Contact
    from workflows_app.models import Execution, Step, StepRun

UNITS: dict[str, int] = {
    "seconds": 1,
    "minutes": 60,
    "hours": 3600,
    "days": 86400,
    "weeks": 604800,
}
Unit = Literal["seconds", "minutes", "hours", "days", "weeks"]


class StepConfig(BaseModel):
    """Base for typed configs: unknown keys are an error, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Duration(StepConfig):
    amount: int = Field(ge=1, le=100_000)
    unit: Unit

    def as_timedelta(self) -> timedelta:
        return timedelta(seconds=self.amount * UNITS[self.unit])


class ConfigError(ValueError):
    """A step's config is invalid; `errors` maps a config field ("" for the whole) to messages."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" if k else v for k, v in errors.items()))


class StepFailed(Exception):
    """A permanent failure: the execution becomes FAILED with this message."""


class StepRetry(Exception):
    """A transient failure: the engine tries the same step visit again at `retry_at`."""

    def __init__(self, message: str, retry_at: datetime):
        self.retry_at = retry_at
        super().__init__(message)


@dataclass(frozen=True)
class Outcome:
    kind: Literal["next", "wait_until", "wait_for_event", "exit"]
    branch: str = "next"
    wake_at: datetime | None = None
    event: str = ""
    reason: str = ""
    skipped: bool = False
    output: Any = None
    message_id: int | None = None  # the ledger row a Send Email visit wrote
    # Merged into the execution context (e.g. a webhook's JSON reply under the step's key).
    context_update: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    execution: Execution
    contact: Contact
    step: Step
    step_run: StepRun
    config: Any
    now: datetime

    @property
    def visit_key(self) -> str:
        """Identifies this visit of this step by this execution; stable across retries."""
        return f"exec-{self.execution.pk}-run-{self.step_run.pk}"


class StepType:
    type: ClassVar[str]
    label: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[builtins.type[StepConfig]]
    branches: ClassVar[tuple[str, ...]] = ("next",)
    # True when running the step touches the outside world or other rows: the engine then
    # records the visit before running it and commits right after, so a retry finds the visit.
    side_effects: ClassVar[bool] = False
    # The config field (if any) that names a template. In documents (files, canvas) it holds
    # the template's name; in the database the step points at the template by key instead
    # (Step.template), so a rename is safe and a template in use can not be deleted.
    template_field: ClassVar[str] = ""

    def parse_config(self, raw: Any) -> Any:
        if not isinstance(raw, dict):
            raise ConfigError({"": "config must be an object"})
        try:
            return self.Config.model_validate(raw)
        except ValidationError as exc:
            errors: dict[str, str] = {}
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"])
                errors.setdefault(where, err["msg"])
            raise ConfigError(errors) from None

    def branches_for(self, config: Any) -> tuple[str, ...]:
        return self.branches

    def run(self, ctx: RunContext) -> Outcome:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the canvas palette needs: label, branches and the config's JSON schema."""
        return {
            "type": self.type,
            "label": self.label,
            "description": self.description,
            "branches": list(self.branches),
            "config_schema": self.Config.model_json_schema(),
        }
