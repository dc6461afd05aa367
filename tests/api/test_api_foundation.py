"""What every API endpoint shares: the error envelope, the per-key rate limit and its headers,
CORS for /v1/track only, and the API's own description and reference page."""

import json

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from contacts_app.models import ApiKey, Contact, Event
from contacts_app.services import apikey_create

pytestmark = pytest.mark.django_db


def call(method, path, key=None, body=None, **headers):
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
    if key:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    client = Client()
    if body is None:
        return getattr(client, method)(path, **extra)
    return getattr(client, method)(
        path, data=json.dumps(body), content_type="application/json", **extra
    )


def test_errors_carry_plunks_fields_next_to_ours(secret_key):
    response = call("post", "/v1/track", secret_key, {"event": "", "email": "nope"})
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False and body["timestamp"]
    error = body["error"]
    assert error["statusCode"] == 400 and error["code"] == "validation_error"
    # The same faults twice: ours by field, Plunk's as a list.
    assert set(error["fields"]) == {e["field"] for e in error["errors"]} >= {"event", "email"}
    assert all(e["message"] and e["code"] for e in error["errors"])


def test_a_missing_or_wrong_key_is_a_401_in_the_envelope():
    missing = call("get", "/v1/contacts/ann@example.com")
    assert missing.status_code == 401
    assert missing.json()["error"]["statusCode"] == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    wrong = call("get", "/v1/contacts/ann@example.com", "sk_not_a_key")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "authentication_failed"


def test_a_public_key_is_refused_everywhere_but_track(public_key):
    response = call("get", "/v1/contacts/ann@example.com", public_key)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    tracked = call("post", "/v1/track", public_key, {"event": "a", "email": "a@example.com"})
    assert tracked.status_code == 200


def test_an_unknown_api_path_is_a_json_404(secret_key):
    response = call("get", "/v1/no-such-thing", secret_key)
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "not_found",
        "message": "No such API endpoint.",
        "statusCode": 404,
    }


@pytest.fixture
def limited_key(db):
    key, raw = apikey_create(name="limited", kind=ApiKey.SECRET, rate_limit_per_minute=3)
    return raw


def test_every_endpoint_counts_against_the_keys_limit_with_headers(limited_key):
    first = call("get", "/v1/contacts/ann@example.com", limited_key)
    assert first.status_code == 404
    assert first["RateLimit-Limit"] == "3"
    assert first["RateLimit-Remaining"] == "2"
    assert 1 <= int(first["RateLimit-Reset"]) <= 60
    # /v1/track shares the key's window.
    tracked = call("post", "/v1/track", limited_key, {"event": "a", "email": "ann@example.com"})
    assert tracked.status_code == 200 and tracked["RateLimit-Remaining"] == "1"
    assert call("get", "/v1/contacts/ann@example.com", limited_key)["RateLimit-Remaining"] == "0"

    refused = call("get", "/v1/contacts/ann@example.com", limited_key)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused["Retry-After"] == refused["RateLimit-Reset"]
    assert refused["RateLimit-Remaining"] == "0"
    events = Event.objects.count()
    again = call("post", "/v1/track", limited_key, {"event": "b", "email": "bob@example.com"})
    assert again.status_code == 429 and "Retry-After" in again
    assert Event.objects.count() == events  # refused: nothing recorded
    assert not Contact.objects.filter(email="bob@example.com").exists()


def test_secret_keys_without_a_limit_of_their_own_take_the_setting(settings, secret_key):
    settings.SECRET_KEY_RATE_LIMIT_PER_MINUTE = 1
    assert call("get", "/v1/contacts/ann@example.com", secret_key)["RateLimit-Limit"] == "1"
    assert call("get", "/v1/contacts/ann@example.com", secret_key).status_code == 429
    settings.SECRET_KEY_RATE_LIMIT_PER_MINUTE = 0
    unlimited = call("get", "/v1/contacts/ann@example.com", secret_key)
    assert unlimited.status_code == 404 and "RateLimit-Limit" not in unlimited


ORIGIN = "https://www.example.com"


def test_browsers_may_call_track_from_the_configured_origins(settings, public_key):
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]
    preflight = call(
        "options",
        "/v1/track",
        Origin=ORIGIN,
        **{
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight["Access-Control-Allow-Origin"] == ORIGIN
    assert "authorization" in preflight["Access-Control-Allow-Headers"]
    posted = call(
        "post", "/v1/track", public_key, {"event": "a", "email": "a@example.com"}, Origin=ORIGIN
    )
    assert posted.status_code == 200 and posted["Access-Control-Allow-Origin"] == ORIGIN


def test_no_cors_for_other_origins_or_other_endpoints(settings, public_key, secret_key):
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]
    elsewhere = call(
        "post",
        "/v1/track",
        public_key,
        {"event": "a", "email": "a@example.com"},
        Origin="https://evil.example",
    )
    assert "Access-Control-Allow-Origin" not in elsewhere
    contacts = call("get", "/v1/contacts/a@example.com", secret_key, Origin=ORIGIN)
    assert "Access-Control-Allow-Origin" not in contacts


def test_the_api_describes_itself_in_openapi_3():
    response = Client().get("/v1/openapi.json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert "/v1/track" in schema["paths"]
    track = schema["paths"]["/v1/track"]["post"]
    assert {"200", "400", "401", "403", "429"} <= set(track["responses"])
    assert track["requestBody"]["content"]["application/json"]["examples"]
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"


def test_the_reference_page_is_served_by_the_app_without_a_cdn():
    page = Client().get("/v1/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/v1/openapi.json" in html
    assert "cdn." not in html and "unpkg" not in html and "jsdelivr" not in html
    scripts = [part.split('"')[0] for part in html.split('src="')[1:]]
    assert scripts and all(src.startswith("/static/") for src in scripts)
    for src in scripts:  # installed with the app (drf-spectacular-sidecar), collected by make run
        assert finders.find(src.removeprefix("/static/")), src


def test_an_unknown_host_on_an_api_path_is_a_json_400(settings, secret_key):
    settings.ALLOWED_HOSTS = ["api.example.com"]
    response = Client().get(
        "/v1/contacts", HTTP_HOST="evil.example", HTTP_AUTHORIZATION=f"Bearer {secret_key}"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert response.json()["error"]["statusCode"] == 400
    page = Client().get("/admin/", HTTP_HOST="evil.example")
    assert page.status_code == 400 and page["Content-Type"].startswith("text/html")


def test_every_operation_is_described_with_examples_and_its_errors():
    schema = json.loads(Client().get("/v1/openapi.json").content)
    operations = [
        (method, path, op) for path, ops in schema["paths"].items() for method, op in ops.items()
    ]
    assert len(operations) >= 45
    for method, path, op in operations:
        where = f"{method.upper()} {path}"
        assert op.get("summary"), where
        responses = op["responses"]
        assert {"401", "403", "429"} <= set(responses), where
        success = [code for code in responses if code.startswith("2")]
        assert success, where
        examples = [
            content
            for code, response in responses.items()
            for content in response.get("content", {}).values()
            if "examples" in content
        ] + [
            content
            for content in op.get("requestBody", {}).get("content", {}).values()
            if "examples" in content
        ]
        assert examples, where
        # A success that has a body shows an example of it (a 204 has none to show).
        with_body = [code for code in success if responses[code].get("content")]
        assert with_body or success == ["204"], where
        assert not with_body or any(
            "examples" in content
            for code in with_body
            for content in responses[code]["content"].values()
        ), where
