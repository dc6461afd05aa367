"""Condition: compare a contact field or event data with a value; branch `yes` or `no`.

Type rules (also in docs/workflow-format.md):
- A field is `contact.email`, `contact.subscribed`, `contact.<key>` or `event.<key>`; dots
  go into nested objects.
- A missing field (or null) satisfies only `not_exists` and `not_equals`.
- `equals` / `not_equals`: numbers (and numeric strings) compare as numbers, booleans as
  booleans (the strings "true"/"false" count), everything else as exact strings.
- `greater_than`, `less_than`, `greater_or_equal`, `less_or_equal`: both sides must be numbers
  (or numeric strings); otherwise the answer is `no`.
- `contains` / `not_contains`: substring of a string, or member of a list.
"""

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from workflows_app.steps.base import Outcome, RunContext, StepConfig, StepType

Operator = Literal[
    "equals",
    "not_equals",
    "contains",
    "not_contains",
    "greater_than",
    "less_than",
    "greater_or_equal",
    "less_or_equal",
    "exists",
    "not_exists",
]
MISSING = object()


class ConditionConfig(StepConfig):
    field: str = Field(pattern=r"^(contact|event)\.[^.\s][^\s]*$", max_length=255)
    operator: Operator
    value: Any = None

    @model_validator(mode="after")
    def _value_needed(self):
        if self.operator not in ("exists", "not_exists") and self.value is None:
            raise ValueError(f"operator {self.operator} needs a value")
        return self


def resolve(field: str, contact, context: dict) -> Any:
    root, _, path = field.partition(".")
    if root == "contact":
        if path == "email":
            return contact.email
        if path == "subscribed":
            return contact.subscribed
        value: Any = contact.data
    else:
        value = context
    # Keys may hold dots themselves (a resuming event is stored under its name, such as
    # "user.activated"): at each level the longest key that matches wins.
    parts = path.split(".")
    start = 0
    while start < len(parts):
        if not isinstance(value, dict):
            return MISSING
        for end in range(len(parts), start, -1):
            key = ".".join(parts[start:end])
            if key in value:
                value, start = value[key], end
                break
        else:
            return MISSING
    return MISSING if value is None else value


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def equal(actual: Any, expected: Any) -> bool:
    a, e = as_number(actual), as_number(expected)
    if a is not None and e is not None:
        return a == e
    if isinstance(actual, bool) or isinstance(expected, bool):
        return as_bool(actual) is not None and as_bool(actual) == as_bool(expected)
    if isinstance(actual, dict | list) or isinstance(expected, dict | list):
        return actual == expected
    return str(actual) == str(expected)


def evaluate(operator: str, actual: Any, expected: Any) -> bool:
    if operator == "exists":
        return actual is not MISSING
    if operator == "not_exists":
        return actual is MISSING
    if actual is MISSING:
        return operator == "not_equals"
    if operator == "equals":
        return equal(actual, expected)
    if operator == "not_equals":
        return not equal(actual, expected)
    if operator in ("contains", "not_contains"):
        if isinstance(actual, list):
            found = any(equal(item, expected) for item in actual)
        else:
            found = str(expected) in str(actual)
        return found if operator == "contains" else not found
    a, e = as_number(actual), as_number(expected)
    if a is None or e is None:
        return False
    return {
        "greater_than": a > e,
        "less_than": a < e,
        "greater_or_equal": a >= e,
        "less_or_equal": a <= e,
    }[operator]


class Condition(StepType):
    type = "condition"
    label = "Condition"
    description = "Branch on a contact field or event data."
    Config = ConditionConfig
    branches = ("yes", "no")

    def run(self, ctx: RunContext) -> Outcome:
        cfg = ctx.config
        actual = resolve(cfg.field, ctx.contact, ctx.execution.context)
        result = evaluate(cfg.operator, actual, cfg.value)
        shown = None if actual is MISSING else actual
        return Outcome(
            kind="next", branch="yes" if result else "no", output={"value": shown, "result": result}
        )
