"""The Templates API: list, create, get, change, delete (409 while used), duplicate, usage and
a render preview; every refusal leaves the templates as they were."""

import json

import pytest
from django.test import Client

from contacts_app.services import contact_upsert
from templates_app.models import Message, Template
from templates_app.services import template_create

pytestmark = pytest.mark.django_db


def call(method, path, key, body=None, raw=None):
    extra = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    client = Client()
    if body is None and raw is None:
        return getattr(client, method)(path, **extra)
    data = raw if raw is not None else json.dumps(body)
    return getattr(client, method)(path, data=data, content_type="application/json", **extra)


def make(name="Welcome", **values):
    fields = {"subject": "Hi {{ firstName }}", "html": "<p>Hi {{ firstName }}</p>", **values}
    return template_create(name=name, **fields)


def snapshot():
    return list(Template.objects.order_by("pk").values())


NEW = {
    "name": "Receipt",
    "subject": "Your order {{ order }}",
    "body": "<p>Thanks, {{ firstName }}</p>",
    "type": "TRANSACTIONAL",
    "from": "shop@example.com",
    "fromName": "The Shop",
    "replyTo": "help@example.com",
}


def error(response, status):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is False and body["error"]["statusCode"] == status
    return body["error"]


# --- keys ---------------------------------------------------------------------------------------

