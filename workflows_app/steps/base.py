"""The interface every step type implements: validate its config, run, return an Outcome.

A step never moves the execution itself; the engine applies the Outcome with a version-checked
update. Steps with side effects (email, webhook, contact writes) make them idempotent per step
visit, using `RunContext.visit_key`.
"""

from __future__ import annotations

import builtins
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, NoReturn

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

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


MAX_DURATION = timedelta(days=365)


def _positive_number(value: Any) -> int | float:
    # An integer stays an integer (a document exports as it was written); text and booleans
    # are not numbers here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    if not value > 0:  # also NaN
        raise ValueError("must be greater than 0")
    return value


class Duration(StepConfig):
    """An amount of a unit, decimals allowed (1.5 hours), more than zero and at most a year in
    all."""

    amount: Annotated[
        int | float,
        PlainValidator(_positive_number),
        WithJsonSchema({"type": "number", "exclusiveMinimum": 0}),
    ]
    unit: Unit

    @model_validator(mode="after")
    def _at_most_a_year(self) -> Duration:
        seconds = self.amount * UNITS[self.unit]
        if not seconds <= MAX_DURATION.total_seconds():  # also NaN
            raise ValueError(f"at most {MAX_DURATION.days} days in all")
        return self

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


class StepHold(Exception):
    """Not now, by rule (a marketing send in quiet hours): the run is WAITING until `until`,
    then the same visit runs again. Not a failure: it spends none of the retry policy's
    attempts. The visit's output says why (`reason`) and until when."""

    def __init__(self, reason: str, until: datetime):
        self.reason = reason
        self.until = until
        super().__init__(f"held for {reason} until {until.isoformat()}")


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
    # A dry run's stand-in for the outside world (workflows_app.simulate): a step with side
    # effects makes each of them through it (message_send, post_json, contact_update_data,
    # with the real functions' arguments), which records it instead. None: for real.
    dry_run: Any = None

    @property
    def visit_key(self) -> str:
        """Identifies this visit of this step by this execution; stable across retries."""
        return f"exec-{self.execution.pk}-run-{self.step_run.pk}"


@dataclass(frozen=True)
class RetryPolicy:
    """How a side-effect step retries a transient failure: up to `max_attempts` visits in all,
    waiting (in the database: the run's wake_at) with exponential backoff, jittered to 50-100%,
    `base_seconds` doubling up to `cap_seconds`; a Retry-After (seconds or an HTTP date, at most
    a day) wins when it asks for longer."""

    max_attempts: int = 6
    base_seconds: float = 10
    cap_seconds: float = 3600

    def retry_at(self, attempt: int, now: datetime, retry_after: str | None = None) -> datetime:
        delay = random.uniform(0.5, 1.0) * min(
            self.cap_seconds, self.base_seconds * 2 ** (attempt - 1)
        )
        if retry_after:
            try:
                asked = float(retry_after)
            except ValueError:
                try:
                    asked = (parsedate_to_datetime(retry_after) - now).total_seconds()
                except (TypeError, ValueError):
                    asked = 0
            delay = max(delay, min(asked, 86400))
        return now + timedelta(seconds=delay)


