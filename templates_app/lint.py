"""Pre-send checks of a template: what would hurt it in a mail client or with a reader, none of
which stops a save (a template that does not parse or compile is refused elsewhere:
rendering.template_problems). Shown as warnings when the admin saves a template, and returned
by the editor's preview as you type.

Each check is a dict {code, level, message}; `level` is "warning" for all of them now.

- `size`: the rendered HTML (for the sample data) is over 102 KB, where Gmail clips a message
  behind a "View entire message" link (and with it the unsubscribe link and the open pixel).
  102 KB is taken as 102 * 1024 bytes of UTF-8: exactly that is fine, a byte more is not.
- `image_alt`: an image (`<img>`, `<mj-image>`) without alt text, or with blank alt text:
  shown instead of the picture where images are blocked, and read out by screen readers.
  An alt made by Liquid counts as alt text.
- `link`: a link (`href`) that is not http(s): a relative path or `#anchor` goes nowhere from an
  inbox, `javascript:` is stripped. `mailto:` and `tel:` are fine (every client opens them), and
  so is a link made by Liquid (`{{ unsubscribeUrl }}`, `https://x.com/{{ path }}`): its value is
  only known per contact.
- `unsubscribe`: a marketing template that never uses `unsubscribeUrl` (in its subject, body or
  text): the law and the inbox providers expect a way out in the email itself.
- `unknown_variable`: a variable that no recent contact's data has, nor a recent event's, nor
  the variables every render has. Asked only for users who may see contact data.
- `unknown_element`: an `mj-` element MJML does not have (MRML drops it and its content
  silently).
"""

from __future__ import annotations

import time
from html.parser import HTMLParser
from typing import Any

from liquid.exceptions import LiquidError

from contacts_app.models import Contact, Event
from templates_app.models import Template
from templates_app.rendering import TemplateError, liquid_variables
from templates_app.services import PREVIEW_SAMPLE_DATA, template_preview

GMAIL_CLIP_BYTES = 102 * 1024
RECENT_SAMPLE = 500  # recent contacts (and events) whose data keys count as known
_KNOWN_TTL = 60.0  # seconds a computed set of known keys is reused (the preview runs per keystroke)
# What every render has (services.template_variables), and Liquid's own loop objects.
RESERVED = {
    "id",
    "email",
    "subscribed",
    "data",
    "event",
    "contact",
    "workflow",
    "unsubscribeUrl",
    "subscribeUrl",
    "manageUrl",
    "forloop",
    "tablerowloop",
}
MJML_ELEMENTS = {
    "mjml",
    "mj-head",
    "mj-body",
    "mj-attributes",
    "mj-all",
    "mj-class",
    "mj-breakpoint",
    "mj-font",
    "mj-html-attributes",
    "mj-html-attribute",
    "mj-selector",
    "mj-preview",
    "mj-style",
    "mj-title",
    "mj-include",
    "mj-accordion",
    "mj-accordion-element",
    "mj-accordion-title",
    "mj-accordion-text",
    "mj-button",
    "mj-carousel",
    "mj-carousel-image",
    "mj-column",
    "mj-divider",
    "mj-group",
    "mj-hero",
    "mj-image",
    "mj-navbar",
    "mj-navbar-link",
    "mj-raw",
    "mj-section",
    "mj-social",
    "mj-social-element",
    "mj-spacer",
    "mj-table",
    "mj-text",
    "mj-wrapper",
}
_FINE_SCHEMES = ("http://", "https://", "mailto:", "tel:")
_MAX_LISTED = 3  # examples named in one message


def check(code: str, message: str, level: str = "warning") -> dict[str, str]:
    return {"code": code, "level": level, "message": message}


def check_template(
    template: Template,
    *,
    rendered_html: str | None,
    known: Known | None = None,
) -> list[dict[str, str]]:
    """The checks of a template (saved or not). `rendered_html`: its HTML rendered for sample
    data (None: the size is not checked, e.g. the render failed). `known`: the variables data
    has (None: variables are not checked)."""
    source = template.mjml or template.html or ""
    found: list[dict[str, str]] = []
    if rendered_html is not None:
        size = len(rendered_html.encode("utf-8"))
        if size > GMAIL_CLIP_BYTES:
            found.append(
                check(
                    "size",
                    f"The HTML is {size:,} bytes for the sample data, over Gmail's 102 KB "
                    f"({GMAIL_CLIP_BYTES:,} bytes): Gmail will clip it, hiding the rest (and "
                    "the unsubscribe link) behind “View entire message”.",
                )
            )
    tags = _Tags.read(source)
    if tags.no_alt:
        found.append(
            check(
                "image_alt",
                f"{_count(len(tags.no_alt), 'image has', 'images have')} no alt text "
                f"({_listed(tags.no_alt)}): it is what readers see when images are blocked.",
            )
        )
    if tags.bad_links:
        found.append(
            check(
                "link",
                f"{_count(len(tags.bad_links), 'link is', 'links are')} not http(s) "
                f"({_listed(tags.bad_links)}): relative links and anchors go nowhere from an "
                "inbox. mailto: and tel: are fine.",
            )
        )
    if template.mjml and tags.unknown_elements:
        found.append(
            check(
                "unknown_element",
                f"Not MJML elements, left out of the email: {_listed(tags.unknown_elements)}.",
            )
        )
    used = _variables(template)
    if template.type == Template.MARKETING and "unsubscribeUrl" not in {p[0] for p in used}:
        found.append(
            check(
                "unsubscribe",
                "A marketing email without {{ unsubscribeUrl }}: add an unsubscribe link "
                "(the List-Unsubscribe header alone is not shown by every client).",
            )
        )
    if known is not None:
        missing = sorted({".".join(p) for p in used if not known.has(p)})
        if missing:
            found.append(
                check(
                    "unknown_variable",
                    f"No recent contact or event has {_listed(missing)}: "
                    f"{'it renders' if len(missing) == 1 else 'they render'} empty unless "
                    "the data gets it (or a default is given).",
                )
            )
    return found


