"""Condition: compare one field with a value (branches `yes` / `no`), or with a list of named
branches (`mode: "multi"`: the first that matches, else `default`). Plunk's rules, exactly; the
table is in docs/workflow-format.md.

Fields resolve over `{contact: {email, subscribed}, data: <contact data>, event: <context>,
workflow: <context>}`; `contact.data.X` means `data.X`, and ours, `contact.X`, a data key X.
Comparisons mirror JavaScript: `equals` is `===` (objects and lists by value), `contains` works
on `String(x)`, the order operators on `Number(x)`; a missing or null field fails every
operator but `notExists`.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from workflows_app.steps.base import Outcome, RunContext, StepConfig, StepType

if TYPE_CHECKING:
    from contacts_app.models import Contact

# Our names before Plunk's: accepted on input, stored as Plunk's (migration 0006 rewrote them).
LEGACY_OPERATORS = {
    "not_equals": "notEquals",
    "not_contains": "notContains",
    "greater_than": "greaterThan",
    "less_than": "lessThan",
    "greater_or_equal": "greaterThanOrEqual",
    "less_or_equal": "lessThanOrEqual",
    "not_exists": "notExists",
}
NO_VALUE = ("exists", "notExists")
Operator = Literal[
    "equals",
    "notEquals",
    "contains",
    "notContains",
    "greaterThan",
    "lessThan",
    "greaterThanOrEqual",
    "lessThanOrEqual",
    "exists",
    "notExists",
]
OPERATORS: tuple[str, ...] = get_args(Operator)
# Optional in multi mode, but the form should still see the plain list of operators.
OptionalOperator = Annotated[
    Operator | None, WithJsonSchema({"type": "string", "enum": list(OPERATORS)})
]
DEFAULT = "default"
MAX_BRANCHES = 20
FIELD = re.compile(r"^(contact|data|event|workflow)\.[^.\s](.*\S)?$")
MISSING = object()


def canonical_operator(value: Any) -> Any:
    return LEGACY_OPERATORS.get(value, value) if isinstance(value, str) else value


def _needs_value(operator: str, value: Any) -> None:
    if operator not in NO_VALUE and value is None:
        raise ValueError(f"operator {operator} needs a value")


def _with_plunk_operator(data: Any) -> Any:
    """Our earlier operator names are accepted and read as Plunk's."""
    if isinstance(data, dict) and "operator" in data:
        data = {**data, "operator": canonical_operator(data["operator"])}
    return data


# A branch named by its config (here and in a Split): the name transitions and history use.
BranchId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", min_length=1, max_length=64)]


class Branch(StepConfig):
    id: BranchId
    name: str = Field(min_length=1, max_length=200)
    operator: Operator
    value: Any = None

    _legacy_operator = model_validator(mode="before")(_with_plunk_operator)

    @field_validator("id")
    @classmethod
    def _not_default(cls, value: str) -> str:
        if value == DEFAULT:
            raise ValueError("'default' is the branch taken when none matches; pick another id")
        return value

    @model_validator(mode="after")
    def _value_needed(self) -> Branch:
        _needs_value(self.operator, self.value)
        return self


class ConditionConfig(StepConfig):
    mode: Literal["binary", "multi"] = "binary"
    field: str = Field(max_length=255)
    operator: OptionalOperator = None
    value: Any = None
    branches: list[Branch] | None = Field(default=None, min_length=1, max_length=MAX_BRANCHES)

    _legacy_operator = model_validator(mode="before")(_with_plunk_operator)

    @field_validator("field")
    @classmethod
    def _field_path(cls, value: str) -> str:
        if not FIELD.match(value):
            raise ValueError(
                "a field is data.<key>, contact.email, contact.subscribed, contact.<key>, "
                "contact.data.<key>, event.<key> or workflow.<key>"
            )
        return value

    @model_validator(mode="after")
    def _shape(self) -> ConditionConfig:
        if self.mode == "binary":
            if self.branches is not None:
                raise ValueError('branches are for mode "multi"')
            if self.operator is None:
                raise ValueError("choose an operator")
            _needs_value(self.operator, self.value)
            return self
        if self.operator is not None or self.value is not None:
            raise ValueError('in mode "multi" each branch has its operator and value')
        if not self.branches:
            raise ValueError(f'mode "multi" needs 1 to {MAX_BRANCHES} branches')
        ids = [b.id for b in self.branches]
        if len(set(ids)) != len(ids):
            raise ValueError("branch ids must be unique")
        return self


