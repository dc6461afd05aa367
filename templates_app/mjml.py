"""MJML, the markup of responsive email, compiled to HTML by MRML (the Rust port of MJML,
through its own Python bindings, `mrml`).

A template's MJML holds Liquid: a send renders the Liquid first and compiles the result
(rendering.render), so `{% if %}` around a section or `{% for %}` over columns lay out as
MJML would lay out what they produce. Compiling is cheap next to the rest of a
render: the demo's welcome email compiles in about 0.1 ms of the 2 ms its whole render takes
(Liquid, compile, text part), so nothing is cached: every contact's email is compiled from its
own rendered MJML.

Checking a template on save can not render it for every contact, so `mjml_check` compiles the
source with each Liquid tag and output blanked to spaces (same length, newlines kept: MRML's
positions and our line numbers stay those of the source). That accepts what any render can
produce as long as a Liquid block opens and closes whole elements.

MRML names the position of some errors only; for the others the line is found by reading the
element tree here (an element never closed, or closed by the wrong end tag) or, for text it
can not parse, by the shortest prefix of the source that fails the same way. The words come
from MRML, the line from us.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import mrml

# mj-include could read files or URLs on the server: refused (the error names the line).
_PARSER = mrml.ParserOptions(include_loader=mrml.noop_loader())
_LIQUID = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_LIQUID_BLOCK = re.compile(
    r"\{%-?\s*(comment|raw)\s*-?%\}.*?\{%-?\s*end\1\s*-?%\}", re.DOTALL | re.IGNORECASE
)
_POSITION = re.compile(r"\s*(?:in root template\s*)?at position (\d+):(\d+)")
_WHERE = re.compile(r"\s*in root template\s*$")
_END_OF_STREAM = "unexpected end of stream"
_HINTS = {
    _END_OF_STREAM: "an element is not closed",
    "unable to parse next template": "this can not be parsed (a bare < in text? write &lt;)",
    "unable to find mjml element": "the document must be one <mjml> element",
    "unable to load included template": "mj-include is not supported: keep the email in one "
    "document",
}
# HTML elements that never have an end tag (MRML accepts them unclosed inside mj-text).
_VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}


class MjmlError(ValueError):
    """The MJML does not compile: `message` says why, `line` where (None when unknown)."""

    def __init__(self, message: str, line: int | None):
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


def mask_liquid(source: str) -> str:
    """The source with every `{{ ... }}` and `{% ... %}` turned into spaces (newlines kept),
    and what a `{% comment %}` or `{% raw %}` block holds too: Liquid never outputs a
    comment, and a raw block's text is not markup of this document's structure."""
    blank = lambda m: re.sub(r"[^\n]", " ", m.group())  # noqa: E731
    return _LIQUID.sub(blank, _LIQUID_BLOCK.sub(blank, source))


# Limits checked before MRML sees a document (MRML is native code: its parser recurses once
# per level of nesting and overflows the stack, killing the process, at a few thousand levels;
# and attributes set once in <mj-attributes> are copied onto every element they apply to, so
# 80 KB can ask for tens of megabytes). Real emails nest 10-20 levels and come out at a few
# hundred KB at most.
MAX_DEPTH = 100
# An upper estimate of the compiled size: each element costs MRML's own markup (at most about
# 2 KB: a section's tables) plus up to three copies of the attributes declared in the head.
MAX_ESTIMATED_OUTPUT = 16 * 1024 * 1024
_PER_ELEMENT = 2048
_TAG = re.compile(r"<!--.*?-->|<(/?)([a-zA-Z][\w:-]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>", re.DOTALL)
_HEAD_ATTRIBUTES = re.compile(r"<mj-attributes\b.*?</mj-attributes>", re.DOTALL | re.IGNORECASE)
# grapesjs-mjml writes some attribute values into the builder's page unescaped: a value with a
# quote or an angle bracket would be markup there (and no MJML attribute needs one).
_UNSAFE_VALUE = re.compile(r"[\"<>]")


def _guard(source: str) -> None:
    """Refuses (MjmlError, with the line) a document MRML must not be given: nested deeper
    than MAX_DEPTH, or that would compile to more than MAX_ESTIMATED_OUTPUT."""
    depth = elements = 0
    for match in _TAG.finditer(source):
        closing, name, rest = match.group(1), match.group(2), match.group(3)
        if name is None:  # a comment
            continue
        if closing:
            depth = max(0, depth - 1)
            continue
        elements += 1
        if name.lower() in _VOID or (rest or "").rstrip().endswith("/"):
            continue
        depth += 1
        if depth > MAX_DEPTH:
            line = source.count("\n", 0, match.start()) + 1
            raise MjmlError(f"elements are nested more than {MAX_DEPTH} deep", line)
    declared = sum(len(m.group()) for m in _HEAD_ATTRIBUTES.finditer(source))
    estimate = 3 * len(source) + elements * (_PER_ELEMENT + 3 * declared)
    if estimate > MAX_ESTIMATED_OUTPUT:
        raise MjmlError(
            f"the email would compile to more than {MAX_ESTIMATED_OUTPUT // (1024 * 1024)} MB "
            "(too many elements, or long attributes in <mj-attributes> that every element "
            "copies)",
            None,
        )


def unsafe_attribute(source: str) -> MjmlError | None:
    """An mj- element attribute whose value holds a quote or an angle bracket (Liquid aside),
    which the visual builder would turn into markup on the editor's page."""
    for match in _TAG.finditer(mask_liquid(source)):
        name, rest = match.group(2), match.group(3) or ""
        if match.group(1) or name is None or not name.lower().startswith("mj-"):
            continue
        for value in re.findall(r"=\s*(?:\"([^\"]*)\"|'([^']*)')", rest):
            text = html.unescape(value[0] or value[1])
            if _UNSAFE_VALUE.search(text):
                line = source.count("\n", 0, match.start()) + 1
                return MjmlError(
                    f"<{name}>: an attribute value may not contain a quote, < or >", line
                )
    return None


