"""Templates in Plunk's language, case by case from ../shared/plunk-v2-reference.md ("Template
language"), and the differences we chose: values stay HTML-escaped, `| raw` opts out."""

from urllib.parse import urlsplit

import pytest
from django.core import signing

from contacts_app.services import MANAGE_SALT, SUBSCRIBE_SALT, UNSUBSCRIBE_SALT, contact_upsert
from templates_app.admin import TemplateForm
from templates_app.models import Template
from templates_app.rendering import TemplateError, render, render_json, template_check
from templates_app.services import template_preview, template_render, template_variables


def html(source, **variables):
    return render(subject="", html_body=source, text_body="-", variables=variables).html


def plain(source, **variables):
    return render(subject="", html_body="", text_body=source, variables=variables).text


# --- `??` fallbacks: `{{ a ?? b ?? c }}` is `{{ a | default: "b" | default: "c" }}` ----------

FALLBACKS = [
    # (template, variables, expected)
    ('{{ firstName ?? "there" }}', {}, "there"),
    ("{{ firstName ?? there }}", {}, "there"),
    ("{{ firstName ?? 'there' }}", {}, "there"),
    ("{{firstName??there}}", {}, "there"),
    ('{{ firstName ?? "there" }}', {"firstName": "Ann"}, "Ann"),
    ("{{ firstName ?? there }}", {"firstName": ""}, "there"),
    ("{{ firstName ?? there }}", {"firstName": None}, "there"),
    ("{{ firstName ?? my friend }}", {}, "my friend"),
    ('{{ firstName ?? "  spaced  " }}', {}, "  spaced  "),
    ("{{ a ?? b ?? c }}", {}, "b"),
    ("{{ a ?? b ?? c }}", {"a": "A"}, "A"),
    ('{{ a ?? "" ?? c }}', {}, "c"),  # each fallback is a default of what came before
    ("{{ a ?? b }}", {"b": "variable b"}, "b"),  # literal fallbacks, never a variable
    ("{{ a ?? 'x ?? y' }}", {}, "x ?? y"),  # `??` inside quotes is text
    ('{{ a ?? "x | y" }}', {}, "x | y"),
    ('{{ name ?? "there" | upcase }}', {}, "THERE"),
    ('{{ name ?? "there" | upcase }}', {"name": "ann"}, "ANN"),
    ('{{ name | upcase ?? "there" }}', {"name": "ann"}, "ANN"),
    ("{{ count ?? none }}", {"count": 0}, "none"),  # LiquidJS with JS truthiness: 0 is empty
    ("{{ count ?? none }}", {"count": 3}, "3"),
    ("{{ items ?? none }}", {"items": []}, "none"),
    ("{{ flag ?? none }}", {"flag": False}, "none"),
    ("{{ contact.plan ?? free }}", {"contact": {}}, "free"),
    ("{{ event.plan ?? free }}", {"event": {"plan": "pro"}}, "pro"),
    ("{% raw %}{{ a ?? b }}{% endraw %}", {}, "{{ a ?? b }}"),  # raw stays raw
    ("{% comment %}{{ a ?? }}{% endcomment %}ok", {}, "ok"),
]


@pytest.mark.parametrize(("source", "variables", "expected"), FALLBACKS)
def test_fallbacks(source, variables, expected):
    assert plain(source, **variables) == expected
    assert html(source, **variables) == expected


def test_a_fallback_in_a_tag_argument_or_the_default_filter_agrees():
    assert plain('{{ n | default: "x" }}', n=0) == plain("{{ n ?? x }}", n=0) == "x"
    assert plain('{{ n | default: "x" }}', n="0") == "0"
    assert plain('{{ f | default: "x", allow_false: true }}', f=False) == "false"


# --- Keys with spaces -------------------------------------------------------------------------

SPACES = [
    ("{{first name}}", {"first name": "Ann"}, "Ann"),
    ("{{ first name }}", {"first name": "Ann"}, "Ann"),
    ("{{ first name | upcase }}", {"first name": "Ann"}, "ANN"),
    ("{{ first name ?? there }}", {}, "there"),
    ("{{ first name ?? there }}", {"first name": "Ann"}, "Ann"),
    ("{{ the-plan name }}", {"the-plan name": "pro"}, "pro"),
    ("{{ first name }}", {"first": "A", "name": "B"}, ""),  # one key, not two variables
]


@pytest.mark.parametrize(("source", "variables", "expected"), SPACES)
def test_keys_with_spaces(source, variables, expected):
    assert plain(source, **variables) == expected


# --- JS truthiness in conditions ---------------------------------------------------------------

TRUTHINESS = [
    ("", False),
    (0, False),
    (0.0, False),
    (None, False),
    (False, False),
    (float("nan"), False),
    ([], True),
    ("0", True),
    ("false", True),
    ({}, True),
    (1, True),
    (-1, True),
    ("x", True),
    (True, True),
    (["a"], True),
]