# --- resolving a field ----------------------------------------------------------------------


def resolve(field: str, contact: Any, context: dict[str, Any]) -> Any:
    """The field's value, or MISSING. Null is returned as None (it is present but empty)."""
    root, _, path = field.partition(".")
    value: Any
    if root == "contact":
        if path == "email":
            return contact.email
        if path == "subscribed":
            return contact.subscribed
        if path.startswith("data."):  # Plunk's contact.data.X means data.X
            path = path[len("data.") :]
        value = contact.data
    elif root == "data":
        value = contact.data
    else:  # event and workflow: both the execution context
        value = context
    # Keys may hold dots themselves (a resuming event is stored under its name, such as
    # "user.activated"): at each level the longest key that matches wins.
    parts = path.split(".")
    start = 0
    while start < len(parts):
        if isinstance(value, list):  # as in JS: an index, or the length
            part = parts[start]
            if part == "length":
                value = len(value)
            elif part.isdigit() and part.isascii() and str(int(part)) == part:
                if int(part) >= len(value):
                    return MISSING
                value = value[int(part)]
            else:
                return MISSING
            start += 1
            continue
        if not isinstance(value, dict):
            return MISSING
        for end in range(len(parts), start, -1):
            key = ".".join(parts[start:end])
            if key in value:
                value, start = value[key], end
                break
        else:
            return MISSING
    return value


# --- JavaScript's view of JSON values -------------------------------------------------------

# StringToNumber: JS whitespace is trimmed; decimal (with sign, exponent, "Infinity") or an
# unsigned 0x / 0o / 0b literal; anything else (underscores, "inf", "12px") is NaN.
JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff" + "".join(
    chr(c) for c in range(0x2000, 0x200B)
)
JS_DECIMAL = re.compile(r"[+-]?(Infinity|([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)")
JS_RADIX = {"x": (16, "0-9a-fA-F"), "o": (8, "0-7"), "b": (2, "01")}