def mjml_to_html(source: str) -> str:
    """Compiles MJML (no Liquid left in it, or Liquid that MRML passes through as text).
    Line ends are made \\n first: MRML refuses \\r\\n inside <mj-head>, and a browser's form
    sends every line end as \\r\\n (line numbers stay the same)."""
    source = source.replace("\r\n", "\n").replace("\r", "\n")
    _guard(source)
    try:
        return mrml.to_html(source, parser_options=_PARSER).content
    except (OSError, ValueError) as exc:
        raise _located(source, str(exc)) from None


def mjml_check(source: str) -> MjmlError | None:
    """Whether a template's MJML (with Liquid) compiles and is safe to open in the builder;
    the error, with its line, if not."""
    try:
        mjml_to_html(mask_liquid(source))
    except MjmlError as exc:
        return exc
    return unsafe_attribute(source)


def mjml_display_html(source: str) -> str:
    """The HTML kept in Template.html beside the MJML (what the API's `body` shows, and what a
    template switched back to HTML starts from): the source compiled with its Liquid in place,
    which MRML keeps as text. Liquid that is not valid MJML text (`{% if a < b %}`) is blanked.
    Raises MjmlError if even that does not compile (mjml_check says so first)."""
    try:
        return mjml_to_html(source)
    except MjmlError:
        return mjml_to_html(mask_liquid(source))


def _line_of_byte(source: str, offset: int) -> int:
    return source.encode("utf-8")[:offset].count(b"\n") + 1


def _located(source: str, raw: str) -> MjmlError:
    words = raw.strip() or "the MJML does not compile"
    position = _POSITION.search(words)
    words = _WHERE.sub("", _POSITION.sub("", words)).strip()
    hint = next((h for key, h in _HINTS.items() if words.startswith(key)), "")
    if position:
        line: int | None = _line_of_byte(source, int(position.group(1)))
        return MjmlError(f"{hint or words} ({words})" if hint else words, line)
    if not words.startswith(_END_OF_STREAM):
        line = _failing_prefix_line(source)
        if line is not None:
            return MjmlError(f"{hint} ({words})" if hint else words, line)
    found = _Tree.problem(source)
    if found is not None:
        return MjmlError(found[1], found[0])
    # Only the end of the document is left to name: that is where it stops.
    return MjmlError(f"{hint} ({words})" if hint else words, source.count("\n") + 1)


def _failing_prefix_line(source: str) -> int | None:
    """The line where parsing fails, for an error MRML gives no position: the shortest prefix
    that fails other than by ending too soon. Prefixes are cut just before a `<` (or at the
    end), so a cut never lands inside a tag, where a prefix would fail for its own reason."""

    def fails(n: int) -> bool:
        try:
            mrml.to_html(source[:n], parser_options=_PARSER)
        except (OSError, ValueError) as exc:
            return not str(exc).startswith(_END_OF_STREAM)
        return False

    cuts = [m.start() for m in re.finditer("<", source)][1:] + [len(source)]
    if not fails(cuts[-1]):
        return None
    low, high = 0, len(cuts) - 1
    while low < high:  # about 20 compiles of a prefix for a 1 MB source
        middle = (low + high) // 2
        if fails(cuts[middle]):
            high = middle
        else:
            low = middle + 1
    return source.count("\n", 0, max(cuts[high] - 1, 0)) + 1


class _Tree(HTMLParser):
    """Reads the element tree only to say where it breaks: an end tag that closes an element
    other than the open one, an end tag with nothing to close, an element never closed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.open: list[tuple[str, int]] = []
        self.found: tuple[int, str] | None = None

    @classmethod
    def problem(cls, source: str) -> tuple[int, str] | None:
        tree = cls()
        try:
            tree.feed(mask_liquid(source))
            tree.close()
        except AssertionError:  # HTMLParser gives up on some broken markup
            return None
        if tree.found is None and tree.open:
            name, line = tree.open[-1]
            tree.found = (line, f"<{name}> is never closed")
        return tree.found

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in _VOID:
            self.open.append((tag, self.getpos()[0]))

    def handle_endtag(self, tag: str) -> None:
        if self.found is not None or tag in _VOID:
            return
        line = self.getpos()[0]
        names = [name for name, _ in self.open]
        if tag not in names:
            self.found = (line, f"</{tag}> closes no open element")
            return
        name, opened = self.open[-1]
        if name != tag:
            self.found = (
                opened,
                f"<{name}> (line {opened}) is not closed before </{tag}> (line {line})",
            )
            return
        self.open.pop()