ENDPOINTS = [
    ("get", "/v1/templates", None),
    ("post", "/v1/templates", NEW),
    ("get", "/v1/templates/{id}", None),
    ("patch", "/v1/templates/{id}", {"name": "Other"}),
    ("delete", "/v1/templates/{id}", None),
    ("post", "/v1/templates/{id}/duplicate", None),
    ("get", "/v1/templates/{id}/usage", None),
    ("post", "/v1/templates/{id}/preview", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_it_refuses_a_missing_a_wrong_and_a_public_key(method, path, body, public_key):
    template = make()
    before = snapshot()
    url = path.format(id=template.pk)
    assert error(call(method, url, None, body), 401)["code"] == "authentication_required"
    assert error(call(method, url, "sk_wrong", body), 401)["code"] == "authentication_failed"
    assert error(call(method, url, public_key, body), 403)["code"] == "permission_denied"
    assert snapshot() == before


# --- create -------------------------------------------------------------------------------------


def test_it_creates_a_template_in_plunks_shape(secret_key):
    response = call("post", "/v1/templates", secret_key, NEW)
    assert response.status_code == 201
    data = response.json()["data"]
    template = Template.objects.get(name="Receipt")
    assert data == {
        "id": template.pk,
        "name": "Receipt",
        "description": None,
        "subject": "Your order {{ order }}",
        "body": "<p>Thanks, {{ firstName }}</p>",
        "mjml": None,
        "text": None,
        "type": "transactional",
        "from": "shop@example.com",
        "fromName": "The Shop",
        "replyTo": "help@example.com",
        "createdAt": template.created_at.isoformat(),
        "updatedAt": template.updated_at.isoformat(),
    }
    assert template.type == Template.TRANSACTIONAL
    assert template.from_email == "The Shop <shop@example.com>"
    assert template.html == NEW["body"] and template.text == ""


def test_a_description_is_kept_changed_and_copied(secret_key):
    created = call("post", "/v1/templates", secret_key, {**NEW, "description": "After checkout"})
    assert created.status_code == 201 and created.json()["data"]["description"] == "After checkout"
    pk = created.json()["data"]["id"]
    changed = call("patch", f"/v1/templates/{pk}", secret_key, {"description": "Order receipt"})
    assert changed.json()["data"]["description"] == "Order receipt"
    assert changed.json()["data"]["subject"] == NEW["subject"]  # only what was sent changed
    copy = call("post", f"/v1/templates/{pk}/duplicate", secret_key)
    assert copy.json()["data"]["description"] == "Order receipt"
    refused = call("patch", f"/v1/templates/{pk}", secret_key, {"description": 5})
    assert refused.status_code == 400 and "description" in refused.json()["error"]["fields"]
    assert Template.objects.get(pk=pk).description == "Order receipt"


def test_it_creates_a_marketing_template_by_default_with_the_servers_sender(secret_key):
    body = {"name": "Plain", "subject": "S", "body": "<p>B</p>", "text": "B"}
    data = call("post", "/v1/templates", secret_key, body).json()["data"]
    assert data["type"] == "marketing" and data["from"] is None and data["fromName"] is None
    assert data["text"] == "B"


def test_it_quotes_a_sender_name_that_needs_it(secret_key):
    body = {**NEW, "fromName": 'Ann "the shop", Ltd'}
    data = call("post", "/v1/templates", secret_key, body).json()["data"]
    assert data["fromName"] == 'Ann "the shop", Ltd' and data["from"] == "shop@example.com"


def test_it_refuses_headless_templates_saying_so(secret_key):
    err = error(call("post", "/v1/templates", secret_key, {**NEW, "type": "HEADLESS"}), 400)
    assert "HEADLESS" in err["fields"]["type"]
    assert not Template.objects.exists()


def test_it_names_the_field_and_line_of_a_liquid_error(secret_key):
    body = {**NEW, "body": "<p>ok</p>\n<p>{{ x | }}</p>"}
    err = error(call("post", "/v1/templates", secret_key, body), 400)
    assert err["code"] == "validation_error"
    assert set(err["fields"]) == {"body"}
    assert "Liquid syntax error, line 2" in err["fields"]["body"]
    assert err["errors"][0]["field"] == "body"
    subject = error(call("post", "/v1/templates", secret_key, {**NEW, "subject": "{{ x"}), 400)
    assert set(subject["fields"]) == {"subject"}
    text = error(call("post", "/v1/templates", secret_key, {**NEW, "text": "{% for %}"}), 400)
    assert set(text["fields"]) == {"text"}
    assert not Template.objects.exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"subject": ""}, "subject"),
        ({"body": ""}, "body"),
        ({"type": "newsletter"}, "type"),
        ({"from": "not an address"}, "from"),
        ({"replyTo": "nope"}, "replyTo"),
        ({"from": None, "fromName": "Shop"}, "fromName"),
        ({"fromName": "a\r\nBcc: x@example.com"}, "fromName"),
        ({"name": "bad\u0000name"}, "name"),
        ({"fromName": 0}, "fromName"),
        ({"name": 12}, "name"),
        ({"body": ["<p>"]}, "body"),
        ({"text": False}, "text"),
        ({"subject": "\ud800"}, "subject"),
    ],
)
def test_it_refuses_bad_fields_naming_them(secret_key, change, field):
    err = error(call("post", "/v1/templates", secret_key, {**NEW, **change}), 400)
    assert field in err["fields"]
    assert not Template.objects.exists()


def test_it_requires_name_subject_and_body(secret_key):
    err = error(call("post", "/v1/templates", secret_key, {}), 400)
    assert {"name", "subject", "body"} <= set(err["fields"])


def test_a_taken_name_is_a_409(secret_key):
    make(name="Receipt")
    before = snapshot()
    err = error(call("post", "/v1/templates", secret_key, NEW), 409)
    assert err["code"] == "name_taken" and "Receipt" in err["message"]
    assert snapshot() == before


def test_bad_json_and_a_body_too_large_are_refused(secret_key, settings):
    assert error(call("post", "/v1/templates", secret_key, raw="{nope"), 400)["code"] == (
        "invalid_json"
    )
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    big = {**NEW, "body": "x" * 2000}
    assert error(call("post", "/v1/templates", secret_key, big), 413)["code"] == (
        "payload_too_large"
    )
    assert not Template.objects.exists()


