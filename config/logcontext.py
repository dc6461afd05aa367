"""What a log line is about (the web request, the execution and step a worker is on), and the
JSON log format (`LOG_FORMAT=json`) that writes it as fields.

Standard library only: gunicorn's config file imports this module before Django is set up.
"""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

LOG_FORMATS = ("text", "json")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
# Copy-on-write: each log_context block sets a new mapping and restores the previous one, so a
# field set for one request or run can never outlive its block (nor reach another thread).
_context: ContextVar[Mapping[str, Any]] = ContextVar("log_context", default=_EMPTY)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Adds `fields` to every log line written inside the block (None values are left out);
    nested blocks add to, and may override, the outer ones."""
    current = _context.get()
    merged = {**current, **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, Any]:
    return _context.get()


class ContextFilter(logging.Filter):
    """Puts the current context on the record (`record.context`), for the JSON formatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "context"):
            context = dict(_context.get())
            # Django logs a 4xx/5xx reply ("Not Found: /x") after the middleware is done; the
            # request is on the record.
            request_id = getattr(getattr(record, "request", None), "request_id", None)
            if request_id and "request_id" not in context:
                context["request_id"] = request_id
            record.context = context
        return True


# A record's own attributes; anything else on it came from `extra=` and is written as a field.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "context",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, exception (when
    there is one), then the context fields and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        context = getattr(record, "context", None)
        if context is None:  # a handler without ContextFilter
            context = _context.get()
        for key, value in {**context, **_extra(record)}.items():
            entry.setdefault(key, value)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    """`extra=` fields of plain values only: an object such as Django's `request` would be
    written through its repr, with a path that may hold a token (config/redact.py)."""
    return {
        k: v
        for k, v in record.__dict__.items()
        if k not in _RECORD_ATTRIBUTES and isinstance(v, str | int | float | bool)
    }


def log_format(value: str | None) -> str:
    """The LOG_FORMAT setting's value, or ValueError naming the valid ones."""
    word = (value or "text").strip().lower() or "text"
    if word not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return word


def configure_logging(config: dict[str, Any]) -> None:
    """Django's LOGGING_CONFIG with LOG_FORMAT=json: the LOGGING dict, and Python's warnings
    (a deprecation, a missing static folder) through logging, so they are JSON lines too."""
    logging.config.dictConfig(config)
    logging.captureWarnings(True)