@pytest.mark.parametrize(("value", "truthy"), TRUTHINESS)
def test_conditions_use_js_truthiness(value, truthy):
    yes, no = ("yes", "no") if truthy else ("no", "yes")
    assert plain("{% if v %}yes{% else %}no{% endif %}", v=value) == yes
    assert plain("{% unless v %}yes{% else %}no{% endunless %}", v=value) == no
    assert plain("{% if x %}{% elsif v %}yes{% else %}no{% endif %}", v=value, x=0) == yes
    assert plain("{% if v and true %}yes{% else %}no{% endif %}", v=value) == yes
    assert plain("{% if v or false %}yes{% else %}no{% endif %}", v=value) == yes
    assert plain("{% liquid\nif v\necho 'yes'\nelse\necho 'no'\nendif %}", v=value) == yes


def test_a_missing_variable_is_falsy_and_comparisons_are_unchanged():
    assert plain("{% if missing %}yes{% else %}no{% endif %}") == "no"
    assert plain("{% if n == 0 %}zero{% endif %}", n=0) == "zero"
    assert plain("{% if s == '' %}empty{% endif %}", s="") == "empty"
    assert plain("{% if n > 1 and s %}yes{% else %}no{% endif %}", n=2, s="") == "no"


# --- Arrays output directly ------------------------------------------------------------------


def test_an_array_renders_as_li_lines_in_html():
    assert html("<ul>{{ items }}</ul>", items=["a", "b"]) == "<ul><li>a</li>\n<li>b</li></ul>"
    assert html("{{ items }}", items=[1, True, None]) == "<li>1</li>\n<li>true</li>\n<li></li>"
    assert html("{{ items }}", items=[]) == ""


def test_an_array_renders_comma_separated_in_plain_text_and_subjects():
    assert plain("{{ items }}", items=["a", "b"]) == "a, b"
    rendered = render(
        subject="{{ items }}", html_body="", text_body="", variables={"items": [1, 2]}
    )
    assert rendered.subject == "1, 2"


def test_array_items_are_escaped_and_raw_opts_out():
    assert html("{{ items }}", items=["<b>x</b>"]) == "<li>&lt;b&gt;x&lt;/b&gt;</li>"
    assert html("{{ items | raw }}", items=["<b>x</b>"]) == "<li><b>x</b></li>"


def test_an_object_renders_as_json():
    assert plain("{{ o }}", o={"a": 1, "b": [True]}) == '{"a": 1, "b": [true]}'
    assert html("{{ o }}", o={"a": "<"}) == "{&#34;a&#34;: &#34;&lt;&#34;}"


# --- Escaping (unlike Plunk) and `| raw` -------------------------------------------------------

