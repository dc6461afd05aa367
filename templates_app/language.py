"""Plunk's template language on python-liquid: what a template written for Plunk (LiquidJS with
JS truthiness) means, registered on an Environment by `install`.

- `{{ a ?? b ?? "c" }}` is `{{ a | default: "b" | default: "c" }}`: every fallback is a literal
  (quotes are stripped if present, `{{ name ?? there }}` is "there"). Filters after a fallback
  apply from there on: `{{ name ?? "there" | upcase }}`.
- `{{ first name }}` is the variable "first name", `{{ data.first name }}` its key in `data`
  (an output whose path has bare words separated by spaces).
- Conditions (`if`, `elsif`, `unless`, `and`, `or`, `not`) use JS truthiness: `""`, `0`, `nil`
  and `false` are falsy, `[]` and `"0"` truthy.
- `default` follows LiquidJS: an empty string or list, `nil`, `false` and `0` take the default.
- A list output directly renders as `<li>item</li>` lines in HTML, `a, b` in plain text; an
  object as JSON.
- `| raw` outputs a value unescaped in HTML (everything else is escaped there).

The `??` split is done on the text of one output statement, after Liquid's own lexer, so
`{% raw %}`, comments and tags are untouched, and every token keeps its place in the source
(errors name the right line).
"""

from __future__ import annotations

import decimal
import json
import math
import re
from typing import Any

from liquid import Environment, Markup, TokenStream
from liquid.builtin.expressions import (
    BooleanExpression,
    FilteredExpression,
    Path,
    StringLiteral,
    tokenize,
)
from liquid.builtin.expressions.arguments import PositionalArgument
from liquid.builtin.expressions.filtered import Filter
from liquid.builtin.expressions.logical import (
    LogicalAndExpression,
    LogicalNotExpression,
    LogicalOrExpression,
)
from liquid.builtin.output import Output, OutputNode
from liquid.builtin.tags.echo_tag import EchoNode, EchoTag
from liquid.builtin.tags.if_tag import IfNode, IfTag
from liquid.builtin.tags.unless_tag import UnlessNode, UnlessTag
from liquid.exceptions import LiquidSyntaxError
from liquid.filter import with_environment
from liquid.stringify import to_liquid_string
from liquid.token import TOKEN_EOF, TOKEN_EXPRESSION, TOKEN_OUTPUT, TOKEN_PIPE, Token
from liquid.undefined import is_undefined
from markupsafe import escape

# --- Splitting one output statement ------------------------------------------------------------


def _split_top_level(text: str, separator: str) -> list[tuple[int, str]]:
    """Splits at `separator` outside quoted strings; returns (offset, part) pairs. A `|` that
    is part of `||` is not a separator."""
    parts: list[tuple[int, str]] = []
    start = i = 0
    while i < len(text):
        char = text[i]
        if char in "\"'":
            end = text.find(char, i + 1)
            if end == -1:  # unterminated: let Liquid's own parser report it
                break
            i = end + 1
            continue
        if text.startswith(separator, i):
            if separator == "|" and text.startswith("||", i):
                i += 2
                continue
            parts.append((start, text[start:i]))
            i += len(separator)
            start = i
            continue
        i += 1
    parts.append((start, text[start:]))
    return parts


# A path whose keys may have spaces (`first name`, `data.first name`), with a space somewhere.
_KEY = r"[\w-]+(?:[ \t]+[\w-]+)*"
_PATH_WITH_SPACES = re.compile(rf"(?=[^ \t]*[ \t]){_KEY}(?:\.{_KEY})*")


def _sub_token(parent: Token, offset: int, text: str) -> Token:
    return Token(
        TOKEN_EXPRESSION, text, start_index=parent.start_index + offset, source=parent.source
    )


def _parse_filters(env: Environment, token: Token) -> list[Filter]:
    """Parses `| f | g: x` (leading pipe included) from a token's text."""
    tokens = TokenStream(tokenize(token.value, token))
    filters = Filter.parse(env, tokens, delim=(TOKEN_PIPE,))
    tokens.eat(TOKEN_EOF)
    return filters


