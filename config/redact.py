"""Keeps unsubscribe tokens out of logs. A token is a credential (it unsubscribes and
resubscribes its contact), and its path `/unsubscribe/<token>` would otherwise be written by
gunicorn's access log (the request line and the Referer of the page's own form) and by
Django's request log (`Bad Request: /unsubscribe/...`)."""

from __future__ import annotations

import logging
import re

UNSUBSCRIBE_TOKEN = re.compile(r"(/unsubscribe/)[^/?#\s\"']+")
REDACTED = r"\1[redacted]"


def redact(text: str) -> str:
    return UNSUBSCRIBE_TOKEN.sub(REDACTED, text)


class RedactFilter(logging.Filter):
    """Formats the record once and removes every token from it (message and traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: leave it to the formatter
            return True
        if "/unsubscribe/" in message:
            record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and "/unsubscribe/" in record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
