"""MJML templates: Liquid renders inside the MJML, which compiles (MRML) to responsive HTML in
the email really sent; MJML that does not compile is refused on save naming the line (admin
form, API, workflow file); raw-HTML templates get their CSS inlined."""

import json
import re
from pathlib import Path

import pytest
from django.core import mail
from django.test import Client

from contacts_app.services import contact_upsert
from templates_app.admin import TemplateForm
from templates_app.mjml import mjml_check
from templates_app.models import Message, Template
from templates_app.rendering import TemplateError, render
from templates_app.services import template_create, template_update
from tests.conftest import chain, drain
from tests.flow import execution_of, track_ok
from workflows_app.files import DocumentError, document_export, document_import
from workflows_app.models import Execution

DEMO = Path(__file__).resolve().parent.parent / "demo" / "workflows.json"

MJML = """<mjml>
  <mj-head>
    <mj-title>Welcome</mj-title>
    <mj-style>.footer a { color: #888888; }</mj-style>
  </mj-head>
  <mj-body background-color="#f4f4f4">
    <mj-section>
      <mj-column>
        <mj-text font-size="20px">Hi {{ firstName | default: "there" }}!</mj-text>
      </mj-column>
    </mj-section>
    {% if plan == "pro" %}
    <mj-section>
      <mj-column><mj-text>Pro tips for {{ company }}</mj-text></mj-column>
      <mj-column><mj-button href="https://example.com/pro?u={{ id }}">Open</mj-button></mj-column>
    </mj-section>
    {% endif %}
    <mj-section css-class="footer">
      <mj-column>
        <mj-text><a href="{{ unsubscribeUrl }}">Unsubscribe</a></mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""

# Line 5 opens an mj-text that line 6's </mj-column> does not close.
BROKEN = """<mjml>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text>Hello {{ firstName }}
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""


