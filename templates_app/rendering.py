"""Liquid rendering for email templates (python-liquid: sandboxed, no file or code access).

HTML is auto-escaped (`| raw` opts out); subject and text are not. Unknown variables render
empty. The language is Liquid as Plunk speaks it (language.py: `??` fallbacks, keys with
spaces, JS truthiness in conditions, lists as `<li>` lines).

Every render is bounded, so a template can not hang a worker or fill its memory: output size
(per part), loop iterations, the size of ranges and lists a filter takes or returns, the size
of a filter's string result, and the time of the whole render (TEMPLATE_RENDER_TIMEOUT_SECONDS).
Going past one raises TemplateError naming the limit.
"""

from __future__ import annotations

import functools
import html
import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from django.conf import settings
from liquid import BoundTemplate, Environment, RenderContext
from liquid.builtin.expressions import LoopExpression
from liquid.builtin.output import OutputNode
from liquid.builtin.tags.for_tag import ForTag
from liquid.builtin.tags.tablerow_tag import TablerowTag
from liquid.exceptions import (
    LiquidError,
    LocalNamespaceLimitError,
    LoopIterationLimitError,
    OutputStreamLimitError,
    ResourceLimitError,
)
from liquid.output import LimitedStringIO
from liquid.undefined import is_undefined

from templates_app import language
from templates_app.css import InlineLimitError, inline_css
from templates_app.mjml import MjmlError, mjml_check, mjml_to_html

MAX_OUTPUT_BYTES = 1_000_000  # per rendered part (subject, HTML, text, each JSON string)
MAX_ITEMS = 10_000  # loop iterations in all, and items in a range or list a filter handles
MAX_FILTER_CHARS = MAX_OUTPUT_BYTES  # a filter's string result
# Filters whose result can be their input's length times an argument's: `join` of 10,000 items
# with a 1 MB separator would be built before the result could be checked, so it is bounded first.
_MULTIPLYING_FILTERS = {"join", "replace"}
MAX_FILTER_WORK = 10 * MAX_OUTPUT_BYTES

_deadline: ContextVar[float | None] = ContextVar("template_render_deadline", default=None)


class TemplateLimitError(ResourceLimitError):
    """A render went past one of the limits above."""


@contextmanager
def _render_deadline() -> Iterator[None]:
    """One deadline for the whole render (all parts); nested calls keep the outer one."""
    if _deadline.get() is not None:
        yield
        return
    seconds = float(getattr(settings, "TEMPLATE_RENDER_TIMEOUT_SECONDS", 2))
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def _check_deadline() -> None:
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        seconds = getattr(settings, "TEMPLATE_RENDER_TIMEOUT_SECONDS", 2)
        raise TemplateLimitError(f"rendering took longer than {seconds} s", token=None)


def _describe_items(value: Any) -> str:
    if isinstance(value, range):
        return f"the range ({value.start}..{value.stop - 1}) has {len(value)} items"
    return f"the list has {len(value)} items"