class StepType:
    """Everything about one kind of step. The engine, graph validation, the file format and the
    canvas ask this (through STEP_TYPES) and nothing else."""

    type: ClassVar[str]
    label: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[builtins.type[StepConfig]]
    # Every branch the type can have; `branches_for(config)` says which a given config has.
    branches: ClassVar[tuple[str, ...]] = ("next",)
    # Branches that exist only while a config field is set: {branch: field}. The canvas applies
    # it while the config is being edited (before it is valid); branches_for must agree.
    branch_requires: ClassVar[dict[str, str]] = {}
    # Branches named by a list in the config (a multi-branch Condition): {"field", "id",
    # "label", "when": {config field: value}, "extra": [branches always there]}. Empty: none.
    branch_list: ClassVar[dict[str, Any]] = {}
    # True when the step makes the run wait (Delay, Wait for Event): the engine then closes the
    # visit with the branch the timer or event chose when the run comes back.
    waits: ClassVar[bool] = False
    # True when running the step touches the outside world or other rows: the engine then
    # records the visit before running it and commits right after, so a retry finds the visit.
    side_effects: ClassVar[bool] = False
    # True when running the step mostly waits on another server (an email provider, a webhook
    # receiver): the engine then runs it in a thread, beside the same task's other such steps
    # (ENGINE_CONCURRENCY). A step that only writes to the database runs in the task's own
    # thread: threads would cost it more CPU than they save.
    waits_on_network: ClassVar[bool] = False
    retry_policy: ClassVar[RetryPolicy] = RetryPolicy()
    # The config field (if any) that names a template. In documents (files, canvas) it holds
    # the template's name; in the database the step points at the template by key instead
    # (Step.template), so a rename is safe and a template in use can not be deleted.
    template_field: ClassVar[str] = ""
    # How the canvas edits the config: "" is a form generated from the config's JSON schema
    # (static/canvas/SchemaForm.jsx); a name picks a hand-written form from the canvas's FORMS
    # (static/canvas/ConfigPanel.jsx), for a config a generated form would edit badly.
    form: ClassVar[str] = ""

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
        """The branches a valid (parsed) config has. The default applies `branch_requires`."""
        return tuple(
            b
            for b in self.branches
            if b not in self.branch_requires or getattr(config, self.branch_requires[b], None)
        )

    def stored_config(self, raw: dict[str, Any], parsed: Any) -> dict[str, Any]:
        """The config as stored and shown in documents, from what an editor sent (`raw`) and
        its parsed form. A type that accepts several shapes returns its one canonical shape;
        the default keeps what was sent (it is valid)."""
        return raw

    def run(self, ctx: RunContext) -> Outcome:
        raise NotImplementedError

    def batch_size(self) -> int:
        """How many visits of this type the engine may hand to `run_many` at once (1: never).
        For a type whose side effect has a batch form (a provider API that takes many emails
        in one call); asked each time, as it may depend on settings."""
        return 1

    def run_many(self, ctxs: list[RunContext]) -> list[Outcome | Exception]:
        """Runs several visits of this type together: for each, what `run` would have returned
        or raised. Each visit keeps every guarantee `run` gives it (its own ledger key, its own
        retry count); only the work is shared. The default runs them one by one."""
        results: list[Outcome | Exception] = []
        for ctx in ctxs:
            try:
                results.append(self.run(ctx))
            except Exception as exc:  # noqa: BLE001 - handed back to the engine, per visit
                results.append(exc)
        return results

    def retry(self, ctx: RunContext, error: str, retry_after: str | None = None) -> NoReturn:
        """A transient failure of this visit: try again later (StepRetry), or fail the run
        (StepFailed) once the policy's attempts are spent."""
        attempt = ctx.step_run.attempts + 1
        if attempt >= self.retry_policy.max_attempts:
            raise StepFailed(f"gave up after {attempt} attempts; last: {error}")
        raise StepRetry(error, self.retry_policy.retry_at(attempt, ctx.now, retry_after))

    def dry_run_detail(
        self, config: Any, outcome: Outcome, *, contact: Contact, context: dict[str, Any]
    ) -> dict[str, Any] | None:
        """What the dry run shows for a visit that needs explaining (a Condition's values, a
        Split's weights), from the parsed config, the visit's outcome, the contact and the
        execution's context as the step saw them. None: the dry run's own account (the email
        or webhook it recorded, the contact change, a skip's reason, else the output)."""
        return None

    def describe(self) -> dict[str, Any]:
        """What the canvas needs to draw and edit the type: label, branches and their rules,
        whether it waits, its template field, its form and the config's JSON schema."""
        return {
            "type": self.type,
            "label": self.label,
            "description": self.description,
            "branches": list(self.branches),
            "branch_requires": dict(self.branch_requires),
            "branch_list": dict(self.branch_list),
            "waits": self.waits,
            "side_effects": self.side_effects,
            "waits_on_network": self.waits_on_network,
            "template_field": self.template_field,
            "form": self.form,
            "config_schema": self.Config.model_json_schema(),
        }