@pytest.fixture(autouse=True)
def _locmem(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def sent_html(message):
    (html, kind) = message.alternatives[0]
    assert kind == "text/html"
    return html


# --- The real send ------------------------------------------------------------------------------


def test_an_mjml_template_with_liquid_is_sent_as_responsive_html(db, track, make_workflow):
    template_create(name="Welcome", subject="Hi {{ firstName }}", mjml=MJML)
    make_workflow(
        *chain({"key": "welcome", "type": "send_email", "config": {"template": "Welcome"}})
    )
    contact_upsert(
        email="ann@example.com", data={"firstName": "Ann", "plan": "pro", "company": "A&B"}
    )
    track_ok(track, email="ann@example.com")
    drain()
    assert execution_of().status == Execution.COMPLETED, execution_of().error
    (email,) = mail.outbox
    html = sent_html(email)
    assert "@media" in html  # the responsive columns
    assert "<mj-" not in html and "{%" not in html and "{{" not in html
    assert "Hi Ann!" in html
    assert "Pro tips for A&amp;B" in html  # contact data is escaped inside MJML too
    assert "mj-column-per-50" in html  # {% if %} kept a two-column section, laid out as two
    assert "/unsubscribe/" in html
    assert email.subject == "Hi Ann"
    assert "Hi Ann!" in email.body and "<" not in email.body  # the text part, derived
    assert Message.objects.get().html == html


def test_liquid_around_a_section_leaves_it_out_for_other_contacts(db):
    template = template_create(name="Welcome", subject="s", mjml=MJML)
    rendered = render(
        subject="s",
        html_body=template.html,
        text_body="",
        mjml_body=template.mjml,
        variables={"firstName": "Bo", "plan": "free"},
    )
    assert "Hi Bo!" in rendered.html and "Pro tips" not in rendered.html
    assert "mj-column-per-50" not in rendered.html


def test_a_loop_makes_columns_laid_out_as_mjml_would(db):
    source = (
        "<mjml><mj-body><mj-section>{% for item in items %}<mj-column><mj-text>{{ item }}"
        "</mj-text></mj-column>{% endfor %}</mj-section></mj-body></mjml>"
    )
    html = render(
        subject="s", html_body="", text_body="", mjml_body=source, variables={"items": [1, 2, 3]}
    ).html
    assert "mj-column-per-33-333332" in html  # three columns share the width
    assert html.count(">1<") + html.count(">2<") + html.count(">3<") == 3


def test_the_saved_html_of_an_mjml_template_is_its_compiled_source(db):
    template = template_create(name="Welcome", subject="s", mjml=MJML)
    assert template.html.lower().startswith("<!doctype html>")
    assert "<mj-" not in template.html and "{{ firstName" in template.html
    changed = template_update(template=template, mjml=MJML.replace("Hi ", "Hello "))
    assert "Hello {{ firstName" in Template.objects.get(pk=changed.pk).html


def test_a_value_that_breaks_the_mjml_at_send_time_is_a_template_error(db):
    with pytest.raises(TemplateError, match="does not compile"):
        render(
            subject="s",
            html_body="",
            text_body="",
            mjml_body="<mjml><mj-body>{{ x | raw }}</mj-body></mjml>",
            variables={"x": "<mj-section>"},
        )


def test_mj_include_is_refused(db):
    problem = mjml_check('<mjml>\n<mj-body>\n<mj-include path="/etc/passwd" />\n</mj-body></mjml>')
    assert problem is not None and problem.line == 3
    assert "mj-include" in str(problem)


# --- What MRML (native code) is never given ------------------------------------------------------


def test_nesting_that_would_overflow_mrmls_stack_is_refused_everywhere(db):
    # 2,000 levels kill the process inside MRML; refused before it runs, on save and on send.
    deep = "<mjml><mj-body>" + "<mj-wrapper>" * 2000 + "</mj-wrapper>" * 2000 + "</mj-body></mjml>"
    problem = mjml_check(deep)
    assert problem is not None and "nested more than 100 deep" in str(problem)
    looped = (
        "<mjml><mj-body>{% for i in (1..3000) %}<mj-wrapper>{% endfor %}"
        "{% for i in (1..3000) %}</mj-wrapper>{% endfor %}</mj-body></mjml>"
    )
    assert mjml_check(looped) is None  # masked, it is one wrapper
    with pytest.raises(TemplateError, match="nested more than 100 deep"):
        render(subject="s", html_body="", text_body="", mjml_body=looped, variables={})


def test_mjml_that_would_compile_to_tens_of_megabytes_is_refused_before_compiling():
    head = '<mj-attributes><mj-class name="a" css-class="%s"/></mj-attributes>' % ("x" * 5000)
    group = '<mj-section mj-class="a"><mj-column mj-class="a"><mj-text mj-class="a">t</mj-text>'
    source = f"<mjml><mj-head>{head}</mj-head><mj-body>"
    source += (group + "</mj-column></mj-section>") * 400 + "</mj-body></mjml>"
    problem = mjml_check(source)
    assert problem is not None and "would compile to more than 16 MB" in str(problem)
    # The demo's emails are far from it.
    demo = [t for t in json.loads(DEMO.read_text())["templates"] if t.get("mjml")]
    assert demo
    for template in demo:
        assert mjml_check(template["mjml"]) is None, template["name"]


def test_an_attribute_the_builder_would_turn_into_markup_is_refused(db):
    source = (
        '<mjml><mj-body><mj-section><mj-column>\n<mj-button href="https://x.test" '
        'css-class=\'a"><img src=x onerror="top.x=1">\'>b</mj-button>'
        "</mj-column></mj-section></mj-body></mjml>"
    )
    problem = mjml_check(source)
    assert problem is not None and problem.line == 2 and "quote, < or >" in str(problem)
    # Liquid in a value is not the value's own text.
    fine = source.replace(
        'css-class=\'a"><img src=x onerror="top.x=1">\'', "href=\"{{ url | default: 'x' }}\""
    )
    assert mjml_check(fine) is None


def test_a_form_posted_with_crlf_line_ends_saves_an_mjml_head(db):
    source = MJML.replace("\n", "\r\n")
    assert "<mj-head>" in source
    form = TemplateForm(
        data={"name": "CRLF", "type": "marketing", "subject": "s", "html": "", "mjml": source}
    )
    assert form.is_valid(), form.errors
    assert "@media" in form.save().html


def test_mjml_inside_a_liquid_comment_is_not_checked(db):
    source = MJML.replace("<mj-body>", "<mj-body>{% comment %}<mj-section> old {% endcomment %}")
    assert mjml_check(source) is None


# --- Compile errors refused naming the line -----------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line"),
    [
        (BROKEN, 5),
        (
            "<mjml>\n<mj-body>\n<mj-section>\n<mj-column>\n<mj-text>a < b</mj-text>\n"
            "</mj-column></mj-section></mj-body></mjml>",
            5,
        ),
        ("<mjml>\n<mj-body>\n</mj-body>\n</mjml>\n</mj-body>", 5),
        ("<mjml>\n<mj-body>\n<mj-section>\n", 3),
    ],
)
def test_the_compile_error_names_its_line(source, line):
    problem = mjml_check(source)
    assert problem is not None and problem.line == line, problem


