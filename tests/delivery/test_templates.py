import pytest
from django.core import mail
from django.test import Client

from contacts_app.services import contact_upsert
from templates_app.admin import TemplateForm
from templates_app.models import Template
from templates_app.rendering import TemplateError, html_to_text, render
from templates_app.services import template_render


def render_for(subject="", html="", text="", **contact):
    who, _ = contact_upsert(email="ann@example.com", data=contact)
    template = Template(name="t", subject=subject, html=html, text=text)
    return template_render(
        template=template, contact=who, context={"plan": "pro"}, workflow_name="Onboarding"
    )


def test_it_renders_contact_data_reserved_variables_and_event(db):
    rendered = render_for(
        subject="Hi {{ firstName | default: 'there' }}",
        html="{{ contact.firstName }} {{ email }} {{ event.plan }} {{ workflow.name }} "
        "{{ subscribed }} <a href='{{ unsubscribeUrl }}'>u</a>",
        firstName="Ann",
    )
    assert rendered.subject == "Hi Ann"
    assert "Ann ann@example.com pro Onboarding true" in rendered.html
    assert "/unsubscribe/" in rendered.html


def test_it_uses_the_default_filter_and_renders_unknown_variables_empty(db):
    rendered = render_for(
        subject='Hi {{ firstName | default: "there" }}!', html="[{{ nothing.here }}]"
    )
    assert rendered.subject == "Hi there!"
    assert rendered.html == "[]"


def test_it_escapes_contact_data_in_html_but_not_in_subject(db):
    rendered = render_for(
        subject="{{ firstName }}", html="<p>{{ firstName }}</p>", firstName="<b>Ann</b>"
    )
    assert rendered.html == "<p>&lt;b&gt;Ann&lt;/b&gt;</p>"
    assert rendered.subject == "<b>Ann</b>"


def test_it_derives_the_text_body_from_html(db):
    rendered = render_for(
        subject="s", html="<style>p{}</style><p>Hello</p><p><a href='https://x.test'>Go</a></p>"
    )
    assert rendered.text == "Hello\n\nGo (https://x.test)"


def test_it_caps_runaway_loops():
    with pytest.raises(TemplateError):
        render(
            subject="s",
            html_body="{% for i in (1..100000000) %}x{% endfor %}",
            text_body="",
            variables={},
        )


def test_it_keeps_explicit_text_bodies():
    rendered = render(
        subject="s", html_body="<p>H</p>", text_body="Plain {{ a }}", variables={"a": 1}
    )
    assert rendered.text == "Plain 1"


def test_html_to_text_keeps_paragraphs():
    assert html_to_text("<h1>T</h1><div>a&amp;b</div>") == "T\n\na&b"


@pytest.mark.parametrize("field", ["subject", "html", "text"])
def test_it_rejects_a_syntax_error_on_save_naming_the_line(db, field):
    values = {"name": "Bad", "type": "marketing", "subject": "ok", "html": "<p>ok</p>", "text": ""}
    values[field] = "line one\n{% if %}\n"
    form = TemplateForm(data=values)
    assert not form.is_valid()
    assert "line 2" in form.errors[field][0]
    assert not Template.objects.exists()


@pytest.fixture
def staff(db, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-123456789")
    client = Client()
    client.force_login(user)
    return client


def test_the_live_preview_renders_unsaved_text_for_a_contact(staff):
    contact_upsert(email="bob@example.com", data={"firstName": "Bob"})
    response = staff.post(
        "/admin/templates_app/template/preview/",
        {
            "subject": "Hi {{ firstName }}",
            "html": "<p>{{ contact.firstName }}</p>",
            "text": "",
            "contact": "BOB@example.com",
        },
    )
    assert response.status_code == 200
    assert response.json()["subject"] == "Hi Bob"
    assert response.json()["html"] == "<p>Bob</p>"


def test_the_live_preview_uses_sample_data_and_reports_errors(staff):
    ok = staff.post(
        "/admin/templates_app/template/preview/",
        {"subject": "{{ firstName }}", "html": "x", "sample": '{"firstName": "Zed"}'},
    )
    assert ok.json()["subject"] == "Zed"
    bad = staff.post("/admin/templates_app/template/preview/", {"subject": "{% if %}", "html": "x"})
    assert bad.status_code == 400
    assert {"field": "subject", "line": 1}.items() <= bad.json()["errors"][0].items()
    assert "line 1" in bad.json()["errors"][0]["message"]
    unknown = staff.post(
        "/admin/templates_app/template/preview/",
        {"subject": "s", "html": "x", "contact": "nobody@example.com"},
    )
    assert unknown.status_code == 400


def test_send_test_email_goes_to_the_user(staff, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    template = Template.objects.create(name="T", subject="Hello {{ firstName }}", html="<p>x</p>")
    response = staff.post(
        f"/admin/templates_app/template/{template.pk}/send-test/",
        {"sample": '{"firstName": "Ada"}'},
    )
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["boss@example.com"]
    assert mail.outbox[0].subject == "[Test] Hello Ada"
