"""CSS inlining for raw-HTML templates (css-inline, a Rust inliner with Python bindings).

Mail clients that drop `<style>` (Gmail's apps for accounts outside Google, many webmails)
still show styles written into `style` attributes. So a raw-HTML email is inlined after its
Liquid is rendered (never before: the HTML parser would move Liquid tags that sit between
table rows), at send time and in previews. The `<style>` stays as it was written too
(keep_style_tags): what can not go into an attribute (`@media`, `:hover`, the selectors
written for one client, such as Outlook's dark mode `[data-ogsc]` or Gmail's `u + .body`)
still reaches the clients that read it. A `<style data-css-inline="ignore">` is left alone.
MJML output is not inlined here: MRML writes its components' styles inline itself, and
`<mj-style inline="inline">` too.

Nothing is fetched: `<link rel=stylesheet>` stays as it is and is not loaded (an email's
stylesheet URL must not make the server fetch a URL or read a file).
"""

from __future__ import annotations

import re

import css_inline

_INLINER = css_inline.CSSInliner(
    keep_style_tags=True,
    keep_link_tags=True,
    load_remote_stylesheets=False,
)
_STYLE = re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.IGNORECASE | re.DOTALL)


class InlineLimitError(ValueError):
    """Inlining would build (or built) more than `max_bytes` of HTML."""


def inline_css(html: str, *, max_bytes: int) -> str:
    """The HTML with its `<style>` rules written into `style` attributes; unchanged when it
    has no `<style>`. A fragment comes back as a whole document (html, head, body).

    Inlining writes the matching declarations into every element: its output can be about the
    number of elements times the size of the stylesheet. Past 50 times `max_bytes` of such work
    it is refused before it starts, rather than checked after tens of megabytes were built."""
    sheets = _STYLE.findall(html)
    if not sheets:
        return html
    work = html.count("<") * sum(len(sheet) for sheet in sheets)
    if work > 50 * max_bytes:
        raise InlineLimitError(
            "inlining the CSS would be too much work: use a smaller stylesheet or fewer elements"
        )
    try:
        inlined = _INLINER.inline(html)
    except css_inline.InlineError:
        return html  # CSS it can not read: sent as written rather than not sent
    if len(inlined.encode("utf-8")) > max_bytes:
        raise InlineLimitError(
            f"with its CSS inlined the HTML is larger than the limit of {max_bytes} bytes"
        )
    return inlined