def test_liquid_that_is_not_mjml_text_is_accepted(db):
    # `<` inside a Liquid tag would not parse as MJML; the check blanks Liquid first.
    source = MJML.replace('{% if plan == "pro" %}', "{% if score < 10 %}")
    assert mjml_check(source) is None
    template_create(name="T", subject="s", mjml=source)


def test_the_admin_form_refuses_mjml_that_does_not_compile(db):
    form = TemplateForm(
        data={"name": "Bad", "type": "marketing", "subject": "s", "html": "", "mjml": BROKEN}
    )
    assert not form.is_valid()
    assert form.errors["mjml"][0].startswith("MJML error, line 5:")
    assert not Template.objects.exists()


def test_the_admin_form_derives_the_html_of_an_mjml_template(db):
    form = TemplateForm(
        data={"name": "Good", "type": "marketing", "subject": "s", "html": "", "mjml": MJML}
    )
    assert form.is_valid(), form.errors
    template = form.save()
    assert "@media" in template.html


def test_the_admin_form_needs_html_or_mjml(db):
    form = TemplateForm(data={"name": "Empty", "type": "marketing", "subject": "s", "html": ""})
    assert not form.is_valid() and "html" in form.errors


def test_the_admin_form_reports_liquid_errors_in_mjml_as_liquid(db):
    form = TemplateForm(
        data={"name": "Bad", "type": "marketing", "subject": "s", "mjml": "<mjml>\n{% if %}"}
    )
    assert not form.is_valid()
    assert form.errors["mjml"][0].startswith("Liquid syntax error, line 2")