def test_a_body_that_is_not_json_is_a_415(secret_key):
    response = Client().post(
        "/v1/templates",
        data="name=x",
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {secret_key}",
    )
    assert error(response, 415)["code"] == "unsupported_media_type"
    assert not Template.objects.exists()


# --- list ---------------------------------------------------------------------------------------


def test_it_lists_templates_a_page_at_a_time(secret_key):
    for n in range(5):
        make(name=f"T{n}")
    response = call("get", "/v1/templates?page=2&pageSize=2&sort=name&dir=asc", secret_key)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert [t["name"] for t in body["data"]] == ["T2", "T3"]
    assert (body["total"], body["page"], body["pageSize"], body["totalPages"]) == (5, 2, 2, 3)
    newest = call("get", "/v1/templates?pageSize=1", secret_key).json()
    assert newest["data"][0]["name"] == "T4"  # createdAt, newest first, by default
    Template.objects.get(name="T1").save()  # changed last
    changed = call("get", "/v1/templates?sort=updatedAt&pageSize=1", secret_key).json()
    assert changed["data"][0]["name"] == "T1"


def test_it_searches_name_and_subject_and_filters_by_type(secret_key):
    make(name="Welcome", subject="Hello")
    make(name="Receipt", subject="Your ORDER", type=Template.TRANSACTIONAL)
    make(name="Order shipped", subject="On its way")

    def names(query):
        response = call("get", f"/v1/templates?{query}&sort=name", secret_key)
        assert response.status_code == 200
        return [t["name"] for t in response.json()["data"]]

    assert names("search=order") == ["Receipt", "Order shipped"]
    assert names("type=TRANSACTIONAL") == ["Receipt"]
    assert names("type=marketing&dir=asc") == ["Order shipped", "Welcome"]
    assert names("search=nothing") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=0", "page"),
        ("page=", "page"),
        ("sort=", "sort"),
        ("type=", "type"),
        ("limit=5", "limit"),  # unknown
        ("pageSize=101", "pageSize"),
        ("pageSize=abc", "pageSize"),
        ("sort=subject", "sort"),
        ("dir=up", "dir"),
        ("type=HEADLESS", "type"),
        ("search=" + "x" * 201, "search"),
    ],
)
def test_it_refuses_bad_list_parameters_naming_them(secret_key, query, field):
    err = error(call("get", f"/v1/templates?{query}", secret_key), 400)
    assert field in err["fields"]


def test_a_nul_in_the_query_is_refused(secret_key):
    assert error(call("get", "/v1/templates?search=%00", secret_key), 400)


# --- get, change ----------------------------------------------------------------------------


def test_it_gets_one_template(secret_key):
    template = make(text="plain")
    data = call("get", f"/v1/templates/{template.pk}", secret_key).json()["data"]
    assert data["id"] == template.pk and data["text"] == "plain" and data["type"] == "marketing"


@pytest.mark.parametrize("suffix", ["", "/usage"])
def test_an_unknown_template_is_a_404(secret_key, suffix):
    for pk in (999999, 2**70):
        err = error(call("get", f"/v1/templates/{pk}{suffix}", secret_key), 404)
        assert err["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("patch", "", {"name": "x"}),
        ("delete", "", None),
        ("post", "/duplicate", None),
        ("post", "/preview", {}),
    ],
)
def test_writes_to_an_unknown_template_are_404s(secret_key, method, suffix, body):
    make()
    before = snapshot()
    assert error(call(method, f"/v1/templates/999999{suffix}", secret_key, body), 404)
    assert snapshot() == before


