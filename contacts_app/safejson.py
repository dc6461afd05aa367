"""Strict JSON for everything the product parses from outside (API bodies, the canvas, admin JSON
fields, webhook replies), and sanitising for what must be stored anyway.

Python's json module accepts NaN, Infinity and numbers like 1e400 (which become inf) and
raises RecursionError on deeply nested input; PostgreSQL's jsonb refuses non-finite numbers,
NUL characters and lone surrogates. Each of those would otherwise surface as a 500. Here they
are a ValueError with a message a person can act on.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32  # objects/arrays inside each other; real payloads stay far below


class JsonRejected(json.JSONDecodeError):
    """Valid-looking input we refuse. A JSONDecodeError (so a ValueError), which is what Django's
    form JSONField and most callers already catch."""

    def __init__(self, message: str):
        super().__init__(message, "", 0)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _reject_constant(name: str) -> Any:
    raise JsonRejected(f"{name} is not a JSON number; use a finite number or null")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRejected(f"the number {text[:40]} is out of range")
    return value


def _int(text: str) -> int:
    # Python refuses to parse ints longer than 4300 digits with a ValueError of its own; words
    # it for people, and keeps numbers to what jsonb and every client can hold.
    if len(text.lstrip("-")) > 100:
        raise JsonRejected("a number has more than 100 digits")
    return int(text)


def depth(value: Any) -> int:
    """How deeply objects/arrays nest in `value` (a scalar is 0). Iterative: safe on anything
    json.loads produced."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        items: Any
        if isinstance(item, dict):
            items = item.values()
        elif isinstance(item, list):
            items = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        stack.extend((child, level) for child in items)
    return deepest


def loads(raw: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads that refuses NaN/Infinity, out-of-range numbers and nesting deeper than
    `max_depth`. Raises JsonRejected (a ValueError) with a readable message; plain syntax errors
    are json's own JSONDecodeError (also a ValueError)."""
    try:
        value = json.loads(
            raw, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_int
        )
    except RecursionError:
        raise JsonRejected(f"nested deeper than {max_depth} levels") from None
    except UnicodeDecodeError:
        raise JsonRejected("the body is not UTF-8") from None
    if depth(value) > max_depth:
        raise JsonRejected(f"nested deeper than {max_depth} levels")
    return value


class StrictDecoder(json.JSONDecoder):
    """For `forms.JSONField(decoder=StrictDecoder)` and the like: the same rules as loads()."""

    def decode(self, s: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return loads(s)


def unstorable(value: Any) -> str:
    """Why PostgreSQL text/jsonb would refuse `value` ("" when it would not): NUL characters
    and lone surrogates in strings (object keys included), non-finite floats."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "a string contains a NUL character"
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return "a string contains invalid Unicode (a lone surrogate)"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "a number is not finite"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return ""


def sanitize(value: Any, *, max_depth: int = MAX_DEPTH) -> tuple[Any, list[str]]:
    """A copy of `value` that jsonb can store, and notes on what was changed: NUL characters
    removed, lone surrogates replaced, non-finite numbers and anything deeper than `max_depth`
    replaced by null."""
    notes: set[str] = set()

    def clean(item: Any, level: int) -> Any:
        if isinstance(item, str):
            if "\x00" in item:
                notes.add("removed NUL characters")
                item = item.replace("\x00", "")
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    notes.add("replaced invalid Unicode")
                    item = item.encode("utf-8", "replace").decode("utf-8")
            return item
        if isinstance(item, float) and not math.isfinite(item):
            notes.add("replaced non-finite numbers with null")
            return None
        if isinstance(item, dict | list):
            if level >= max_depth:
                notes.add(f"cut nesting deeper than {max_depth} levels")
                return None
            if isinstance(item, dict):
                return {clean(k, level): clean(v, level + 1) for k, v in item.items()}
            return [clean(v, level + 1) for v in item]
        return item

    return clean(value, 0), sorted(notes)