def api(method, path, key, body):
    return getattr(Client(), method)(
        path,
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def test_the_api_takes_and_returns_mjml(secret_key):
    created = api("post", "/v1/templates", secret_key, {"name": "W", "subject": "s", "mjml": MJML})
    assert created.status_code == 201, created.content
    data = created.json()["data"]
    assert data["mjml"] == MJML and "@media" in data["body"]
    html = api("post", "/v1/templates", secret_key, {"name": "H", "subject": "s", "body": "<p/>"})
    assert html.json()["data"]["mjml"] is None


def test_the_api_refuses_a_compile_error_naming_mjml_and_the_line(secret_key):
    response = api(
        "post", "/v1/templates", secret_key, {"name": "W", "subject": "s", "mjml": BROKEN}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error["fields"]) == {"mjml"}
    assert error["fields"]["mjml"].startswith("MJML error, line 5:")
    assert not Template.objects.exists()


def test_the_api_refuses_body_and_mjml_together_and_a_body_for_an_mjml_template(secret_key):
    both = api(
        "post",
        "/v1/templates",
        secret_key,
        {"name": "W", "subject": "s", "mjml": MJML, "body": "x"},
    )
    assert both.status_code == 400 and "mjml" in both.json()["error"]["fields"]
    neither = api("post", "/v1/templates", secret_key, {"name": "W", "subject": "s"})
    assert neither.status_code == 400 and "body" in neither.json()["error"]["fields"]
    template = template_create(name="W", subject="s", mjml=MJML)
    body_only = api("patch", f"/v1/templates/{template.pk}", secret_key, {"body": "<p>x</p>"})
    assert body_only.status_code == 400 and "body" in body_only.json()["error"]["fields"]
    to_html = api(
        "patch", f"/v1/templates/{template.pk}", secret_key, {"body": "<p>x</p>", "mjml": None}
    )
    assert to_html.status_code == 200, to_html.content
    assert Template.objects.get(pk=template.pk).mjml == ""
    assert Template.objects.get(pk=template.pk).html == "<p>x</p>"


def file_with(**template):
    return {"templates": [{"name": "W", "type": "marketing", "subject": "s", **template}]}


def test_the_file_format_imports_and_exports_mjml(db):
    document_import(file_with(mjml=MJML))
    template = Template.objects.get(name="W")
    assert template.mjml == MJML and "@media" in template.html
    (exported,) = document_export()["templates"]
    assert exported["mjml"] == MJML and "html" not in exported


def test_the_file_format_refuses_a_compile_error_naming_the_line(db):
    with pytest.raises(DocumentError) as refused:
        document_import(file_with(mjml=BROKEN))
    assert "templates[0] (W).mjml: MJML error, line 5:" in str(refused.value)
    assert not Template.objects.exists()


def test_the_file_format_refuses_html_and_mjml_together(db):
    with pytest.raises(DocumentError, match="'html' and 'mjml' together"):
        document_import(file_with(mjml=MJML, html="<p>x</p>"))
    with pytest.raises(DocumentError, match=r"html: required text \(or 'mjml'"):
        document_import(file_with())


# --- CSS inlining of raw HTML -------------------------------------------------------------------

STYLED = """<html><head><style>
p.lead { color: #336699; font-size: 18px; }
a:hover { color: red; }
[data-ogsc] p.lead { color: #ffffff; }
@media (max-width: 600px) { p.lead { font-size: 22px; } }
</style><link rel="stylesheet" href="file:///etc/passwd"></head>
<body><p class="lead">Hi {{ firstName }}</p><p style="color: red">Kept</p></body></html>"""


def test_raw_html_is_sent_with_its_css_inlined_keeping_media_queries(db, track, make_workflow):
    template_create(name="Welcome", subject="s", html=STYLED, type=Template.TRANSACTIONAL)
    make_workflow(
        *chain({"key": "welcome", "type": "send_email", "config": {"template": "Welcome"}})
    )
    contact_upsert(email="ann@example.com", data={"firstName": "Ann"})
    track_ok(track, email="ann@example.com")
    drain()
    html = sent_html(mail.outbox[0])
    lead = re.search(r'<p class="lead" style="([^"]*)">Hi Ann</p>', html)
    assert lead is not None, html
    assert "color: #336699" in lead.group(1) and "font-size: 18px" in lead.group(1)
    # The stylesheet stays as written, for what can not be inlined (@media, :hover, one
    # client's selectors) and the clients that read it.
    style = re.search(r"<style>(.*?)</style>", html, re.DOTALL).group(1)
    for rule in ("@media (max-width: 600px)", "a:hover", "[data-ogsc] p.lead"):
        assert rule in style, rule
    assert 'style="color: red"' in html  # an element's own style wins
    assert "root:" not in html  # the <link> was not loaded


def test_html_without_a_style_element_is_sent_as_written(db):
    rendered = render(subject="s", html_body="<p>{{ a }}</p>", text_body="", variables={"a": 1})
    assert rendered.html == "<p>1</p>"
