"""A/B Split: send each contact down one of 2-10 weighted branches, the same one every time.

The branch is a pure function of (contact, workflow, step key) and the weights: a SHA-256 of
the three, read as a point in [0, 1) and laid over the cumulative weights. So a contact who
re-enters, or whose run is retried by another worker, takes the branch it took before, and
nothing is stored to remember it. Python's `hash()` would not do: it is salted per process.
Including the workflow and step decorrelates splits: the contacts in branch A of one test are
not, as a group, those in branch A of the next.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, PlainValidator, WithJsonSchema, field_validator

from workflows_app.steps.base import Outcome, RunContext, StepConfig, StepType, _positive_number

if TYPE_CHECKING:
    from contacts_app.models import Contact
from workflows_app.steps.condition import BranchId

MIN_BRANCHES, MAX_BRANCHES = 2, 10
# Shares, not counts: a cap keeps the sum of ten weights a finite, exact-enough float.
MAX_WEIGHT = 1_000_000


def _weight(value: Any) -> int | float:
    value = _positive_number(value)
    if not math.isfinite(value) or value > MAX_WEIGHT:
        raise ValueError(f"must be at most {MAX_WEIGHT}")
    return value


class SplitBranch(StepConfig):
    id: BranchId
    weight: Annotated[
        int | float,
        PlainValidator(_weight),
        WithJsonSchema({"type": "number", "exclusiveMinimum": 0, "maximum": MAX_WEIGHT}),
    ]


class SplitConfig(StepConfig):
    # The default is what a step added on the canvas starts with (the canvas takes the schema's
    # defaults), so it has its two ports at once.
    branches: list[SplitBranch] = Field(
        default=[{"id": "a", "weight": 50}, {"id": "b", "weight": 50}],
        validate_default=True,
        min_length=MIN_BRANCHES,
        max_length=MAX_BRANCHES,
    )

    @field_validator("branches")
    @classmethod
    def _unique_ids(cls, branches: list[SplitBranch]) -> list[SplitBranch]:
        seen: set[str] = set()
        for branch in branches:
            if branch.id in seen:
                raise ValueError(f"branch ids must be unique ('{branch.id}' is there twice)")
            seen.add(branch.id)
        return branches


def split_point(contact: Any, workflow: Any, step_key: str) -> float:
    """The contact's fixed point in [0, 1) at this step: 53 bits of a SHA-256, so exactly
    representable and never 1.0."""
    digest = hashlib.sha256(f"{contact}:{workflow}:{step_key}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / 2**53


def split_choose(branches: Sequence[SplitBranch], point: float) -> str:
    """The branch whose share of the cumulative weights holds `point`."""
    target = point * sum(b.weight for b in branches)
    running: float = 0
    for branch in branches:
        running += branch.weight
        if target < running:
            return branch.id
    return branches[-1].id  # only rounding gets here


class Split(StepType):
    type = "split"
    label = "A/B Split"
    description = "Send each contact down one of several weighted branches, always the same one."
    Config = SplitConfig
    form = "split"  # hand-written: static/canvas/ConfigPanel.jsx FORMS
    branches = ()  # none fixed: one per item of the config's `branches`
    branch_list = {"field": "branches", "id": "id", "label": "id", "when": {}, "extra": []}

    def branches_for(self, config: Any) -> tuple[str, ...]:
        return tuple(b.id for b in config.branches)

    def stored_config(self, raw: dict[str, Any], parsed: Any) -> dict[str, Any]:
        return {"branches": [{"id": b.id, "weight": b.weight} for b in parsed.branches]}

    def dry_run_detail(
        self, config: Any, outcome: Outcome, *, contact: Contact, context: dict[str, Any]
    ) -> dict[str, Any]:
        """The branch taken, every branch's weight and where the contact fell."""
        return {
            "branch": outcome.branch,
            "weights": {b.id: b.weight for b in config.branches},
            "bucket": (outcome.output or {}).get("bucket"),
        }

    def run(self, ctx: RunContext) -> Outcome:
        # A contact that is not stored (a dry run's made-up one) has no key yet: its address
        # stands in.
        contact = ctx.contact.pk if ctx.contact.pk is not None else ctx.contact.email
        point = split_point(contact, ctx.step.workflow_id, ctx.step.key)
        branch = split_choose(ctx.config.branches, point)
        return Outcome(kind="next", branch=branch, output={"branch": branch, "bucket": point})