def test_it_changes_only_the_fields_sent(secret_key):
    template = make(from_email="Shop <shop@example.com>", reply_to="help@example.com")
    response = call(
        "patch",
        f"/v1/templates/{template.pk}",
        secret_key,
        {"name": "Welcome v2", "type": "transactional", "fromName": "New Shop"},
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["name"] == "Welcome v2" and data["type"] == "transactional"
    assert data["from"] == "shop@example.com" and data["fromName"] == "New Shop"
    template.refresh_from_db()
    assert template.subject == "Hi {{ firstName }}" and template.reply_to == "help@example.com"
    assert template.from_email == "New Shop <shop@example.com>"
    cleared = call(
        "patch", f"/v1/templates/{template.pk}", secret_key, {"from": None, "fromName": None}
    )
    assert cleared.json()["data"]["from"] is None
    template.refresh_from_db()
    assert template.from_email == ""


def test_a_rename_keeps_the_workflow_steps_that_use_it(secret_key, template, make_workflow):
    workflow = make_workflow(
        [{"key": "s", "type": "send_email", "config": {"template": "Welcome"}}],
        [{"from": "trigger", "to": "s"}],
    )
    response = call("patch", f"/v1/templates/{template.pk}", secret_key, {"name": "Hello"})
    assert response.status_code == 200
    assert workflow.steps.get().template.name == "Hello"


def test_a_change_is_checked_like_a_create(secret_key):
    template, other = make(), make(name="Other")
    before = snapshot()
    url = f"/v1/templates/{template.pk}"
    err = error(call("patch", url, secret_key, {"subject": "{% if %}"}), 400)
    assert set(err["fields"]) == {"subject"} and "line 1" in err["fields"]["subject"]
    assert error(call("patch", url, secret_key, {"name": other.name}), 409)["code"] == (
        "name_taken"
    )
    assert error(call("patch", url, secret_key, {"type": "headless"}), 400)["fields"]["type"]
    assert error(call("patch", url, secret_key, {"body": None}), 400)["fields"]["body"]
    assert error(call("patch", url, secret_key, {"fromName": "Ann"}), 400)["fields"]["fromName"]
    assert snapshot() == before


# --- delete -------------------------------------------------------------------------------------


def test_it_deletes_an_unused_template(secret_key):
    template = make()
    response = call("delete", f"/v1/templates/{template.pk}", secret_key)
    assert response.status_code == 204 and response.content == b""
    assert not Template.objects.exists()


def test_a_template_a_workflow_uses_is_not_deleted(secret_key, template, make_workflow):
    make_workflow(
        [{"key": "s", "type": "send_email", "config": {"template": "Welcome"}}],
        [{"from": "trigger", "to": "s"}],
        name="Onboarding",
    )
    err = error(call("delete", f"/v1/templates/{template.pk}", secret_key), 409)
    assert err["code"] == "template_in_use" and "'Onboarding'" in err["message"]
    assert Template.objects.filter(pk=template.pk).exists()


# --- duplicate ----------------------------------------------------------------------------------


def test_it_duplicates_under_a_free_name(secret_key):
    template = make(text="plain", type=Template.TRANSACTIONAL, reply_to="r@example.com")
    url = f"/v1/templates/{template.pk}/duplicate"
    first = call("post", url, secret_key)
    assert first.status_code == 201
    copy = first.json()["data"]
    assert copy["name"] == "Welcome (Copy)" and copy["id"] != template.pk
    assert (copy["subject"], copy["body"], copy["text"], copy["type"], copy["replyTo"]) == (
        template.subject,
        template.html,
        "plain",
        "transactional",
        "r@example.com",
    )
    assert call("post", url, secret_key).json()["data"]["name"] == "Welcome (Copy 2)"
    assert call("post", url, secret_key).json()["data"]["name"] == "Welcome (Copy 3)"


def test_a_copy_of_a_long_name_stays_within_the_limit(secret_key):
    template = make(name="n" * 200)
    copy = call("post", f"/v1/templates/{template.pk}/duplicate", secret_key).json()["data"]
    assert len(copy["name"]) == 200 and copy["name"].endswith(" (Copy)")


# --- usage --------------------------------------------------------------------------------------


def test_it_lists_the_workflows_and_steps_that_use_it(secret_key, template, make_workflow):
    flow = make_workflow(
        [
            {"key": "a", "type": "send_email", "name": "First", "config": {"template": "Welcome"}},
            {"key": "b", "type": "send_email", "config": {"template": "Welcome"}},
        ],
        [{"from": "trigger", "to": "a"}, {"from": "a", "to": "b"}],
        name="Onboarding",
    )
    contact, _ = contact_upsert(email="ann@example.com")
    Message.objects.create(
        idempotency_key="k", contact=contact, template=template, to_email=contact.email
    )
    data = call("get", f"/v1/templates/{template.pk}/usage", secret_key).json()["data"]
    steps = {s.key: s.pk for s in flow.steps.all()}
    assert data == {
        "workflowSteps": 2,
        "emailsSent": 1,
        "workflows": [
            {
                "id": flow.pk,
                "name": "Onboarding",
                "enabled": True,
                "steps": [
                    {"id": steps["a"], "key": "a", "name": "First"},
                    {"id": steps["b"], "key": "b", "name": ""},
                ],
            }
        ],
    }
    unused = make(name="Unused")
    assert call("get", f"/v1/templates/{unused.pk}/usage", secret_key).json()["data"] == {
        "workflowSteps": 0,
        "emailsSent": 0,
        "workflows": [],
    }


# --- preview ------------------------------------------------------------------------------------


def test_it_previews_with_sample_data(secret_key):
    template = make(subject="Hi {{ firstName }}", html="<p>{{ firstName }} & {{ plan }}</p>")
    url = f"/v1/templates/{template.pk}/preview"
    data = call("post", url, secret_key, {"data": {"firstName": "<b>Bo</b>"}}).json()["data"]
    assert data["subject"] == "Hi <b>Bo</b>"
    assert data["html"] == "<p>&lt;b&gt;Bo&lt;/b&gt; & </p>"  # escaped in HTML
    assert data["text"]
    default = call("post", url, secret_key, {}).json()["data"]
    assert default["subject"] == "Hi Ada"  # the sample data when none is given


def test_it_previews_for_a_contact_with_the_data_as_event(secret_key):
    contact, _ = contact_upsert(email="ann@example.com", data={"firstName": "Ann"})
    template = make(subject="{{ firstName }} {{ event.order }}", html="<a>{{ unsubscribeUrl }}</a>")
    response = call(
        "post",
        f"/v1/templates/{template.pk}/preview",
        secret_key,
        {"email": "ANN@example.com", "data": {"order": 7}},
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["subject"] == "Ann 7" and "/unsubscribe/" in data["html"]


def test_a_preview_for_an_unknown_contact_is_a_404(secret_key):
    template = make()
    url = f"/v1/templates/{template.pk}/preview"
    err = error(call("post", url, secret_key, {"email": "nobody@example.com"}), 404)
    assert "nobody@example.com" in err["message"] and "email" in err["fields"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"data": [1]}, "data"),
        ({"data": "x"}, "data"),
        ({"email": "nope"}, "email"),
        ({"data": {"k": "\u0000"}}, "data"),
    ],
)
def test_bad_preview_input_is_a_400_naming_it(secret_key, body, field):
    template = make()
    err = error(call("post", f"/v1/templates/{template.pk}/preview", secret_key, body), 400)
    assert field in err["fields"]


def test_a_render_error_is_a_400_with_its_message(secret_key):
    template = make(html="{% for i in (1..100000) %}{{ i }}{% endfor %}")
    err = error(call("post", f"/v1/templates/{template.pk}/preview", secret_key, {}), 400)
    assert err["code"] == "render_error" and "10000" in err["message"]


def test_a_render_is_bounded_in_time(secret_key, settings):
    settings.TEMPLATE_RENDER_TIMEOUT_SECONDS = 0
    template = make(html="{% for i in (1..5000) %}{{ i }}{% endfor %}")
    err = error(call("post", f"/v1/templates/{template.pk}/preview", secret_key, {}), 400)
    assert "longer than" in err["message"]