def _guarded(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(left: Any, *args: Any, **kwargs: Any) -> Any:
        _check_deadline()
        if isinstance(left, range | list | tuple) and len(left) > MAX_ITEMS:
            raise TemplateLimitError(
                f"{name}: {_describe_items(left)}, more than the limit of {MAX_ITEMS}", token=None
            )
        if name in _MULTIPLYING_FILTERS and isinstance(left, str | range | list | tuple):
            strings = [a for a in (*args, *kwargs.values()) if isinstance(a, str)]
            if (len(left) + 1) * max((len(a) for a in strings), default=1) > MAX_FILTER_WORK:
                raise TemplateLimitError(
                    f"{name}: the result would be too large (limit {MAX_FILTER_CHARS} characters)",
                    token=None,
                )
        result = func(left, *args, **kwargs)
        if isinstance(result, str) and len(result) > MAX_FILTER_CHARS:
            raise TemplateLimitError(
                f"{name}: the result has {len(result)} characters, more than the limit of "
                f"{MAX_FILTER_CHARS}",
                token=None,
            )
        if isinstance(result, range | list | tuple) and len(result) > MAX_ITEMS:
            raise TemplateLimitError(
                f"{name}: {_describe_items(result)}, more than the limit of {MAX_ITEMS}", token=None
            )
        return result

    for attribute in ("validate",):  # read at parse time by liquid, if the filter has it
        if hasattr(func, attribute):
            setattr(guarded, attribute, getattr(func, attribute))
    return guarded


class _Buffer(LimitedStringIO):
    """Output (and capture) buffer: size-limited like liquid's, and checks the deadline."""

    def write(self, s: str) -> int:
        _check_deadline()
        if s and self.size + len(s.encode("utf-8")) > self.limit:
            raise TemplateLimitError(
                f"the output is larger than the limit of {MAX_OUTPUT_BYTES} bytes", token=None
            )
        return super().write(s)


class _Context(RenderContext):
    def filter(self, name, token):  # noqa: A003 - liquid's name
        return _guarded(name, super().filter(name, token))

    def get_buffer(self, buf=None):
        carry = buf.size if isinstance(buf, LimitedStringIO) else 0
        return _Buffer(limit=MAX_OUTPUT_BYTES - carry)


class _BoundedLoop(LoopExpression):
    """A `for`/`tablerow` over a range: refused past MAX_ITEMS before anything iterates, so an
    `offset` can not make liquid skip through a billion items (work that writes no output and
    runs no filter, which the other limits would not see)."""

    __slots__ = ()

    def _to_iter(self, obj: object, context: RenderContext) -> tuple[Iterator[Any], int]:
        if isinstance(obj, range):
            try:
                size = len(obj)
            except OverflowError:
                size = MAX_ITEMS + 1
            if size > MAX_ITEMS:
                raise TemplateLimitError(
                    f"for: the range has more than {MAX_ITEMS} items, the limit", token=None
                )
        return super()._to_iter(obj, context)


class _BoundedFor(ForTag):
    def parse(self, stream):
        node = super().parse(stream)
        if isinstance(getattr(node, "expression", None), LoopExpression):
            node.expression.__class__ = _BoundedLoop  # type: ignore[attr-defined]
        return node


class _BoundedTablerow(TablerowTag):
    def parse(self, stream):
        node = super().parse(stream)
        node.expression.__class__ = _BoundedLoop
        return node


class _Template(BoundTemplate):
    context_class = _Context

    def _get_buffer(self):
        return _Buffer(limit=MAX_OUTPUT_BYTES)


class _Sandboxed(Environment):
    template_class = _Template
    loop_iteration_limit = MAX_ITEMS
    output_stream_limit = MAX_OUTPUT_BYTES
    context_depth_limit = 30
    local_namespace_limit = 100_000  # bytes, in the message below

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        # A workflow renders the same few templates for every contact: each source is parsed
        # once per process (parsing was a quarter of a send's CPU). A parsed template holds no
        # state of a render (that lives in the render's context), so threads may share it.
        self._parsed = functools.lru_cache(maxsize=256)(super().from_string)

    def from_string(  # type: ignore[override]
        self, source: str, name: str = "", path: Any = None, globals: Any = None, matter: Any = None
    ) -> BoundTemplate:
        if name or path or globals or matter:
            return super().from_string(source, name, path, globals, matter)
        return self._parsed(source)

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        self.tags["for"] = _BoundedFor(self)
        self.tags["tablerow"] = _BoundedTablerow(self)
        language.install(self)  # Plunk's dialect: `??`, keys with spaces, JS truthiness, raw


_plain = _Sandboxed(autoescape=False)
_html = _Sandboxed(autoescape=True)


class TemplateError(ValueError):
    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


_LIMIT_MESSAGES: dict[type[LiquidError], str] = {
    LoopIterationLimitError: f"loops would run more than {MAX_ITEMS} iterations in all",
    OutputStreamLimitError: f"the output is larger than the limit of {MAX_OUTPUT_BYTES} bytes",
    LocalNamespaceLimitError: "assigned variables are larger than the limit of 100000 bytes",
}


def _describe(exc: LiquidError) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = _LIMIT_MESSAGES.get(type(exc), text)
    token = getattr(exc, "token", None)
    if token is not None and getattr(token, "source", None) is not None:
        line = token.source.count("\n", 0, token.start_index) + 1
        return f"line {line}: {text}"
    return text


def template_check(
    *, subject: str, html_body: str, text_body: str = "", mjml_body: str = ""
) -> dict[str, str]:
    """Parses each part's Liquid; returns {field: "line N: problem"} for those that do not
    parse. `mjml_body`'s MJML is not compiled here: see template_problems."""
    errors = {}
    for field, source, env in (
        ("subject", subject, _plain),
        ("html", html_body, _html),
        ("text", text_body, _plain),
        ("mjml", mjml_body, _html),
    ):
        try:
            env.from_string(source or "")
        except LiquidError as exc:
            errors[field] = _describe(exc)
    return errors


def liquid_variables(source: str, *, html: bool = False) -> list[list[Any]]:
    """The global variables a template part reads, as segments (`[["contact", "plan"]]`);
    raises LiquidError if it does not parse."""
    return (_html if html else _plain).from_string(source).global_variable_segments()


@dataclass(frozen=True)
class Problem:
    """Why a template can not be saved: the field, the line (None when unknown), the words."""

    field: str
    line: int | None
    message: str


_LINE = re.compile(r"^line (\d+): ")


def template_problems(
    *, subject: str, html_body: str, text_body: str = "", mjml_body: str = ""
) -> list[Problem]:
    """Every reason to refuse the template on save: Liquid that does not parse (each field),
    then MJML that does not compile (only when its Liquid parses). The message is whole
    ("Liquid syntax error, line 3: ...", "MJML error, line 3: ...") for a form or an API."""
    problems = []
    liquid = template_check(
        subject=subject, html_body=html_body, text_body=text_body, mjml_body=mjml_body
    )
    for field, problem in liquid.items():
        match = _LINE.match(problem)
        line = int(match.group(1)) if match else None
        problems.append(Problem(field, line, f"Liquid syntax error, {problem}"))
    if mjml_body and "mjml" not in liquid:
        error = mjml_check(mjml_body)
        if error is not None:
            problems.append(Problem("mjml", error.line, f"MJML error, {error}"))
    return problems


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


def render(
    *,
    subject: str,
    html_body: str,
    text_body: str,
    variables: dict[str, Any],
    mjml_body: str = "",
) -> Rendered:
    """With `mjml_body` (an MJML template), the HTML is its rendered MJML compiled (the Liquid
    first, so a `{% for %}` can make columns); else `html_body` rendered, its CSS inlined."""
    try:
        with _render_deadline():
            rendered_subject = " ".join(_plain.from_string(subject).render(**variables).split())
            if mjml_body:
                rendered_html = _compile(_html.from_string(mjml_body).render(**variables))
            else:
                rendered_html = inline_css(
                    _html.from_string(html_body).render(**variables), max_bytes=MAX_OUTPUT_BYTES
                )
            _check_deadline()
            rendered_text = (
                _plain.from_string(text_body).render(**variables)
                if text_body
                else html_to_text(rendered_html)
            )
    except LiquidError as exc:
        raise TemplateError({"template": _describe(exc)}) from exc
    except InlineLimitError as exc:
        raise TemplateError({"template": str(exc)}) from exc
    return Rendered(rendered_subject, rendered_html, rendered_text)


def _compile(mjml: str) -> str:
    """Rendered MJML to HTML, bounded like a render: its input by the output limit of the
    Liquid that made it, its output here (MJML's HTML is several times its source)."""
    try:
        html = mjml_to_html(mjml)
    except MjmlError as exc:
        # A value a render put in (with `| raw`) can break the MJML the check accepted.
        raise TemplateError({"template": f"the rendered MJML does not compile: {exc}"}) from exc
    if len(html.encode("utf-8")) > MAX_OUTPUT_BYTES:
        raise TemplateLimitError(
            f"the compiled MJML is larger than the limit of {MAX_OUTPUT_BYTES} bytes", token=None
        )
    return html


def render_json(value: Any, variables: dict[str, Any]) -> Any:
    """Renders Liquid in every string of a JSON value (keys stay as they are), all strings
    under one deadline."""
    with _render_deadline():
        return _render_json(value, variables)


def _render_json(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, str):
        try:
            return _plain.from_string(value).render(**variables)
        except LiquidError as exc:
            raise TemplateError({"body": _describe(exc)}) from exc
    if isinstance(value, dict):
        return {k: _render_json(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(v, variables) for v in value]
    return value


# A string that is one output statement and nothing else (whitespace aside): `{{ x }}`.
ONE_OUTPUT = re.compile(r"\s*\{\{(?:(?!\{\{|\}\}|\{%).)*\}\}\s*", re.DOTALL)


def render_typed_json(value: Any, variables: dict[str, Any]) -> Any:
    """Liquid in every string of a JSON value (a Webhook body); a string that is exactly one
    `{{ x }}` becomes x's own JSON value (a number, boolean, object, list or null), not its
    text, as on Plunk."""
    with _render_deadline():  # one deadline for the whole body, as render_json
        return _render_body(value, variables)


def _render_body(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return (
            _typed(value, variables)
            if ONE_OUTPUT.fullmatch(value)
            else render_json(value, variables)
        )
    if isinstance(value, dict):
        return {k: _render_body(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_body(v, variables) for v in value]
    return value


def _typed(source: str, variables: dict[str, Any]) -> Any:
    # The template environment's own parser and limits (`??` fallbacks, filters, the render
    # deadline); only the output's value is kept instead of its text.
    try:
        template = _plain.from_string(source)
        nodes = [n for n in template.nodes if isinstance(n, OutputNode)]
        if len(nodes) != 1:
            return render_json(source, variables)
        context = template.context_class(template, globals=template.make_globals(variables))
        return _json_value(nodes[0].expression.evaluate(context))
    except LiquidError as exc:
        raise TemplateError({"body": _describe(exc)}) from exc


def _json_value(value: Any) -> Any:
    if value is None or is_undefined(value):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None  # as JSON.stringify does: NaN and Infinity are not JSON
    if isinstance(value, bool | int | float | str):
        return value if type(value) in (bool, int, float, str) else str(value)  # Markup: text
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | range):
        # A range literal is lazy: `{{ (1..100000000) }}` must not become a list first.
        if len(value) > MAX_ITEMS:
            raise TemplateError(
                {"body": f"a list of {len(value)} items, more than the limit of {MAX_ITEMS}"}
            )
        return [_json_value(v) for v in value]
    return str(value)  # a Decimal or anything else a filter made


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
        elif tag in ("td", "th"):
            self.parts.append(" ")  # table cells side by side (an MJML table, a receipt's rows)

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def html_to_text(source: str) -> str:
    parser = _TextExtractor()
    parser.feed(source)
    text = html.unescape("".join(parser.parts))
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()