ESCAPING = [
    ("{{ v }}", "<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ("{{ v | raw }}", "<b>bold</b>", "<b>bold</b>"),
    ("{{ v ?? x | raw }}", "<b>bold</b>", "<b>bold</b>"),
    ('<a href="{{ v }}">', '" onmouseover="x', '<a href="&#34; onmouseover=&#34;x">'),
    ("{{ v | upcase }}", "<i>", "&lt;I&gt;"),
    ("{{ v | raw | upcase }}", "<i>", "<I>"),
    ("{{ v | raw }}", 5, "5"),
    ("{{ missing | raw }}", None, ""),
]


@pytest.mark.parametrize(("source", "value", "expected"), ESCAPING)
def test_html_escapes_values_and_raw_opts_out(source, value, expected):
    assert html(source, v=value) == expected


def test_plain_parts_are_not_escaped_and_raw_changes_nothing_there():
    assert plain("{{ v }}", v="<b>") == "<b>"
    assert plain("{{ v | raw }}", v="<b>") == "<b>"


def test_webhook_body_strings_speak_the_same_language():
    body = render_json(
        {"greeting": "Hi {{ first name ?? there }}", "n": 3, "list": ["{{ items }}"]},
        {"items": ["a", "b"]},
    )
    assert body == {"greeting": "Hi there", "n": 3, "list": ["a, b"]}


# --- Errors still name the line ----------------------------------------------------------------

ERRORS = [
    ("one\ntwo {{ a ?? }}\n", "line 2", "needs a fallback"),
    ("one\n\n\n{{ a ?? 'b }}", "line 4", "unbalanced quotes"),
    ("one\n{{ a ?? b | }}", "line 2", ""),
    ("{{ first name | }}", "line 1", ""),
    ("one\n\n{{ a | }}", "line 3", "expected word"),
    ("one\ntwo\n{% if %}", "line 3", ""),
    ("{% raw %}\n\n{% endraw %}\n{{ a ?? }}", "line 4", "needs a fallback"),
]


@pytest.mark.parametrize(("source", "line", "words"), ERRORS)
def test_syntax_errors_name_the_line(source, line, words):
    problem = template_check(subject="s", html_body=source)["html"]
    assert problem.startswith(f"{line}:")
    assert words in problem
    with pytest.raises(TemplateError) as raised:
        render(subject="", html_body=source, text_body="", variables={})
    assert line in str(raised.value)


def test_the_template_form_accepts_plunk_syntax(db):
    values = {
        "name": "Plunk",
        "type": "marketing",
        "subject": "Hi {{ firstName ?? there }}",
        "html": "<p>{{ first name ?? friend }}</p><a href='{{ manageUrl }}'>prefs</a>",
        "text": "",
    }
    assert TemplateForm(data=values).is_valid()


# --- Scope -----------------------------------------------------------------------------------


def scope_render(source, *, data=None, context=None, subscribed=True):
    contact, _ = contact_upsert(email="ann@example.com", data=data or {}, subscribed=subscribed)
    template = Template(name="t", subject=source, html=source, text=source)
    rendered = template_render(
        template=template, contact=contact, context=context, workflow_name="Onboarding"
    )
    return contact, rendered.text


SCOPE = [
    # (template, contact data, execution context, expected)
    ("{{ plan }}", {"plan": "free"}, {}, "free"),  # contact data at top level
    ("{{ orderId }}", {}, {"orderId": "A-1"}, "A-1"),  # context at top level
    ("{{ plan }}", {"plan": "free"}, {"plan": "pro"}, "pro"),  # the context wins over data
    ("{{ data.plan }}", {"plan": "free"}, {"plan": "pro"}, "free"),
    ("{{ event.plan }}", {"plan": "free"}, {"plan": "pro"}, "pro"),
    ("{{ contact.plan }}", {"plan": "free"}, {"plan": "pro"}, "free"),
    ("{{ email }}", {"email": "spoof@example.com"}, {"email": "x@example.com"}, "ann@example.com"),
    ("{{ contact.email }}", {}, {}, "ann@example.com"),
    ("{{ subscribed }} {{ contact.subscribed }}", {}, {}, "true true"),
    ("{{ workflow.name }}", {}, {}, "Onboarding"),
    ("{{ data.first name }}", {"first name": "Ann"}, {}, "Ann"),
    ("{{ event.order id }}", {}, {"order id": 7}, "7"),
    ("{{ first name }}", {"first name": "Ann"}, {}, "Ann"),
    ("{{ missing }}|{{ data.missing }}|{{ event.missing }}", {}, {}, "||"),
]


@pytest.mark.parametrize(("source", "data", "context", "expected"), SCOPE)
def test_scope(db, source, data, context, expected):
    _, text = scope_render(source, data=data, context=context)
    assert text == expected


def test_id_is_the_contact_id_and_reserved_names_win(db):
    reserved = {
        "id": "spoof",
        "unsubscribeUrl": "https://evil.test/u",
        "subscribeUrl": "https://evil.test/s",
        "manageUrl": "https://evil.test/m",
    }
    contact, text = scope_render(
        "{{ id }} {{ unsubscribeUrl }} {{ subscribeUrl }} {{ manageUrl }}",
        data=reserved,
        context=reserved,
    )
    contact_id, unsubscribe, subscribe, manage = text.split()
    assert contact_id == str(contact.pk)
    assert "evil" not in text
    for url, page, salt in (
        (unsubscribe, "unsubscribe", UNSUBSCRIBE_SALT),
        (subscribe, "subscribe", SUBSCRIBE_SALT),
        (manage, "manage", MANAGE_SALT),
    ):
        path = urlsplit(url).path
        assert path.startswith(f"/{page}/")
        token = path.removeprefix(f"/{page}/")
        assert signing.loads(token, salt=salt) == str(contact.pk)


def test_each_link_is_signed_for_its_own_page(db):
    contact, _ = contact_upsert(email="ann@example.com")
    variables = template_variables(contact=contact)
    manage_token = urlsplit(variables["manageUrl"]).path.removeprefix("/manage/")
    for salt in (UNSUBSCRIBE_SALT, SUBSCRIBE_SALT):
        with pytest.raises(signing.BadSignature):
            signing.loads(manage_token, salt=salt)


def test_the_preview_has_the_same_scope(db):
    rendered = template_preview(
        subject="{{ plan }} {{ data.plan }} {{ event.plan }}",
        html_body="<p>{{ first name ?? there }}</p><a href='{{ manageUrl }}'>m</a>",
        sample={"plan": "free"},
        event={"plan": "pro"},
    )
    assert rendered.subject == "pro free pro"
    assert "<p>there</p>" in rendered.html
    assert "/manage/" in rendered.html


def test_existing_liquid_still_works():
    source = (
        "{% assign n = items | size %}{% for i in items %}{{ forloop.index }}={{ i | upcase }} "
        "{% endfor %}{{ n }} {{ 'a,b' | split: ',' | join: '+' }} {% case p %}{% when 'pro' %}"
        "PRO{% else %}other{% endcase %} {{ missing | default: 'dflt' }} {{ s | escape }}"
    )
    assert plain(source, items=["x", "y"], p="pro", s="<") == "1=X 2=Y 2 a+b PRO dflt &lt;"
