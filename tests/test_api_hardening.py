"""Issue 8 at the API's edge: no 500 from any input, consent belongs to the contact, a cap on
contact data, email addresses in one normal form. On PostgreSQL, through the real views; the
behaviour tests run on both implementations of track() (one statement and ORM).

Chunked bodies under real gunicorn: tests/e2e/test_api_chunked.py. Fuzzing: test_track_fuzz.py.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.test import Client, override_settings
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from contacts_app.models import ApiKey, Contact, Event, IdempotencyKey
from contacts_app.parsers import StrictJSONParser
from contacts_app.services import (
    ContactDataTooLarge,
    apikey_create,
    apikey_lookup,
    contact_update_data,
    contact_upsert,
    normalize_email,
)
from tests.conftest import TrackClient, chain, drain
from tests.test_track_api import VALID, assert_error, exit_workflow, ok
from workflows_app import api as track_api
from workflows_app import track as track_mod
from workflows_app.models import Execution
from workflows_app.services import workflow_create

T0 = datetime(2031, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(params=[True, False], ids=["one_statement", "orm"])
def path(request, monkeypatch):
    monkeypatch.setattr(track_api, "track", functools.partial(track_mod.track, fast=request.param))
    return request.param


def stored():
    return {
        "contacts": Contact.objects.count(),
        "events": Event.objects.count(),
        "executions": Execution.objects.count(),
        "idempotency_keys": IdempotencyKey.objects.count(),
    }


def body_with(data_json: str, **fields) -> str:
    """A /v1/track body whose `data` is raw JSON text (for what json.dumps cannot write)."""
    head = json.dumps({**VALID, **fields})[:-1]
    return f'{head}, "data": {data_json}}}'


# --- no 500 from any input: strict JSON ----------------------------------------------------------

REFUSED_NUMBERS = [
    ("huge_exponent", body_with('{"x": 1e400}'), "data"),
    ("nan", body_with('{"x": NaN}'), "data"),
    ("minus_infinity", body_with('{"x": [1, -Infinity]}'), "data"),
    ("infinity", body_with('{"x": Infinity}'), "data"),
    ("float_of_400_digits", body_with('{"x": ' + "9" * 400 + ".5}"), "data"),
    ("int_of_400_digits", body_with('{"x": ' + "7" * 400 + "}"), "data"),
    ("int_of_5000_digits", body_with('{"x": ' + "7" * 5000 + "}"), "data"),
    (
        "subscribed_nan",
        '{"event": "a", "email": "ann@example.com", "subscribed": NaN}',
        "subscribed",
    ),
    ("data_33_levels_deep", body_with('{"a": ' * 33 + "1" + "}" * 33), "data"),
]


@pytest.mark.parametrize(
    ("raw", "field"), [r[1:] for r in REFUSED_NUMBERS], ids=[r[0] for r in REFUSED_NUMBERS]
)
def test_it_refuses_numbers_json_cannot_hold_naming_the_field(track, raw, field):
    exit_workflow("Onboarding")
    error = assert_error(track.post(raw=raw), 400, "invalid_json", field)
    assert "not valid JSON" in error["message"]
    assert stored() == dict.fromkeys(stored(), 0)


@pytest.mark.parametrize(
    "raw",
    ["[" * 100_000, '{"data": ' * 20_000, "[" * 1000 + "]" * 1000, b"\xc3\x28{}", b"{\x00}"],
    ids=["100k_brackets", "20k_objects", "1000_levels_closed", "invalid_utf8", "nul_byte"],
)
def test_it_refuses_deep_or_undecodable_bodies_with_400(track, raw):
    assert_error(track.post(raw=raw), 400, "invalid_json")
    assert stored() == dict.fromkeys(stored(), 0)


def test_it_still_accepts_finite_numbers_of_every_spelling(track, path):
    ok(track.post(raw=body_with('{"a": 1e300, "b": -0.0, "c": 1E+2, "d": ' + "1" * 100 + "}")))
    data = Contact.objects.get().data
    assert float(data["a"]) == 1e300 and data["c"] == 100 and data["d"] == int("1" * 100)


def test_it_refuses_an_idempotency_key_with_nul(track):
    response = track.post(VALID, idempotency_key="a\x00b")
    assert_error(response, 400, "validation_error", "Idempotency-Key")
    assert stored() == dict.fromkeys(stored(), 0)


def test_it_refuses_a_key_that_cannot_be_an_api_key(track):
    response = track.post(VALID, key="sk_\u00e9\udc80")
    assert_error(response, 401, "authentication_failed")


# --- no 500 from any input: GET /v1/contacts/<lookup> ------------------------------------------


@pytest.fixture
def api(secret_key):
    client = Client()
    return lambda path: client.get(path, HTTP_AUTHORIZATION=f"Bearer {secret_key}")


@pytest.mark.parametrize(
    "lookup",
    [
        "%00",
        "ann%00@example.com",
        "%FF%FE",
        "not-a-uuid",
        "12345678-1234-1234-1234-12345678901z",
        "x" * 5000 + "@example.com",
        "a" * 65 + "@example.com",
        "ann@xn--zz.com",
        "%ED%A0%80",  # an encoded lone surrogate
    ],
)
def test_it_answers_a_malformed_contact_lookup_with_400(api, lookup):
    response = api(f"/v1/contacts/{lookup}")
    assert_error(response, 400, "validation_error", "lookup")


def test_it_answers_an_unknown_but_wellformed_lookup_with_404(api):
    assert_error(api("/v1/contacts/0b5f0b8e-6f6e-4d5e-9a0b-1c2d3e4f5a6b"), 404, "not_found")
    assert_error(api("/v1/contacts/nobody@example.com"), 404, "not_found")


# --- the default DRF parser, for every API without a parser of its own --------------------------


class _Echo(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    def post(self, request):
        return Response({"received": request.data})


def _post_to_echo(raw: bytes | str) -> Response:
    request = APIRequestFactory().post("/v1/echo", raw, content_type="application/json")
    response = _Echo.as_view()(request)
    response.render()
    return response


def test_every_api_parses_json_with_the_strict_parser():
    assert [StrictJSONParser] == api_settings.DEFAULT_PARSER_CLASSES
    assert _Echo().get_parsers()[0].__class__ is StrictJSONParser


@pytest.mark.parametrize(
    "raw",
    ['{"x": NaN}', '{"x": -Infinity}', '{"x": 1e400}', "[" * 100_000, "[" * 40 + "]" * 40],
    ids=["nan", "minus_infinity", "huge", "100k_brackets", "40_levels"],
)
def test_the_default_parser_refuses_what_json_cannot_hold_with_400(raw):
    response = _post_to_echo(raw)
    assert response.status_code == 400
    body = json.loads(response.content)
    assert body["success"] is False and body["error"]["code"] == "invalid_json"


def test_the_default_parser_refuses_bad_syntax_and_oversized_bodies():
    assert _post_to_echo('{"x": ').status_code == 400
    assert json.loads(_post_to_echo('{"x": [1, 2.5]}').content) == {"received": {"x": [1, 2.5]}}
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100):
        response = _post_to_echo(json.dumps({"x": "y" * 200}))
    assert response.status_code == 413
    assert json.loads(response.content)["error"]["code"] == "payload_too_large"


# --- consent belongs to the contact ---------------------------------------------------------------


@pytest.fixture
def public(public_key):
    return TrackClient(public_key)


def test_a_public_key_cannot_resubscribe_a_contact_who_unsubscribed(track, public, path):
    exit_workflow("Onboarding")
    ok(track.post({**VALID, "subscribed": False}))
    ok(public.post({**VALID, "subscribed": True, "data": {"plan": "pro"}}))
    contact = Contact.objects.get()
    assert contact.subscribed is False
    # The rest of the call is recorded as usual.
    assert contact.data == {"plan": "pro"}
    assert Event.objects.count() == 2
    assert Execution.objects.count() == 1


def test_a_public_key_may_subscribe_a_new_contact_and_unsubscribe_one(public, path):
    ok(public.post({**VALID, "subscribed": True}))
    ok(public.post({**VALID, "email": "bob@example.com", "subscribed": False}))
    assert dict(Contact.objects.values_list("email", "subscribed")) == {
        "ann@example.com": True,
        "bob@example.com": False,
    }
    ok(public.post({**VALID, "subscribed": False}))
    assert Contact.objects.get(email="ann@example.com").subscribed is False


def test_a_secret_key_may_resubscribe(track, path):
    ok(track.post({**VALID, "subscribed": False}))
    ok(track.post({**VALID, "subscribed": True}))
    assert Contact.objects.get().subscribed is True


@override_settings(PUBLIC_KEY_RATE_LIMIT_PER_MINUTE=3)
def test_public_keys_are_rate_limited_by_default_and_a_keys_own_limit_wins(track, db, path):
    _, default_raw = apikey_create(name="site", kind=ApiKey.PUBLIC)
    _, own_raw = apikey_create(name="busy site", kind=ApiKey.PUBLIC, rate_limit_per_minute=5)
    default, own = TrackClient(default_raw), TrackClient(own_raw)
    with time_machine.travel(T0 + timedelta(seconds=30), tick=False):
        for _ in range(3):
            ok(default.post(VALID))
        response = default.post(VALID)
        assert_error(response, 429, "rate_limited")
        assert response["Retry-After"] == "30"
        for _ in range(5):
            ok(own.post(VALID))
        assert_error(own.post(VALID), 429, "rate_limited")
        for _ in range(5):  # secret keys without a limit are not limited
            ok(track.post(VALID))
    assert Event.objects.count() == 13


# --- a cap on a contact's data -------------------------------------------------------------------

CAP = 400


@pytest.fixture
def capped(settings):
    settings.CONTACT_MAX_DATA_BYTES = CAP


def test_it_refuses_a_call_that_would_push_contact_data_past_the_cap(track, capped, path):
    exit_workflow("Onboarding")
    ok(track.post({**VALID, "data": {"a": "x" * 200}}, idempotency_key="first"))
    before = stored()
    response = track.post({**VALID, "data": {"b": "y" * 200}}, idempotency_key="second")
    error = assert_error(response, 400, "validation_error", "data")
    assert str(CAP) in error["fields"]["data"]
    assert stored() == before  # no contact change, event, execution or key claim
    assert Contact.objects.get().data == {"a": "x" * 200}
    # The key was not burnt, and calls that keep the data under the cap go on.
    ok(track.post({**VALID, "data": {"a": "z" * 250}}, idempotency_key="second"))
    ok(track.post(VALID))


def test_it_refuses_a_new_contact_whose_data_alone_passes_the_cap(track, capped, path):
    response = track.post({**VALID, "data": {"blob": "x" * (CAP + 1)}}, idempotency_key="k")
    assert_error(response, 400, "validation_error", "data")
    assert stored() == dict.fromkeys(stored(), 0)


def test_it_measures_the_cap_in_utf8_bytes_of_the_json_text(track, capped, path):
    # 150 characters of 3 bytes each: 450 bytes of JSON text, over a 400-byte cap.
    assert_error(track.post({**VALID, "data": {"k": "€" * 150}}), 400, "validation_error", "data")
    ok(track.post({**VALID, "data": {"k": "€" * 100}}))


def test_a_refusal_inside_a_callers_transaction_leaves_it_usable(track, capped, pg_only):
    key = apikey_lookup(track.key)[1]
    with transaction.atomic():
        track_mod.track(key=key, payload=track_mod.track_parse({**VALID, "data": {"a": 1}}))
        big = track_mod.track_parse({**VALID, "data": {"b": "y" * CAP}})
        with pytest.raises(track_mod.DataTooLarge):
            track_mod.track(key=key, payload=big, fast=True)
        assert Contact.objects.get().data == {"a": 1}  # the transaction still answers
    assert Event.objects.count() == 1


def test_the_one_statement_refuses_in_one_round_trip_in_autocommit(
    transactional_db, track, capped, django_assert_num_queries, pg_only
):
    ok(track.post({**VALID, "data": {"a": "x" * 200}}))  # warms the key cache and last-used
    before = stored()
    with django_assert_num_queries(1):
        response = track.post({**VALID, "data": {"b": "y" * 200}}, idempotency_key="k")
    assert_error(response, 400, "validation_error", "data")
    assert stored() == before
    with django_assert_num_queries(1):
        ok(track.post({**VALID, "data": {"a": "small"}}, idempotency_key="k"))


def test_contact_writers_refuse_past_the_cap_and_write_nothing(capped, db, monkeypatch):
    contact, _ = contact_upsert(email="ann@example.com", data={"a": "x" * 200})
    with pytest.raises(ContactDataTooLarge):
        contact_upsert(email="ann@example.com", data={"b": "y" * 200})
    with pytest.raises(ContactDataTooLarge):
        contact_upsert(email="bob@example.com", data={"b": "y" * CAP})
    with pytest.raises(ContactDataTooLarge):
        contact_update_data(contact=contact, set={"b": "y" * 200})
    # Removing keys or changing subscribed never grows the data.
    contact_update_data(contact=contact, set={"a": "z"}, subscribed=False)
    monkeypatch.setattr(connection, "vendor", "sqlite")  # the ORM branch (SQLite's)
    with pytest.raises(ContactDataTooLarge):
        contact_update_data(contact=contact, set={"b": "y" * CAP})
    monkeypatch.undo()
    fresh = Contact.objects.get(email="ann@example.com")
    assert (fresh.data, fresh.subscribed) == ({"a": "z"}, False)
    assert not Contact.objects.filter(email="bob@example.com").exists()
    with pytest.raises(Contact.DoesNotExist):
        contact_update_data(contact=Contact(pk=Event().pk), set={"x": 1})


def test_an_update_contact_step_past_the_cap_fails_its_run_with_the_reason(track, capped):
    steps, transitions = chain(
        {"key": "tag", "type": "update_contact", "config": {"set": {"notes": "n" * CAP}}}
    )
    workflow_create(
        name="Tagger",
        trigger_event="user.signup",
        enabled=True,
        graph={"steps": steps, "transitions": transitions},
    )
    ok(track.post({**VALID, "data": {"plan": "pro"}}))
    drain()
    execution = Execution.objects.get()
    assert execution.status == Execution.FAILED
    assert "CONTACT_MAX_DATA_BYTES" in execution.error
    assert Contact.objects.get().data == {"plan": "pro"}


# --- email addresses ------------------------------------------------------------------------------


def test_it_compares_domains_in_their_idna_form(track, path):
    ok(track.post({**VALID, "email": "ANN@İSTANBUL.example"}))
    ok(track.post({**VALID, "email": "ann@i\u0307stanbul.example"}))  # "İ".lower()
    ok(track.post({**VALID, "email": "Ann@MÜNCHEN.de"}))
    ok(track.post({**VALID, "email": "ann@xn--mnchen-3ya.de"}))
    ok(track.post({**VALID, "email": "ann@münchen.DE"}))
    emails = sorted(Contact.objects.values_list("email", flat=True))
    assert emails == ["ann@xn--istanbul-o0e.example", "ann@xn--mnchen-3ya.de"]
    assert all(e.isascii() for e in emails)  # no stray combining character
    assert Event.objects.count() == 5


@pytest.mark.parametrize(
    "email",
    ["a" * 65 + "@example.com", "ann@xn--zz.com", "ann@\u0301x.com", "ann@exa mple.com"],
    ids=["local_part_65", "bad_a_label", "leading_combining_mark", "space_in_domain"],
)
def test_it_refuses_an_address_without_a_valid_form(track, email, path):
    error = assert_error(track.post({**VALID, "email": email}), 400, "validation_error", "email")
    assert error["fields"]["email"]
    assert stored() == dict.fromkeys(stored(), 0)


def test_it_accepts_a_local_part_of_64_characters(track, path):
    ok(track.post({**VALID, "email": "a" * 64 + "@example.com"}))


def test_every_path_agrees_on_the_normal_form(track, secret_key):
    created = ok(track.post({**VALID, "email": "Ann@MÜNCHEN.de"}))
    response = Client().get(
        "/v1/contacts/ANN@münchen.de", HTTP_AUTHORIZATION=f"Bearer {secret_key}"
    )
    assert response.status_code == 200
    assert response.json()["data"]["id"] == created["contact"]
    assert contact_upsert(email="ann@XN--MNCHEN-3YA.DE")[1] is False
    assert normalize_email(" Ann@MÜNCHEN.de ") == "ann@xn--mnchen-3ya.de"
    # The model itself (admin, shell) stores the same form and refuses what track refuses.
    other = Contact(email="Bob@MÜNCHEN.de")
    other.full_clean()
    other.save()
    assert Contact.objects.filter(email="bob@xn--mnchen-3ya.de").exists()
    with pytest.raises(ValidationError) as refused:
        Contact(email="a" * 65 + "@example.com").full_clean()
    assert "email" in refused.value.message_dict


def test_the_admin_refuses_an_invalid_idna_domain_with_a_form_error(db):
    user = User.objects.create_superuser("root", "root@example.com", "pw-not-used-here")
    client = Client()
    client.force_login(user)
    url = "/admin/contacts_app/contact/add/"
    form = {"subscribed": "on", "data": "{}", "events-TOTAL_FORMS": 0, "events-INITIAL_FORMS": 0}
    response = client.post(url, {**form, "email": "ann@xn--zz.com"})
    assert response.status_code == 200
    assert "internationalised domain name" in response.content.decode()
    response = client.post(url, {**form, "email": "Ann@MÜNCHEN.de"})
    assert response.status_code == 302
    assert Contact.objects.get().email == "ann@xn--mnchen-3ya.de"