class Known:
    """The variables that data has: contact data keys (top level, `contact.x`, `data.x`), event
    data keys (top level, `event.x`) and the reserved names."""

    def __init__(self, contact_keys: set[str], event_keys: set[str]):
        self.contact_keys = contact_keys
        self.event_keys = event_keys

    def has(self, path: tuple[str, ...]) -> bool:
        root, rest = path[0], path[1:]
        if root in ("contact", "data"):
            # `contact` also has the contact's own fields; `data` is the data alone.
            own = ("email", "subscribed") if root == "contact" else ()
            return not rest or rest[0] in self.contact_keys or rest[0] in own
        if root == "workflow":
            return not rest or rest[0] == "name"
        if root == "event":
            # No event seen yet: nothing is known about what events carry.
            return not rest or not self.event_keys or rest[0] in self.event_keys
        return root in RESERVED or root in self.contact_keys or root in self.event_keys


_known_cache: tuple[float, Known] | None = None


def known_variables() -> Known:
    """The keys of recent contacts' and events' data (cached a minute: the preview asks as you
    type). Callers ask only for users who may view contacts (the keys are contact data)."""
    global _known_cache
    now = time.monotonic()
    if _known_cache is not None and now - _known_cache[0] < _KNOWN_TTL:
        return _known_cache[1]
    contact_keys: set[str] = set()
    # The newest contacts, read through the (created_at, id) index.
    contacts = Contact.objects.order_by("-created_at", "-id").values_list("data", flat=True)
    for data in contacts[:RECENT_SAMPLE]:
        if isinstance(data, dict):
            contact_keys.update(k for k in data if isinstance(k, str))
    event_keys: set[str] = set()
    events = Event.objects.order_by("-created_at").values_list("data", flat=True)
    for data in events[:RECENT_SAMPLE]:
        if isinstance(data, dict):
            event_keys.update(k for k in data if isinstance(k, str))
    known = Known(contact_keys, event_keys)
    _known_cache = (now, known)
    return known


def known_variables_forget() -> None:
    """Tests: the next known_variables() reads the database again."""
    global _known_cache
    _known_cache = None


def _variables(template: Template) -> set[tuple[str, ...]]:
    """The global variables the template reads, as paths of names (`("contact", "plan")`).
    Parts that do not parse are skipped (they are refused on save anyway)."""
    paths: set[tuple[str, ...]] = set()
    for source, html in (
        (template.subject, False),
        (template.mjml or template.html, True),
        (template.text, False),
    ):
        try:
            segments = liquid_variables(source or "", html=html)
        except LiquidError:
            continue
        for segment in segments:
            names = tuple(str(s) for s in segment[:2])
            if names:
                paths.add(names)
    return paths


class _Tags(HTMLParser):
    """Images without alt text, links that are not http(s) and unknown mj- elements, read from
    the source (an attribute made by Liquid counts as set)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.no_alt: list[str] = []
        self.bad_links: list[str] = []
        self.unknown_elements: list[str] = []

    @classmethod
    def read(cls, source: str) -> _Tags:
        tags = cls()
        try:
            tags.feed(source)
            tags.close()
        except AssertionError:  # HTMLParser gives up on some broken markup
            pass
        return tags

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        line = self.getpos()[0]
        if tag in ("img", "mj-image") and not values.get("alt", "").strip():
            self.no_alt.append(f"line {line}: {values.get('src', '')[:80] or tag}")
        href = values.get("href")
        if href is not None and tag not in ("link", "base"):
            href = href.strip()
            if not ("{{" in href or "{%" in href or href.lower().startswith(_FINE_SCHEMES)):
                self.bad_links.append(f"line {line}: {href[:80]!r}")
        if tag.startswith("mj-") and tag not in MJML_ELEMENTS:
            self.unknown_elements.append(f"<{tag}> (line {line})")


def _count(n: int, one: str, many: str) -> str:
    return f"1 {one}" if n == 1 else f"{n} {many}"


def _listed(items: list[str]) -> str:
    shown = "; ".join(items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def sample_render_html(template: Template, sample: dict[str, Any] | None = None) -> str | None:
    """The template's HTML rendered for sample data (what the size check measures); None when
    it does not render."""
    try:
        return template_preview(
            subject=template.subject,
            html_body=template.html,
            text_body=template.text,
            mjml_body=template.mjml,
            sample=sample or PREVIEW_SAMPLE_DATA,
        ).html
    except TemplateError:
        return None
