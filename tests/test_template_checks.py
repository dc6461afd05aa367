"""Pre-send checks (templates_app.lint), each at its edge; shown by the editor's preview and as
warnings when the admin saves a template (the template is saved all the same)."""

import json
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from contacts_app.models import Event
from contacts_app.services import contact_upsert
from templates_app.lint import (
    GMAIL_CLIP_BYTES,
    Known,
    check_template,
    known_variables,
    known_variables_forget,
)
from templates_app.models import Template

UNSUBSCRIBE = '<a href="{{ unsubscribeUrl }}">Unsubscribe</a>'


@pytest.fixture(autouse=True)
def _fresh_known():
    known_variables_forget()
    yield
    known_variables_forget()


def codes(html="", *, mjml="", subject="s", text="", kind=Template.MARKETING, **kwargs):
    template = Template(subject=subject, html=html, mjml=mjml, text=text, type=kind)
    found = check_template(template, rendered_html=kwargs.pop("rendered_html", None), **kwargs)
    assert all(set(c) == {"code", "level", "message"} for c in found)
    return {c["code"]: c["message"] for c in found}


# --- size: Gmail clips past 102 KB --------------------------------------------------------------


def test_102_kb_exactly_is_not_clipped_and_one_byte_more_is():
    assert GMAIL_CLIP_BYTES == 102 * 1024
    exactly = "a" * GMAIL_CLIP_BYTES
    assert "size" not in codes(UNSUBSCRIBE, rendered_html=exactly)
    over = codes(UNSUBSCRIBE, rendered_html=exactly + "a")
    assert "104,449 bytes" in over["size"]