def _double(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond a double: JSON.parse gives ±Infinity
        return math.copysign(math.inf, value)


def js_number(value: Any) -> float:
    """JavaScript's Number(value) for a JSON value."""
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return _double(value)
    if isinstance(value, list):  # ToPrimitive of an array is its join(",")
        return js_number(js_string(value))
    if isinstance(value, dict):
        return math.nan  # "[object Object]"
    text = str(value).strip(JS_SPACE)
    if not text:
        return 0.0
    if JS_DECIMAL.fullmatch(text):
        return float(text.replace("Infinity", "inf"))
    if len(text) > 2 and text[0] == "0" and text[1].lower() in JS_RADIX:
        base, digits = JS_RADIX[text[1].lower()]
        if re.fullmatch(f"[{digits}]+", text[2:]):
            return _double(int(text[2:], base))
    return math.nan


def js_number_string(number: float) -> str:
    """Number::toString: the shortest round-trip digits (as Python's repr), laid out as JS
    does (plain up to 1e21, exponent below 1e-6)."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    shortest = Decimal(repr(abs(number))).normalize().as_tuple()
    digits = "".join(map(str, shortest.digits))
    k = len(digits)
    n = int(shortest.exponent) + k  # number = 0.digits × 10^n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        exponent = f"e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
        text = (digits if k == 1 else f"{digits[0]}.{digits[1:]}") + exponent
    return sign + text


def js_string(value: Any) -> str:
    """JavaScript's String(value) for a JSON value."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return js_number_string(_double(value))
    if isinstance(value, list):  # Array.prototype.join: null items are empty
        return ",".join("" if item is None else js_string(item) for item in value)
    return "[object Object]"


def strict_equal(a: Any, b: Any) -> bool:
    """`===`, except that objects and lists compare by value (member by member, strictly)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return _double(a) == _double(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def evaluate(operator: str, actual: Any, expected: Any) -> bool:
    if operator == "exists":
        return actual is not MISSING and actual is not None
    if operator == "notExists":
        return actual is MISSING or actual is None
    if actual is MISSING or actual is None:
        return False
    if operator == "equals":
        return strict_equal(actual, expected)
    if operator == "notEquals":
        return not strict_equal(actual, expected)
    if operator == "contains":
        return js_string(expected) in js_string(actual)
    if operator == "notContains":
        return js_string(expected) not in js_string(actual)
    a, e = js_number(actual), js_number(expected)  # NaN compares false
    return {
        "greaterThan": a > e,
        "lessThan": a < e,
        "greaterThanOrEqual": a >= e,
        "lessThanOrEqual": a <= e,
    }[operator]


class Condition(StepType):
    type = "condition"
    label = "Condition"
    description = "Branch on a contact field or event data: yes / no, or several named branches."
    Config = ConditionConfig
    form = "condition"  # hand-written: static/canvas/ConfigPanel.jsx FORMS
    # The binary branches. In mode "multi" the branches are the config's list plus `default`
    # (branch_list tells the canvas; branches_for tells everything else).
    branches = ("yes", "no")
    branch_list = {
        "field": "branches",
        "id": "id",
        "label": "name",
        "when": {"mode": "multi"},
        "extra": [DEFAULT],
    }

    def branches_for(self, config: Any) -> tuple[str, ...]:
        if config.mode == "multi":
            return (*(b.id for b in config.branches), DEFAULT)
        return self.branches

    def stored_config(self, raw: dict[str, Any], parsed: Any) -> dict[str, Any]:
        """Plunk's operator names; no `mode` for a yes/no condition; no empty values."""

        def comparison(operator: str, value: Any) -> dict[str, Any]:
            return {"operator": operator} | ({} if value is None else {"value": value})

        if parsed.mode == "binary":
            return {"field": parsed.field} | comparison(parsed.operator, parsed.value)
        return {
            "mode": "multi",
            "field": parsed.field,
            "branches": [
                {"id": b.id, "name": b.name} | comparison(b.operator, b.value)
                for b in parsed.branches
            ],
        }

    def dry_run_detail(
        self, config: Any, outcome: Outcome, *, contact: Contact, context: dict[str, Any]
    ) -> dict[str, Any]:
        """The field's value as the step saw it and each comparison's result."""
        actual = resolve(config.field, contact, context)
        seen = None if actual is MISSING else actual
        if config.mode == "binary":
            return {
                "field": config.field,
                "operator": config.operator,
                "expected": config.value,
                "actual": seen,
                "present": actual is not MISSING,
                "result": outcome.branch == "yes",
                "branch": outcome.branch,
            }
        return {
            "field": config.field,
            "actual": seen,
            "present": actual is not MISSING,
            "branches": [
                {
                    "id": b.id,
                    "name": b.name,
                    "operator": b.operator,
                    "expected": b.value,
                    "result": evaluate(b.operator, actual, b.value),
                }
                for b in config.branches
            ],
            "branch": outcome.branch,
        }

    def run(self, ctx: RunContext) -> Outcome:
        cfg = ctx.config
        actual = resolve(cfg.field, ctx.contact, ctx.execution.context)
        seen = None if actual is MISSING else actual
        if cfg.mode == "binary":
            result = evaluate(cfg.operator, actual, cfg.value)
            return Outcome(
                kind="next",
                branch="yes" if result else "no",
                output={"value": seen, "result": result},
            )
        for branch in cfg.branches:
            if evaluate(branch.operator, actual, branch.value):
                return Outcome(
                    kind="next",
                    branch=branch.id,
                    output={"value": seen, "branch": branch.id, "name": branch.name},
                )
        return Outcome(
            kind="next", branch=DEFAULT, output={"value": seen, "branch": DEFAULT, "name": DEFAULT}
        )
