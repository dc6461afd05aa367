"""The contacts API (issue 10, item 2): list with cursor paging, get, upsert, patch, the privacy
erase, lookup and the data-field overview; every refusal names its field and records nothing."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from django.core import signing
from django.db import connection
from django.db.models import QuerySet
from django.test import Client

from contacts_app import services
from contacts_app.api import Cursor
from contacts_app.models import Contact, Event
from contacts_app.services import contact_upsert
from tests.conftest import chain
from tests.test_track_api import assert_error
from workflows_app import engine
from workflows_app.models import Execution
from workflows_app.track import track_internal

pytestmark = pytest.mark.django_db

T0 = datetime(2031, 3, 1, 12, 0, 0, tzinfo=UTC)


def call(method, path, key, body=None, *, raw=None, content_type="application/json"):
    extra = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    client = Client()
    if body is None and raw is None:
        return getattr(client, method)(path, **extra)
    data = raw if raw is not None else json.dumps(body)
    return getattr(client, method)(path, data=data, content_type=content_type, **extra)


@pytest.fixture
def api(secret_key):
    def request(method, path, body=None, **kwargs):
        return call(method, path, secret_key, body, **kwargs)

    return request


def make(email, *, at=None, subscribed=True, **data):
    contact, _ = contact_upsert(email=email, subscribed=subscribed, data=data)
    if at is not None:
        Contact.objects.filter(pk=contact.pk).update(created_at=at)
        contact.refresh_from_db()
    return contact


def stored():
    """Everything a refused write must leave as it was."""
    return {
        "contacts": sorted(
            Contact.objects.values_list("email", "subscribed", "data", "updated_at")
        ),
        "events": Event.objects.count(),
    }


def ok(response, status=200):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is True
    return body


def assert_contact(item, contact):
    contact.refresh_from_db()
    assert set(item) == {"id", "email", "subscribed", "data", "createdAt", "updatedAt"}
    assert item["id"] == str(contact.pk)
    assert item["email"] == contact.email
    assert item["subscribed"] == contact.subscribed
    assert item["data"] == contact.data
    assert datetime.fromisoformat(item["createdAt"]) == contact.created_at


# --- every endpoint: keys ------------------------------------------------------------------------

ENDPOINTS = [
    ("get", "/v1/contacts", None),
    ("post", "/v1/contacts", {"email": "new@example.com", "data": {"a": 1}}),
    ("get", "/v1/contacts/ann@example.com", None),
    ("patch", "/v1/contacts/ann@example.com", {"subscribed": False}),
    ("delete", "/v1/contacts/ann@example.com", None),
    ("post", "/v1/contacts/lookup", {"emails": ["ann@example.com"]}),
    ("get", "/v1/contacts/fields", None),
    ("get", "/v1/contacts/fields/plan/values", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_every_endpoint_needs_a_secret_key(method, path, body, public_key):
    make("ann@example.com", plan="pro")
    before = stored()
    missing = call(method, path, None, body)
    assert_error(missing, 401, "authentication_required")
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert_error(call(method, path, "sk_not_a_key", body), 401, "authentication_failed")
    assert_error(call(method, path, public_key, body), 403, "permission_denied")
    assert stored() == before


# --- GET /v1/contacts ----------------------------------------------------------------------------


def walk(api, query, *, limit):
    """Every page of a listing; returns the ids in order and the pages."""
    ids, pages, cursor = [], [], None
    for _ in range(100):
        url = f"/v1/contacts?limit={limit}&{query}" + (f"&cursor={quote(cursor)}" if cursor else "")
        page = ok(api("get", url))
        assert set(page) == {"success", "data", "total", "cursor", "hasMore"}
        assert len(page["data"]) <= limit
        pages.append(page)
        ids += [item["id"] for item in page["data"]]
        cursor = page["cursor"]
        assert page["hasMore"] is (cursor is not None)
        if not page["hasMore"]:
            return ids, pages
    raise AssertionError("paging never ended")


def test_it_lists_newest_first_with_the_default_limit(api):
    contacts = [make(f"c{i:02}@example.com", at=T0 + timedelta(minutes=i)) for i in range(25)]
    page = ok(api("get", "/v1/contacts"))
    assert page["total"] == 25 and page["hasMore"] is True and page["cursor"]
    assert len(page["data"]) == 20
    assert [item["email"] for item in page["data"]] == [c.email for c in contacts[::-1][:20]]
    assert_contact(page["data"][0], contacts[-1])
    rest = ok(api("get", f"/v1/contacts?cursor={quote(page['cursor'])}"))
    assert [item["email"] for item in rest["data"]] == [c.email for c in contacts[4::-1]]
    assert rest["hasMore"] is False and rest["cursor"] is None and rest["total"] == 25


def test_it_pages_through_ties_without_skipping_or_repeating(api):
    # Eight contacts created at the same instant, and two around them: ids break the tie.
    tied = [make(f"t{i}@example.com", at=T0) for i in range(8)]
    older = make("old@example.com", at=T0 - timedelta(days=1))
    newer = make("new@example.com", at=T0 + timedelta(days=1))
    for direction, limit in [("desc", 3), ("asc", 3), ("desc", 1), ("asc", 7)]:
        ids, _ = walk(api, f"sort=createdAt&dir={direction}", limit=limit)
        middle = sorted((str(c.pk) for c in tied), key=lambda i: i.replace("-", ""))
        if direction == "desc":
            assert ids == [str(newer.pk), *middle[::-1], str(older.pk)]
        else:
            assert ids == [str(older.pk), *middle, str(newer.pk)]


def test_it_sorts_by_email_and_filters(api):
    make("Bob@Example.com", subscribed=False)
    make("ann@example.com")
    make("carl@other.org")
    make("dora@EXAMPLE.com", subscribed=False)
    ids, pages = walk(api, "sort=email", limit=2)
    assert [i["email"] for p in pages for i in p["data"]] == [
        "ann@example.com",
        "bob@example.com",
        "carl@other.org",
        "dora@example.com",
    ]
    _, pages = walk(api, "sort=email&dir=desc", limit=3)
    assert [i["email"] for p in pages for i in p["data"]][0] == "dora@example.com"

    found = ok(api("get", "/v1/contacts?search=EXAMPLE.C&sort=email"))
    assert [i["email"] for i in found["data"]] == [
        "ann@example.com",
        "bob@example.com",
        "dora@example.com",
    ]
    assert found["total"] == 3
    unsubscribed = ok(api("get", "/v1/contacts?search=example&subscribed=false&sort=email"))
    assert [i["email"] for i in unsubscribed["data"]] == ["bob@example.com", "dora@example.com"]
    assert unsubscribed["total"] == 2
    subscribed = ok(api("get", "/v1/contacts?subscribed=TRUE"))
    assert {i["email"] for i in subscribed["data"]} == {"ann@example.com", "carl@other.org"}
    # LIKE wildcards are literal.
    assert ok(api("get", "/v1/contacts?search=%25"))["total"] == 0
    assert ok(api("get", "/v1/contacts?search=_"))["total"] == 0


def test_a_filtered_walk_keeps_its_filter_and_total(api):
    for i in range(7):
        make(f"x{i}@example.com", subscribed=i % 2 == 0)
    ids, pages = walk(api, "subscribed=true&sort=email", limit=2)
    assert len(ids) == len(set(ids)) == 4
    assert {p["total"] for p in pages} == {4}


def test_an_empty_list_is_an_empty_page(api):
    assert ok(api("get", "/v1/contacts")) == {
        "success": True,
        "data": [],
        "total": 0,
        "cursor": None,
        "hasMore": False,
    }


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=1e2", "limit"),
        ("sort=name", "sort"),
        ("sort=created_at", "sort"),
        ("dir=up", "dir"),
        ("subscribed=yes", "subscribed"),
        ("subscribed=1", "subscribed"),
        ("search=" + "a" * 255, "search"),
        ("cursor=garbage", "cursor"),
        ("cursor=" + "x" * 600, "cursor"),
        ("cursor=%ED%A0%80", "cursor"),
    ],
)
def test_it_refuses_bad_list_parameters(api, query, field):
    make("ann@example.com")
    assert_error(api("get", f"/v1/contacts?{query}"), 400, "validation_error", field)


def test_a_cursor_is_tamper_proof_and_bound_to_its_order(api):
    for i in range(3):
        make(f"c{i}@example.com", at=T0 + timedelta(minutes=i))
    cursor = ok(api("get", "/v1/contacts?limit=1"))["cursor"]
    value, _, signature = cursor.rpartition(":")
    forged = f"{value}:{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    assert_error(
        api("get", f"/v1/contacts?cursor={quote(forged)}"), 400, "validation_error", "cursor"
    )
    # Well signed by someone else (another salt): refused too.
    other = signing.dumps(["createdAt", "desc", T0.isoformat(), "x"], salt="elsewhere")
    assert_error(
        api("get", f"/v1/contacts?cursor={quote(other)}"), 400, "validation_error", "cursor"
    )
    # Signed by us but not a position: refused, not a 500.
    junk = signing.dumps({"a": 1}, salt=Cursor.SALT)
    assert_error(
        api("get", f"/v1/contacts?cursor={quote(junk)}"), 400, "validation_error", "cursor"
    )
    # Made for newest-first: not valid for another order.
    for query in ("dir=asc", "sort=email", "sort=email&dir=desc"):
        response = api("get", f"/v1/contacts?{query}&cursor={quote(cursor)}")
        error = assert_error(response, 400, "validation_error", "cursor")
        assert "createdAt desc" in error["fields"]["cursor"]
    assert ok(api("get", f"/v1/contacts?dir=desc&cursor={quote(cursor)}"))["data"]


def test_a_nul_in_the_search_is_refused_by_the_middleware(api):
    assert_error(api("get", "/v1/contacts?search=a%00b"), 400, "invalid_query")


# --- GET /v1/contacts/<id or email> --------------------------------------------------------------


def test_it_gets_a_contact_by_id_or_email(api):
    ann = make("ann@example.com", plan="pro")
    by_id = ok(api("get", f"/v1/contacts/{ann.pk}"))["data"]
    assert_contact(by_id, ann)
    assert ok(api("get", "/v1/contacts/ANN@Example.com"))["data"] == by_id
    assert_error(api("get", "/v1/contacts/bob@example.com"), 404, "not_found")
    assert_error(api("get", "/v1/contacts/not-an-address"), 400, "validation_error", "lookup")


# --- POST /v1/contacts ---------------------------------------------------------------------------


def test_it_creates_a_contact_with_201(api):
    response = api(
        "post",
        "/v1/contacts",
        {"email": " Ann@Example.COM ", "data": {"plan": "pro", "email": "x", "plunk_id": 1}},
    )
    body = ok(response, 201)
    ann = Contact.objects.get()
    assert ann.email == "ann@example.com" and ann.subscribed is True
    assert ann.data == {"plan": "pro"}  # reserved keys dropped
    meta = body["data"].pop("_meta")
    assert meta == {"isNew": True, "isUpdate": False}
    assert_contact(body["data"], ann)
    assert not Event.objects.exists()  # a new contact is no subscription flip


def test_it_merges_into_an_existing_contact_with_200(api):
    ann = make("ann@example.com", plan="free", name="Ann", city="Oslo")
    body = ok(
        api(
            "post",
            "/v1/contacts",
            {"email": "ann@example.com", "data": {"plan": "pro", "name": "", "city": None}},
        )
    )
    assert body["data"]["_meta"] == {"isNew": False, "isUpdate": True}
    ann.refresh_from_db()
    assert ann.data == {"plan": "pro", "name": "Ann"}  # "" ignored, null deletes
    assert ann.subscribed is True
    assert not Event.objects.exists()


def test_an_upsert_that_flips_the_subscription_records_the_event(api, make_workflow):
    # A workflow on the system event starts: the flip goes through the same recorder.
    steps, transitions = chain({"key": "bye", "type": "exit", "config": {"reason": "left"}})
    flow = make_workflow(steps, transitions, trigger="contact.unsubscribed")
    ann = make("ann@example.com")
    ok(api("post", "/v1/contacts", {"email": "ann@example.com", "subscribed": False}))
    assert list(Event.objects.values_list("name", flat=True)) == ["contact.unsubscribed"]
    assert Execution.objects.filter(workflow=flow, contact=ann).count() == 1
    # Saying what already is records nothing more.
    ok(api("post", "/v1/contacts", {"email": "ann@example.com", "subscribed": False}))
    ok(api("post", "/v1/contacts", {"email": "ann@example.com", "subscribed": True}))
    assert list(Event.objects.order_by("created_at").values_list("name", flat=True)) == [
        "contact.unsubscribed",
        "contact.subscribed",
    ]


def test_a_new_contact_may_start_unsubscribed_and_null_means_not_given(api):
    ok(api("post", "/v1/contacts", {"email": "bob@example.com", "subscribed": False}), 201)
    assert Contact.objects.get().subscribed is False
    ok(api("post", "/v1/contacts", {"email": "bob@example.com", "subscribed": None, "data": None}))
    assert Contact.objects.get().subscribed is False


BAD_BODIES = [
    ("missing_email", {"data": {}}, "email"),
    ("email_not_a_string", {"email": 42}, "email"),
    ("email_list", {"email": ["a@example.com"]}, "email"),
    ("email_empty", {"email": "  "}, "email"),
    ("email_nul", {"email": "ann\x00@example.com"}, "email"),
    ("email_overlong", {"email": "a" * 5000 + "@example.com"}, "email"),
    ("email_local_part_65", {"email": "a" * 65 + "@example.com"}, "email"),
    ("email_not_an_address", {"email": "ann"}, "email"),
    ("data_list", {"email": "ann@example.com", "data": [1]}, "data"),
    ("data_string", {"email": "ann@example.com", "data": "x"}, "data"),
    ("data_nul_value", {"email": "ann@example.com", "data": {"a": "x\x00"}}, "data"),
    ("data_nul_key", {"email": "ann@example.com", "data": {"a\x00": 1}}, "data"),
    ("data_surrogate", {"email": "ann@example.com", "data": {"a": "\udc80"}}, "data"),
    ("data_too_deep", {"email": "ann@example.com", "data": {"a": [[[[[[[[[1]]]]]]]]]}}, "data"),
    ("subscribed_string", {"email": "ann@example.com", "subscribed": "true"}, "subscribed"),
    ("subscribed_number", {"email": "ann@example.com", "subscribed": 1}, "subscribed"),
    ("unknown_field", {"email": "ann@example.com", "name": "Ann"}, "name"),
    ("body_list", [{"email": "ann@example.com"}], "body"),
    ("body_string", "ann@example.com", "body"),
]


@pytest.mark.parametrize(
    ("body", "field"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
def test_an_upsert_refuses_bad_input_and_records_nothing(api, body, field):
    make("ann@example.com", plan="free")
    before = stored()
    response = api("post", "/v1/contacts", raw=json.dumps(body))
    assert_error(response, 400, "validation_error", field)
    assert stored() == before


def test_unknown_fields_are_named_each(api):
    error = assert_error(
        api("post", "/v1/contacts", {"email": "a@example.com", "x": 1, "y": 2}),
        400,
        "validation_error",
    )
    assert set(error["fields"]) == {"x", "y"}
    assert not Contact.objects.exists()


def test_data_over_the_cap_is_refused_naming_data(api, settings):
    settings.CONTACT_MAX_DATA_BYTES = 200
    ann = make("ann@example.com", note="x" * 120)
    before = stored()
    # Too large by itself: refused before any write.
    error = assert_error(
        api("post", "/v1/contacts", {"email": "bob@example.com", "data": {"n": "y" * 300}}),
        400,
        "validation_error",
        "data",
    )
    assert "200 bytes" in error["fields"]["data"]
    # Fits alone, not merged into what the contact has: the service refuses it.
    body = {"email": "ann@example.com", "data": {"more": "z" * 120}, "subscribed": False}
    error = assert_error(api("post", "/v1/contacts", body), 400, "validation_error", "data")
    assert "CONTACT_MAX_DATA_BYTES" in error["fields"]["data"]
    assert_error(
        api("patch", f"/v1/contacts/{ann.pk}", {"data": {"more": "z" * 120}}),
        400,
        "validation_error",
        "data",
    )
    assert stored() == before


def test_bodies_that_are_not_json_are_refused(api):
    assert_error(api("post", "/v1/contacts", raw="{nope"), 400, "invalid_json")
    assert_error(api("post", "/v1/contacts", raw='{"email": NaN}'), 400, "invalid_json")
    response = api("post", "/v1/contacts", raw="email=a@example.com", content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")
    huge = json.dumps({"email": "a@example.com", "data": {"x": "y" * 3_000_000}})
    assert_error(api("post", "/v1/contacts", raw=huge), 413, "payload_too_large")
    assert not Contact.objects.exists()


# --- PATCH /v1/contacts/<id or email> ------------------------------------------------------------


def test_a_patch_merges_data_and_flips_the_subscription(api):
    ann = make("ann@example.com", plan="free", city="Oslo")
    body = ok(
        api(
            "patch",
            f"/v1/contacts/{ann.pk}",
            {"data": {"plan": "pro", "city": None}, "subscribed": False},
        )
    )
    assert_contact(body["data"], ann)
    assert ann.data == {"plan": "pro"} and ann.subscribed is False
    assert list(Event.objects.values_list("name", flat=True)) == ["contact.unsubscribed"]


def test_a_patch_with_null_data_wipes_it(api):
    ann = make("ann@example.com", plan="free", city="Oslo")
    body = ok(api("patch", "/v1/contacts/ann@example.com", {"data": None, "subscribed": False}))
    ann.refresh_from_db()
    assert ann.data == {} and body["data"]["data"] == {}
    assert ann.subscribed is False
    assert Event.objects.filter(name="contact.unsubscribed").count() == 1


def test_a_patch_changes_the_email(api):
    ann = make("ann@example.com", plan="free")
    body = ok(
        api("patch", "/v1/contacts/ann@example.com", {"email": "ANN@New.org", "data": {"x": 1}})
    )
    ann.refresh_from_db()
    assert ann.email == "ann@new.org" and body["data"]["email"] == "ann@new.org"
    assert ann.data == {"plan": "free", "x": 1}
    assert_error(api("get", "/v1/contacts/ann@example.com"), 404, "not_found")
    # Its own address in another spelling is no conflict.
    assert ok(api("patch", f"/v1/contacts/{ann.pk}", {"email": "Ann@NEW.org"}))
    assert not Event.objects.exists()


def test_a_move_leaves_the_data_alone(api, settings):
    ann = make("ann@example.com", note="x" * 300, plan="free")
    settings.CONTACT_MAX_DATA_BYTES = 100  # lowered since: only growing the data is refused
    body = ok(api("patch", f"/v1/contacts/{ann.pk}", {"email": "ann@new.org"}))
    assert body["data"]["data"] == {"note": "x" * 300, "plan": "free"}
    assert Contact.objects.get().email == "ann@new.org"


def test_a_patch_to_another_contacts_email_is_a_409(api):
    ann = make("ann@example.com", plan="free")
    make("bob@example.com")
    before = stored()
    response = api(
        "patch",
        f"/v1/contacts/{ann.pk}",
        {"email": "Bob@example.com", "data": {"plan": "pro"}, "subscribed": False},
    )
    error = assert_error(response, 409, "email_taken", "email")
    assert "bob@example.com" in error["message"]
    assert stored() == before


def test_concurrent_moves_to_one_email_leave_one_contact_with_it(transactional_db, secret_key):
    # Each request passes the "is it taken?" check before any commits; the unique index
    # decides, and the losers get a 409, never a 500.
    contacts = [make(f"c{i}@example.com") for i in range(4)]
    barrier = threading.Barrier(len(contacts))
    statuses: list[int] = []

    def move(contact):
        try:
            barrier.wait()
            body = {"email": "taken@example.com"}
            statuses.append(
                call("patch", f"/v1/contacts/{contact.pk}", secret_key, body).status_code
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=move, args=(c,)) for c in contacts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 409, 409, 409]
    assert Contact.objects.filter(email="taken@example.com").count() == 1
    assert Contact.objects.count() == 4


def test_a_move_that_loses_the_race_to_the_unique_index_is_a_409(api, monkeypatch):
    # As if bob@ had been taken between the check and the write: the check misses it once.
    ann = make("ann@example.com", plan="free")
    make("bob@example.com")
    before = stored()
    checks = []
    real_exists = QuerySet.exists

    def exists_misses_once(self):
        checks.append(1)
        return False if len(checks) == 1 else real_exists(self)

    monkeypatch.setattr(QuerySet, "exists", exists_misses_once)
    response = api("patch", f"/v1/contacts/{ann.pk}", {"email": "bob@example.com"})
    assert_error(response, 409, "email_taken", "email")
    assert len(checks) == 2
    assert stored() == before


def test_an_empty_patch_changes_nothing(api):
    ann = make("ann@example.com", plan="free")
    before = stored()
    assert_contact(ok(api("patch", f"/v1/contacts/{ann.pk}", {}))["data"], ann)
    assert stored() == before


PATCH_BAD = [
    ("email_nul", {"email": "a\x00@example.com"}, "email"),
    ("email_null", {"email": None}, "email"),
    ("email_number", {"email": 7}, "email"),
    ("data_list", {"data": ["a"]}, "data"),
    ("data_number", {"data": 3}, "data"),
    ("subscribed_null", {"subscribed": None}, "subscribed"),
    ("subscribed_string", {"subscribed": "false"}, "subscribed"),
    ("unknown_field", {"tags": ["a"]}, "tags"),
    ("body_list", [], "body"),
]


@pytest.mark.parametrize(
    ("body", "field"), [b[1:] for b in PATCH_BAD], ids=[b[0] for b in PATCH_BAD]
)
def test_a_patch_refuses_bad_input_and_records_nothing(api, body, field):
    ann = make("ann@example.com", plan="free")
    before = stored()
    response = api("patch", f"/v1/contacts/{ann.pk}", raw=json.dumps(body))
    assert_error(response, 400, "validation_error", field)
    assert stored() == before


def test_a_patch_of_no_contact_is_a_404_or_400(api):
    assert_error(
        api("patch", "/v1/contacts/bob@example.com", {"subscribed": False}), 404, "not_found"
    )
    assert_error(
        api("patch", "/v1/contacts/0b5f0b8e-6f6e-4d5e-9a0b-1c2d3e4f5a6b", {"subscribed": False}),
        404,
        "not_found",
    )
    assert_error(
        api("patch", "/v1/contacts/nope", {"subscribed": False}), 400, "validation_error", "lookup"
    )
    assert_error(
        api("patch", "/v1/contacts/a%00@example.com", {}), 400, "validation_error", "lookup"
    )
    assert not Contact.objects.exists()


# --- DELETE /v1/contacts/<id or email> -----------------------------------------------------------


def test_delete_erases_the_contact_and_cancels_its_runs_first(api, make_workflow, monkeypatch):
    steps, transitions = chain(
        {"key": "wait", "type": "delay", "config": {"amount": 2, "unit": "days"}}
    )
    make_workflow(steps, transitions, trigger="user.signup")
    ann = make("ann@example.com", plan="pro")
    bob = make("bob@example.com")
    track_internal(contact_id=ann.pk, name="user.signup", data={})
    assert Execution.objects.get(contact=ann).status in Execution.ACTIVE
    cancelled: list[tuple[str, int]] = []
    original = engine.executions_cancel_for_contact

    def spy(**kwargs):
        count = original(**kwargs)
        cancelled.append((kwargs["by"], count))
        return count

    monkeypatch.setattr(engine, "executions_cancel_for_contact", spy)

    response = api("delete", "/v1/contacts/Ann@example.com")
    assert response.status_code == 204 and response.content == b""
    # The run was cancelled (by this key) before the contact went.
    assert len(cancelled) == 1
    by, count = cancelled[0]
    assert by.startswith("API key #") and count == 1
    assert not Contact.objects.filter(pk=ann.pk).exists()
    assert not Event.objects.filter(contact_id=ann.pk).exists()
    assert not Execution.objects.exists()
    assert Contact.objects.get() == bob
    assert_error(api("delete", f"/v1/contacts/{ann.pk}"), 404, "not_found")
    assert_error(api("delete", "/v1/contacts/%FF"), 400, "validation_error", "lookup")


# --- POST /v1/contacts/lookup --------------------------------------------------------------------


def test_lookup_splits_found_and_not_found(api):
    ann = make("ann@example.com", plan="pro")
    bob = make("bob@example.com")
    body = ok(
        api(
            "post",
            "/v1/contacts/lookup",
            {
                "emails": [
                    "BOB@example.com",
                    "nobody@example.com",
                    "ann@example.com",
                    "bob@example.com",
                ]
            },
        )
    )
    assert set(body["data"]) == {"found", "notFound"}
    found = body["data"]["found"]
    assert [item["email"] for item in found] == ["bob@example.com", "ann@example.com"]
    assert_contact(found[1], ann)
    assert_contact(found[0], bob)
    assert body["data"]["notFound"] == ["nobody@example.com"]


def test_lookup_takes_500_addresses(api):
    make("a0@example.com")
    emails = [f"a{i}@example.com" for i in range(500)]
    body = ok(api("post", "/v1/contacts/lookup", {"emails": emails}))
    assert len(body["data"]["found"]) == 1 and len(body["data"]["notFound"]) == 499


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "emails"),
        ({"emails": []}, "emails"),
        ({"emails": None}, "emails"),
        ({"emails": "ann@example.com"}, "emails"),
        ({"emails": {"a": "ann@example.com"}}, "emails"),
        ({"emails": [f"a{i}@example.com" for i in range(501)]}, "emails"),
        ({"emails": ["ann@example.com", "nope"]}, "emails.1"),
        ({"emails": [42]}, "emails.0"),
        ({"emails": ["ok@example.com", "ok2@example.com", "a\x00@example.com"]}, "emails.2"),
        ({"emails": ["a" * 300 + "@example.com"]}, "emails.0"),
        ({"emails": ["ann@example.com"], "limit": 3}, "limit"),
        ([], "body"),
    ],
)
def test_lookup_refuses_bad_input(api, body, field):
    assert_error(api("post", "/v1/contacts/lookup", body), 400, "validation_error", field)


def test_lookup_is_not_a_contact_and_get_on_it_is_405(api):
    assert_error(api("get", "/v1/contacts/lookup"), 405, "method_not_allowed")
    assert_error(api("post", "/v1/contacts/lookup", raw="["), 400, "invalid_json")


@pytest.fixture(params=["sql", "portable"])
def overview(request, monkeypatch):
    """The data overview's two implementations: one SQL statement on PostgreSQL, and the
    portable one SQLite runs (here on PostgreSQL, so both answer the same cases)."""
    if request.param == "portable":
        monkeypatch.setattr(connection, "vendor", "sqlite")
    return request.param


# --- GET /v1/contacts/fields ---------------------------------------------------------------------


def test_fields_report_type_and_coverage(api, overview):
    make("a@example.com", plan="pro", age=31, vip=True, tags=["x"], address={"city": "Oslo"})
    make("b@example.com", plan="free", age="unknown")
    make("c@example.com", plan="free")
    make("d@example.com")
    body = ok(api("get", "/v1/contacts/fields"))["data"]
    assert body["count"] == 5 and body["sampled"] == 4
    assert body["fields"] == [
        {"field": "plan", "type": "string", "coverage": 0.75},
        {"field": "age", "type": "mixed", "coverage": 0.5},
        {"field": "address", "type": "object", "coverage": 0.25},
        {"field": "tags", "type": "array", "coverage": 0.25},
        {"field": "vip", "type": "boolean", "coverage": 0.25},
    ]


def test_fields_sample_only_the_most_recent_contacts(api, overview, monkeypatch):
    make("old@example.com", at=T0 - timedelta(days=2), legacy=1)
    make("mid@example.com", at=T0 - timedelta(days=1), score=1.5)
    make("new@example.com", at=T0, score=2, stale=None)
    monkeypatch.setattr(services, "FIELDS_SAMPLE", 2)
    body = ok(api("get", "/v1/contacts/fields"))["data"]
    assert body["sampled"] == 2
    assert {f["field"]: (f["type"], f["coverage"]) for f in body["fields"]} == {
        "score": ("number", 1.0)
    }


def test_fields_of_no_contacts_are_empty(api, overview):
    assert ok(api("get", "/v1/contacts/fields"))["data"] == {"fields": [], "count": 0, "sampled": 0}


# --- GET /v1/contacts/fields/<field>/values ------------------------------------------------------


def test_field_values_are_counted_most_common_first(api, overview):
    for i, plan in enumerate(["pro", "free", "pro", 1, "1", "pro", "free", {"a": 1}]):
        make(f"c{i}@example.com", plan=plan)
    make("none@example.com", other=True)
    body = ok(api("get", "/v1/contacts/fields/plan/values"))["data"]
    assert body["field"] == "plan" and body["count"] == 5 and body["sampled"] == 9
    assert body["values"][:2] == [{"value": "pro", "count": 3}, {"value": "free", "count": 2}]
    assert {json.dumps(v["value"]) for v in body["values"][2:]} == {"1", '"1"', '{"a": 1}'}
    assert all(v["count"] == 1 for v in body["values"][2:])


def test_field_values_are_cut_to_the_top(api, overview, monkeypatch):
    for i in range(6):
        for j in range(i + 1):
            make(f"c{i}-{j}@example.com", n=i)
    monkeypatch.setattr(services, "FIELD_VALUES_TOP", 3)
    body = ok(api("get", "/v1/contacts/fields/n/values"))["data"]
    assert body["values"] == [
        {"value": 5, "count": 6},
        {"value": 4, "count": 5},
        {"value": 3, "count": 4},
    ]
    assert body["count"] == 6


def test_values_of_a_field_nobody_has_are_empty(api, overview):
    make("a@example.com", plan="pro")
    body = ok(api("get", "/v1/contacts/fields/first%20name/values"))["data"]
    assert body == {"field": "first name", "values": [], "count": 0, "sampled": 1}


@pytest.mark.parametrize("field", ["a%00b", "x" * 256, "%00"])
def test_field_values_refuse_a_malformed_field(api, field):
    assert_error(
        api("get", f"/v1/contacts/fields/{field}/values"), 400, "validation_error", "field"
    )
