"""Liquid rendering for email templates (python-liquid: sandboxed, no file or code access).

HTML is auto-escaped; subject and text are not. Unknown variables render empty. Loops and
output are capped so a template can not hang a worker or fill its memory.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from liquid import Environment
from liquid.exceptions import LiquidError


class _Sandboxed(Environment):
    loop_iteration_limit = 10_000
    output_stream_limit = 1_000_000
    context_depth_limit = 30
    local_namespace_limit = 100_000


_plain = _Sandboxed(autoescape=False)
_html = _Sandboxed(autoescape=True)


class TemplateError(ValueError):
    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def _describe(exc: LiquidError) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    token = getattr(exc, "token", None)
    if token is not None and getattr(token, "source", None) is not None:
        line = token.source.count("\n", 0, token.start_index) + 1
        return f"line {line}: {text}"
    return text


def template_check(*, subject: str, html_body: str, text_body: str = "") -> dict[str, str]:
    """Parses each part; returns {field: "line N: problem"} for those that do not parse."""
    errors = {}
    for field, source, env in (
        ("subject", subject, _plain),
        ("html", html_body, _html),
        ("text", text_body, _plain),
    ):
        try:
            env.from_string(source or "")
        except LiquidError as exc:
            errors[field] = _describe(exc)
    return errors


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


def render(*, subject: str, html_body: str, text_body: str, variables: dict[str, Any]) -> Rendered:
    try:
        rendered_subject = " ".join(_plain.from_string(subject).render(**variables).split())
        rendered_html = _html.from_string(html_body).render(**variables)
        rendered_text = (
            _plain.from_string(text_body).render(**variables)
            if text_body
            else html_to_text(rendered_html)
        )
    except LiquidError as exc:
        raise TemplateError({"template": _describe(exc)}) from exc
    return Rendered(rendered_subject, rendered_html, rendered_text)


def render_json(value: Any, variables: dict[str, Any]) -> Any:
    """Renders Liquid in every string of a JSON value (keys stay as they are)."""
    if isinstance(value, str):
        try:
            return _plain.from_string(value).render(**variables)
        except LiquidError as exc:
            raise TemplateError({"body": _describe(exc)}) from exc
    if isinstance(value, dict):
        return {k: render_json(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [render_json(v, variables) for v in value]
    return value


class _TextExtractor(HTMLParser):
    BLOCKS = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._href: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script", "head"):
            self._skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")
        elif tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag):
        if tag in ("style", "script", "head"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")
        elif tag == "a" and self._href:
            self.parts.append(f" ({self._href})")
            self._href = None

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def html_to_text(source: str) -> str:
    parser = _TextExtractor()
    parser.feed(source)
    text = html.unescape("".join(parser.parts))
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()