def _parse_primary(env: Environment, token: Token) -> FilteredExpression:
    text = token.value
    head, *rest = _split_top_level(text, "|")
    stripped = head[1].strip()
    if _PATH_WITH_SPACES.fullmatch(stripped):
        # `{{ first name }}`: Plunk's keys with spaces, as `{{ ["first name"] }}` would be.
        at = head[1].index(stripped)
        keys: list[str | int | Path] = [key.strip() for key in stripped.split(".")]
        left = Path(_sub_token(token, at, stripped), keys)
        filters = []
        if rest:
            start = rest[0][0] - 1  # from the first pipe
            filters = _parse_filters(env, _sub_token(token, start, text[start:]))
        return FilteredExpression(left.token, left, filters)
    expression = FilteredExpression.parse(env, TokenStream(tokenize(text, token)))
    if isinstance(expression, FilteredExpression):
        return expression
    return FilteredExpression(token, expression, [])


def _fallback_literal(token: Token) -> str:
    text = token.value.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if not text:
        raise LiquidSyntaxError("'??' needs a fallback after it", token=token)
    if text[0] in "\"'" or text[-1] in "\"'":
        raise LiquidSyntaxError(f"unbalanced quotes in the fallback {text}", token=token)
    return text


def parse_output(env: Environment, token: Token) -> FilteredExpression:
    """Parses the text of `{{ ... }}` (`token`), with `??` fallbacks and keys with spaces."""
    try:
        return _parse_output(env, token)
    except LiquidSyntaxError as exc:
        if exc.token is None or exc.token.start_index < 0:
            # Liquid's end-of-expression token has no place in the source: point at the end of
            # this statement, so the error names its line.
            end = token.start_index + len(token.value)
            exc.token = Token(TOKEN_EOF, TOKEN_EOF, start_index=end, source=token.source)
        raise


def _parse_output(env: Environment, token: Token) -> FilteredExpression:
    segments = _split_top_level(token.value, "??")
    offset, text = segments[0]
    expression = _parse_primary(env, _sub_token(token, offset, text))
    filters = list(expression.filters or [])
    for offset, text in segments[1:]:
        literal, *tail = _split_top_level(text, "|")
        literal_token = _sub_token(token, offset + literal[0], literal[1])
        value = _fallback_literal(literal_token)
        filters.append(
            Filter(
                literal_token,
                "default",
                [PositionalArgument(StringLiteral(literal_token, value))],
            )
        )
        if tail:
            start = offset + tail[0][0] - 1  # from the first pipe
            end = offset + len(text)
            filters += _parse_filters(env, _sub_token(token, start, token.value[start:end]))
    return FilteredExpression(expression.token, expression.left, filters)


# --- Output ------------------------------------------------------------------------------------


def stringify(value: Any, autoescape: bool) -> str:
    """A value as output: lists as `<li>` lines (HTML) or `a, b` (plain), objects as JSON."""
    if hasattr(value, "__liquid__"):
        value = value.__liquid__()
    if isinstance(value, list | tuple):
        if autoescape:
            return Markup("\n").join(
                Markup("<li>") + escape(_item(item, True)) + Markup("</li>") for item in value
            )
        return ", ".join(_item(item, False) for item in value)
    if isinstance(value, dict):
        text = json.dumps(value, ensure_ascii=False, default=str)
        return escape(text) if autoescape else text
    return to_liquid_string(value, autoescape)


def _item(value: Any, autoescape: bool) -> str:
    if isinstance(value, dict):
        return stringify(value, autoescape)
    if isinstance(value, list | tuple):  # a list in a list: its items, as Liquid joins them
        return to_liquid_string(list(value), autoescape)
    return to_liquid_string(value, autoescape)


class _Stringifying(OutputNode):
    def render_to_output(self, context, buffer):
        return buffer.write(stringify(self.expression.evaluate(context), context.autoescape))

    async def render_to_output_async(self, context, buffer):
        value = await self.expression.evaluate_async(context)
        return buffer.write(stringify(value, context.autoescape))


class PlunkOutputNode(_Stringifying):
    pass