def test_the_size_counts_bytes_not_characters():
    # 52,224 two-byte characters are 104,448 bytes: the limit; one more is over.
    assert "size" not in codes(UNSUBSCRIBE, rendered_html="é" * (GMAIL_CLIP_BYTES // 2))
    assert "size" in codes(UNSUBSCRIBE, rendered_html="é" * (GMAIL_CLIP_BYTES // 2) + "a")


def test_no_render_no_size_check():
    assert "size" not in codes(UNSUBSCRIBE, rendered_html=None)


# --- image_alt ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "flagged"),
    [
        ('<img src="https://x.test/a.png" alt="Logo">', False),
        ('<img src="https://x.test/a.png" alt="{{ productName }}">', False),
        ('<img src="https://x.test/a.png">', True),
        ('<img src="https://x.test/a.png" alt="">', True),
        ('<img src="https://x.test/a.png" alt="   ">', True),
        ("<IMG SRC='https://x.test/a.png'/>", True),
    ],
)
def test_images_need_alt_text(image, flagged):
    assert ("image_alt" in codes(UNSUBSCRIBE + image)) is flagged


def test_mjml_images_need_alt_text_too():
    mjml = (
        '<mjml><mj-body><mj-section><mj-column><mj-image src="https://x.test/a.png" />'
        '<mj-image src="https://x.test/b.png" alt="B" /><mj-text>' + UNSUBSCRIBE + "</mj-text>"
        "</mj-column></mj-section></mj-body></mjml>"
    )
    found = codes(mjml=mjml)
    assert "1 image has no alt text" in found["image_alt"]
    assert "a.png" in found["image_alt"] and "b.png" not in found["image_alt"]


# --- link -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("href", "flagged"),
    [
        ("https://example.com/", False),
        ("http://example.com/", False),
        ("HTTPS://EXAMPLE.COM/", False),
        ("mailto:help@example.com", False),
        ("tel:+15551234", False),
        ("{{ unsubscribeUrl }}", False),
        ("https://example.com/{{ path }}", False),
        ("{% if pro %}https://a.test{% else %}https://b.test{% endif %}", False),
        ("/pricing", True),
        ("#top", True),
        ("", True),
        ("javascript:alert(1)", True),
        ("ftp://example.com/file", True),
        ("www.example.com", True),
    ],
)
def test_links_must_be_http_or_made_by_liquid(href, flagged):
    found = codes(UNSUBSCRIBE + f'<a href="{href}">x</a>')
    assert ("link" in found) is flagged


def test_a_stylesheet_link_is_not_a_link_and_mjml_buttons_are():
    assert "link" not in codes(UNSUBSCRIBE + '<link rel="stylesheet" href="/s.css">')
    mjml = (
        '<mjml><mj-body><mj-section><mj-column><mj-button href="/signup">Go</mj-button>'
        "<mj-text>" + UNSUBSCRIBE + "</mj-text></mj-column></mj-section></mj-body></mjml>"
    )
    assert "'/signup'" in codes(mjml=mjml)["link"]


# --- unsubscribe ----------------------------------------------------------------------------------


def test_a_marketing_template_needs_unsubscribe_url():
    assert "unsubscribe" in codes("<p>Hello</p>")
    assert "unsubscribe" not in codes("<p>Hello</p>" + UNSUBSCRIBE)
    assert "unsubscribe" not in codes("<p>Hello</p>", text="Leave: {{ unsubscribeUrl }}")
    # The word in the text is not a link to it.
    assert "unsubscribe" in codes("<p>Use unsubscribeUrl</p>")


def test_a_transactional_template_does_not():
    assert "unsubscribe" not in codes("<p>Your receipt</p>", kind=Template.TRANSACTIONAL)


# --- unknown_variable ----------------------------------------------------------------------------


def test_variables_no_contact_has_are_named():
    known = Known(contact_keys={"firstName", "plan"}, event_keys=set())
    found = codes(
        UNSUBSCRIBE + "{{ firstName }} {{ contact.plan }} {{ data.plan }} {{ email }} "
        "{{ lastName }} {{ contact.company }} {% assign x = 1 %}{{ x }} "
        "{% for i in (1..2) %}{{ forloop.index }}{% endfor %} {{ event.total }}",
        subject="{{ nickname }}",
        known=known,
    )
    # Exactly these: not the contact's keys, reserved names, assigned or loop variables, nor
    # event data while no event is known.
    assert found["unknown_variable"].startswith(
        "No recent contact or event has contact.company; lastName; nickname: they render"
    )


def test_a_name_only_the_contact_or_the_workflow_has_is_not_taken_for_data():
    known = Known(contact_keys={"plan"}, event_keys=set())
    found = codes(
        UNSUBSCRIBE + "{{ contact.email }} {{ workflow.name }} {{ data.email }} "
        "{{ workflow.nmae }}",
        known=known,
    )
    # `data` is the data alone (no email there); a workflow has only its name.
    assert found["unknown_variable"].startswith(
        "No recent contact or event has data.email; workflow.nmae: they render"
    )


def test_event_variables_are_checked_once_events_are_known():
    known = Known(contact_keys=set(), event_keys={"total"})
    found = codes(UNSUBSCRIBE + "{{ event.total }} {{ total }} {{ event.currency }}", known=known)
    assert found["unknown_variable"].startswith("No recent contact or event has event.currency:")


def test_without_known_data_variables_are_not_checked():
    assert "unknown_variable" not in codes(UNSUBSCRIBE + "{{ anything }}", known=None)


def test_known_variables_are_read_from_recent_contacts_and_events(db):
    contact, _ = contact_upsert(email="ann@example.com", data={"firstName": "Ann"})
    Event.objects.create(contact=contact, name="order.paid", data={"total": 3})
    known = known_variables()
    assert known.has(("firstName",)) and known.has(("contact", "firstName"))
    assert known.has(("event", "total")) and not known.has(("event", "currency"))
    assert not known.has(("lastName",))


# --- unknown_element ----------------------------------------------------------------------------


def test_an_unknown_mjml_element_is_named():
    mjml = (
        "<mjml><mj-body><mj-section><mj-colum><mj-text>" + UNSUBSCRIBE + "</mj-text>"
        "</mj-colum></mj-section></mj-body></mjml>"
    )
    assert "<mj-colum>" in codes(mjml=mjml)["unknown_element"]
    assert "unknown_element" not in codes(mjml=mjml.replace("mj-colum>", "mj-column>"))


# --- Through the admin: the preview and the save ------------------------------------------------


def user_client(django_user_model, *perms, username="editor"):
    user = django_user_model.objects.create_user(username, f"{username}@example.com", "pw-12345678")
    user.is_staff = True
    user.save()
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


PREVIEW = reverse("admin:templates_app_template_preview")


def test_the_preview_renders_unsaved_mjml_with_its_checks(db, django_user_model):
    client = user_client(
        django_user_model, "templates_app.view_template", "contacts_app.view_contact"
    )
    contact_upsert(email="ann@example.com", data={"firstName": "Ann"})
    mjml = (
        "<mjml><mj-body><mj-section><mj-column><mj-image src='https://x.test/a.png' />"
        "<mj-text>Hi {{ firstName }} {{ favouriteColour }}</mj-text></mj-column></mj-section>"
        "</mj-body></mjml>"
    )
    response = client.post(
        PREVIEW,
        json.dumps({"subject": "Hi {{ firstName }}", "mjml": mjml, "sample": {"firstName": "Zed"}}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"subject", "html", "text", "checks", "errors"}
    assert body["subject"] == "Hi Zed" and "@media" in body["html"] and body["errors"] == []
    assert "Hi Zed" in body["text"]
    assert {c["code"] for c in body["checks"]} == {"image_alt", "unsubscribe", "unknown_variable"}


def test_the_preview_names_the_field_and_line_of_an_error(db, django_user_model):
    client = user_client(django_user_model, "templates_app.view_template")
    mjml = "<mjml>\n<mj-body>\n<mj-section>\n<mj-text>x</mj-section>\n</mj-body></mjml>"
    response = client.post(PREVIEW, {"subject": "s", "mjml": mjml})
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["field"] == "mjml" and error["line"] == 4
    assert error["message"].startswith("MJML error, line 4:")
    liquid = client.post(PREVIEW, {"subject": "s", "html": "<p>\n{{ x | }}</p>"}).json()
    assert liquid["errors"][0]["field"] == "html" and liquid["errors"][0]["line"] == 2


def test_the_preview_renders_for_a_contact_id_only_with_contact_permission(db, django_user_model):
    contact, _ = contact_upsert(email="ann@example.com", data={"firstName": "Ann"})
    fields = {"subject": "Hi {{ firstName }}", "html": "<p>x</p>", "contact_id": str(contact.pk)}
    without = user_client(django_user_model, "templates_app.view_template")
    refused = without.post(PREVIEW, fields)
    assert refused.status_code == 403 and "Ann" not in refused.content.decode()
    with_perm = user_client(
        django_user_model,
        "templates_app.view_template",
        "contacts_app.view_contact",
        username="ops",
    )
    allowed = with_perm.post(PREVIEW, fields)
    assert allowed.json()["subject"] == "Hi Ann", allowed.content
    missing = with_perm.post(PREVIEW, {**fields, "contact_id": str(uuid.uuid4())})
    assert missing.status_code == 400 and missing.json()["errors"][0]["field"] == "contact"
    bad = with_perm.post(PREVIEW, {**fields, "contact_id": "1; drop"})
    assert bad.status_code == 400


def test_the_preview_leaves_out_the_variable_check_without_contact_permission(
    db, django_user_model
):
    contact_upsert(email="ann@example.com", data={"firstName": "Ann"})
    client = user_client(django_user_model, "templates_app.view_template")
    body = client.post(PREVIEW, {"subject": "s", "html": "{{ nothing }}" + UNSUBSCRIBE}).json()
    assert body["errors"] == [] and body["checks"] == []


def test_the_preview_refuses_a_body_that_is_not_a_json_object(db, django_user_model):
    client = user_client(django_user_model, "templates_app.view_template")
    for raw in ("[1]", "{", '{"subject": 5}'):
        response = client.post(PREVIEW, raw, content_type="application/json")
        assert response.status_code == 400, raw
        assert response.json()["errors"][0]["field"] == "body"


def test_the_preview_measures_the_size_of_the_rendered_html(db, django_user_model):
    client = user_client(django_user_model, "templates_app.view_template")
    # "<p>" + filler + "</p>" + the unsubscribe link, rendered with its real URL: sized after.
    fixed = f"<p>{{{{ filler }}}}</p>{UNSUBSCRIBE}"
    first = client.post(PREVIEW, {"subject": "s", "html": fixed, "sample": '{"filler": ""}'})
    base = len(first.json()["html"].encode())
    exactly = json.dumps({"filler": "a" * (GMAIL_CLIP_BYTES - base)})
    at_limit = client.post(PREVIEW, {"subject": "s", "html": fixed, "sample": exactly}).json()
    assert len(at_limit["html"].encode()) == GMAIL_CLIP_BYTES
    assert at_limit["checks"] == []
    over = json.dumps({"filler": "a" * (GMAIL_CLIP_BYTES - base + 1)})
    one_more = client.post(PREVIEW, {"subject": "s", "html": fixed, "sample": over}).json()
    assert [c["code"] for c in one_more["checks"]] == ["size"]


def test_saving_in_the_admin_shows_the_checks_as_warnings_and_saves(db, admin_client):
    response = admin_client.post(
        reverse("admin:templates_app_template_add"),
        {
            "name": "Promo",
            "type": "marketing",
            "subject": "Sale",
            "html": '<p>Sale!</p><img src="https://x.test/a.png"><a href="/shop">Shop</a>',
            "mjml": "",
            "text": "",
            "from_email": "",
            "reply_to": "",
            "description": "",
        },
        follow=True,
    )
    assert response.status_code == 200
    assert Template.objects.filter(name="Promo").exists()
    warnings = [str(m) for m in response.context["messages"] if m.level_tag == "warning"]
    assert len(warnings) == 3
    assert any("no alt text" in w for w in warnings)
    assert any("not http(s)" in w for w in warnings)
    assert any("unsubscribeUrl" in w for w in warnings)
