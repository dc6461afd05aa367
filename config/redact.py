"""Keeps the tokens of the contact's pages out of logs. A token is a credential (it
unsubscribes and resubscribes its contact), and its path (`/unsubscribe/<token>`,
`/subscribe/<token>`, `/manage/<token>`) would otherwise be written by gunicorn's access log
(the request line and the Referer of the page's own form) and by Django's request log
(`Bad Request: /unsubscribe/...`)."""

from __future__ import annotations

import logging
import re

LINK_PATHS = ("/unsubscribe/", "/subscribe/", "/manage/")
LINK_TOKEN = re.compile(r"(/(?:unsubscribe|subscribe|manage)/)[^/?#\s\"']+")
REDACTED = r"\1[redacted]"


def redact(text: str) -> str:
    return LINK_TOKEN.sub(REDACTED, text)


def _has_link(text: str) -> bool:
    return any(path in text for path in LINK_PATHS)


class RedactFilter(logging.Filter):
    """Formats the record once and removes every token from it (message and traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: leave it to the formatter
            return True
        if _has_link(message):
            record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and _has_link(record.exc_text):
            record.exc_text = redact(record.exc_text)
        return True