class PlunkOutput(Output):
    node_class = PlunkOutputNode

    def parse(self, stream):
        token = stream.eat(TOKEN_OUTPUT)
        expression_token = stream.expect(TOKEN_EXPRESSION)
        return self.node_class(token, parse_output(self.env, expression_token))


class PlunkEchoNode(_Stringifying, EchoNode):
    pass


class PlunkEchoTag(EchoTag):
    node_class = PlunkEchoNode


# --- Conditions --------------------------------------------------------------------------------


def js_truthy(value: Any) -> bool:
    """JavaScript's truthiness: `""`, `0`, NaN, `null`/nil, `false` (and undefined) are falsy."""
    if hasattr(value, "__liquid__"):
        value = value.__liquid__()
    if value is None or value is False or is_undefined(value):
        return False
    if value is True:
        return True
    if isinstance(value, int | float | decimal.Decimal):
        return value != 0 and not (isinstance(value, float) and math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True


class _JSBoolean(BooleanExpression):
    def evaluate(self, context):
        return js_truthy(self.expression.evaluate(context))

    async def evaluate_async(self, context):
        return js_truthy(await self.expression.evaluate_async(context))


class _JSNot(LogicalNotExpression):
    def evaluate(self, context):
        return not js_truthy(self.right.evaluate(context))

    async def evaluate_async(self, context):
        return not js_truthy(await self.right.evaluate_async(context))


class _JSAnd(LogicalAndExpression):
    def evaluate(self, context):
        return js_truthy(self.left.evaluate(context)) and js_truthy(self.right.evaluate(context))

    async def evaluate_async(self, context):
        return js_truthy(await self.left.evaluate_async(context)) and js_truthy(
            await self.right.evaluate_async(context)
        )


class _JSOr(LogicalOrExpression):
    def evaluate(self, context):
        return js_truthy(self.left.evaluate(context)) or js_truthy(self.right.evaluate(context))

    async def evaluate_async(self, context):
        return js_truthy(await self.left.evaluate_async(context)) or js_truthy(
            await self.right.evaluate_async(context)
        )


def _js(expression: Any) -> Any:
    """The same condition, judging truth as JavaScript does."""
    if isinstance(expression, BooleanExpression):
        return _JSBoolean(expression.token, _js(expression.expression))
    if isinstance(expression, LogicalNotExpression):
        return _JSNot(expression.token, _js(expression.right))
    if isinstance(expression, LogicalAndExpression):
        return _JSAnd(expression.token, _js(expression.left), _js(expression.right))
    if isinstance(expression, LogicalOrExpression):
        return _JSOr(expression.token, _js(expression.left), _js(expression.right))
    return expression


def _js_conditions(node: Any) -> Any:
    if isinstance(node, IfNode | UnlessNode):
        node.condition = _js(node.condition)
        for alternative in node.alternatives or []:
            alternative.expression = _js(alternative.expression)
    return node


class PlunkIfTag(IfTag):
    def parse(self, stream):
        return _js_conditions(super().parse(stream))


class PlunkUnlessTag(UnlessTag):
    def parse(self, stream):
        return _js_conditions(super().parse(stream))


# --- Filters -----------------------------------------------------------------------------------


def default(value: Any, default_: Any = "", *, allow_false: bool = False) -> Any:
    """LiquidJS's `default`: strings and lists by length, anything else by JS truthiness."""
    if hasattr(value, "__liquid__"):
        value = value.__liquid__()
    if isinstance(value, str | list | tuple):
        return value if len(value) else default_
    if value is False and allow_false is True:
        return False
    return value if js_truthy(value) else default_


@with_environment
def raw(value: Any, *, environment: Environment) -> Any:
    """Marks a value as safe HTML: output as it is, unescaped (HTML parts only)."""
    if not environment.autoescape or is_undefined(value) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [raw(item, environment=environment) for item in value]
    if isinstance(value, str):
        return Markup(value)
    return value


def install(env: Environment) -> None:
    env.add_tag(PlunkOutput)
    env.add_tag(PlunkEchoTag)
    env.add_tag(PlunkIfTag)
    env.add_tag(PlunkUnlessTag)
    env.add_filter("default", default)
    env.add_filter("raw", raw)
