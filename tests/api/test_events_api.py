"""The Events API: list (by name, by contact, by time), one contact's events, the names in use
and counts per name over a period; bounded queries on the event indexes."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from contacts_app import events_api
from contacts_app.models import Contact, Event
from contacts_app.services import contact_upsert, event_record

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def call(path, key):
    extra = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    return Client().get(path, **extra)


def error(response, status):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is False and body["error"]["statusCode"] == status
    return body["error"]


@pytest.fixture
def cast(db):
    """Ann: signup (T0), order (T0+1d, T0+2d); Bob: signup (T0+3d)."""
    ann, _ = contact_upsert(email="ann@example.com")
    bob, _ = contact_upsert(email="bob@example.com")
    events = {
        "ann-signup": event_record(contact=ann, name="user.signup", data={"plan": "pro"}, at=T0),
        "ann-order-1": event_record(
            contact=ann, name="order", data={"n": 1}, at=T0 + timedelta(days=1)
        ),
        "ann-order-2": event_record(
            contact=ann, name="order", data={"n": 2}, at=T0 + timedelta(days=2)
        ),
        "bob-signup": event_record(contact=bob, name="user.signup", at=T0 + timedelta(days=3)),
    }
    return ann, bob, events


def ids(response):
    assert response.status_code == 200, response.content
    return [e["id"] for e in response.json()["data"]]


PATHS = [
    "/v1/events",
    "/v1/events/names",
    "/v1/events/stats",
    "/v1/events/contact/0b9f8a52-8c55-4a8e-9d7e-2a7a1d0c1f00",
]


@pytest.mark.parametrize("path", PATHS)
def test_it_refuses_a_missing_a_wrong_and_a_public_key(path, public_key):
    assert error(call(path, None), 401)["code"] == "authentication_required"
    assert error(call(path, "sk_wrong"), 401)["code"] == "authentication_failed"
    assert error(call(path, public_key), 403)["code"] == "permission_denied"


def test_it_lists_events_newest_first_in_plunks_shape(secret_key, cast):
    ann, bob, events = cast
    response = call("/v1/events", secret_key)
    body = response.json()
    assert body["success"] is True
    assert (body["total"], body["page"], body["pageSize"], body["totalPages"]) == (4, 1, 20, 1)
    assert ids(response) == [
        str(events[k].pk) for k in ("bob-signup", "ann-order-2", "ann-order-1", "ann-signup")
    ]
    assert body["data"][3] == {
        "id": str(events["ann-signup"].pk),
        "name": "user.signup",
        "contactId": str(ann.pk),
        "email": "ann@example.com",
        "data": {"plan": "pro"},
        "createdAt": T0.isoformat(),
    }
    second = call("/v1/events?page=2&pageSize=3", secret_key).json()
    assert [e["id"] for e in second["data"]] == [str(events["ann-signup"].pk)]
    assert second["totalPages"] == 2


def test_it_filters_by_name_contact_and_time(secret_key, cast):
    ann, bob, events = cast

    def names(query):
        return [e["id"] for e in call(f"/v1/events?{query}", secret_key).json()["data"]]

    def of(*keys):
        return [str(events[k].pk) for k in keys]

    assert names("name=order") == of("ann-order-2", "ann-order-1")
    assert names("name=ord") == []  # exact, not a search
    assert names(f"contactId={bob.pk}") == of("bob-signup")
    assert names("email=ANN@example.com&name=user.signup") == of("ann-signup")
    assert names("email=nobody@example.com") == []
    assert len(names("name=&email=")) == 4  # empty: no filter
    day1 = (T0 + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    day2 = (T0 + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S")  # no offset: UTC
    assert names(f"from={day1}&to={day2}") == of("ann-order-2", "ann-order-1")
    assert names("to=2026-03-01") == []  # a date is its midnight
    assert names("from=2026-03-04") == of("bob-signup")
    assert names("from=2026-03-04&to=2026-03-01") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("contactId=not-a-uuid", "contactId"),
        ("email=nope", "email"),
        ("name=" + "x" * 256, "name"),
        ("from=yesterday", "from"),
        ("to=2026-13-01", "to"),
        ("page=0", "page"),
        ("page=", "page"),
        ("pageSize=", "pageSize"),
        ("to=", "to"),
        ("limit=0", "limit"),
        ("eventName=" + "x" * 256, "eventName"),
        ("startDate=later", "startDate"),
        ("cursor=abc", "cursor"),  # unknown
        ("page=10001", "page"),
        ("pageSize=101", "pageSize"),
    ],
)
def test_it_refuses_bad_list_parameters_naming_them(secret_key, query, field):
    err = error(call(f"/v1/events?{query}", secret_key), 400)
    assert field in err["fields"]


def test_it_takes_plunks_parameter_names(secret_key, cast):
    ann, bob, events = cast
    response = call("/v1/events?eventName=order&limit=1", secret_key)
    assert ids(response) == [str(events["ann-order-2"].pk)]
    assert response.json()["pageSize"] == 1
    # Ours win when both are given.
    assert len(ids(call("/v1/events?eventName=order&name=user.signup", secret_key))) == 2
    paged = call(f"/v1/events/contact/{bob.pk}?limit=1", secret_key).json()
    assert paged["pageSize"] == 1 and len(paged["data"]) == 1
    stats = call("/v1/events/stats?startDate=2026-03-03&endDate=2026-03-05", secret_key).json()
    assert stats["data"] == [{"name": "order", "count": 1}, {"name": "user.signup", "count": 1}]


def test_it_counts_no_further_than_its_limit(secret_key, cast, monkeypatch):
    monkeypatch.setattr(events_api, "MAX_COUNTED", 3)
    body = call("/v1/events?pageSize=2", secret_key).json()
    assert body["total"] == 3 and body["totalPages"] == 2
    assert len(call("/v1/events?page=2&pageSize=2", secret_key).json()["data"]) == 1
    assert call("/v1/events?page=2&pageSize=3", secret_key).json()["data"] == []
    assert call("/v1/events?page=2&pageSize=3", secret_key).json()["total"] == 3


def test_the_filtered_queries_use_the_event_indexes(secret_key, cast):
    ann, _, _ = cast
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")  # a tiny table: ask what it can use
        try:
            for query, index in (
                ("name=order", "event_name_time"),
                (f"contactId={ann.pk}", "event_contact_time"),
            ):
                with CaptureQueriesContext(connection) as queries:
                    assert call(f"/v1/events?{query}", secret_key).status_code == 200
                listing = [q["sql"] for q in queries if 'FROM "contacts_app_event"' in q["sql"]]
                assert listing
                for sql in listing:
                    cursor.execute("EXPLAIN " + sql)
                    plan = "\n".join(row[0] for row in cursor.fetchall())
                    assert index in plan, plan
        finally:
            cursor.execute("RESET enable_seqscan")


def test_it_lists_one_contacts_events(secret_key, cast):
    ann, bob, events = cast
    response = call(f"/v1/events/contact/{ann.pk}", secret_key)
    assert ids(response) == [
        str(events[k].pk) for k in ("ann-order-2", "ann-order-1", "ann-signup")
    ]
    assert response.json()["total"] == 3
    paged = call(f"/v1/events/contact/{ann.pk}?pageSize=1&page=3", secret_key)
    assert ids(paged) == [str(events["ann-signup"].pk)]


def test_an_unknown_contacts_events_are_a_404(secret_key, cast):
    err = error(call("/v1/events/contact/0b9f8a52-8c55-4a8e-9d7e-2a7a1d0c1f00", secret_key), 404)
    assert err["code"] == "not_found"
    assert error(call("/v1/events/contact/not-a-uuid", secret_key), 404)


@pytest.mark.parametrize(
    ("query", "field"), [("pageSize=0", "pageSize"), ("page=x", "page"), ("name=a", "name")]
)
def test_bad_paging_of_a_contacts_events_is_a_400(secret_key, cast, query, field):
    ann, _, _ = cast
    err = error(call(f"/v1/events/contact/{ann.pk}?{query}", secret_key), 400)
    assert field in err["fields"]


def test_it_lists_the_names_with_when_each_was_last_seen(secret_key, cast):
    response = call("/v1/events/names", secret_key)
    assert response.status_code == 200
    last = {
        name: Event.objects.filter(name=name).latest("created_at").created_at.isoformat()
        for name in ("order", "user.signup")
    }
    assert response.json() == {
        "success": True,
        "data": [
            {"name": "order", "lastSeenAt": last["order"]},
            {"name": "user.signup", "lastSeenAt": last["user.signup"]},
        ],
    }


def test_the_names_query_reads_one_index_entry_per_name_not_every_event(secret_key, cast):
    # Many events of few names: the skip scan's cost follows the names.
    contact = Contact.objects.first()
    Event.objects.bulk_create(Event(contact=contact, name="order") for _ in range(2000))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE contacts_app_event")
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + events_api._NAMES_SQL, [1000])
        plan = cursor.fetchone()[0][0]
    assert "Seq Scan" not in json.dumps(plan)
    assert [n["name"] for n in call("/v1/events/names", secret_key).json()["data"]] == [
        "order",
        "user.signup",
    ]


def test_the_names_are_bounded(secret_key, cast, monkeypatch):
    monkeypatch.setattr(events_api, "MAX_NAMES", 1)
    assert len(call("/v1/events/names", secret_key).json()["data"]) == 1


def test_it_counts_per_name_over_a_period(secret_key, cast):
    start = (T0 + timedelta(days=1)).isoformat()
    end = (T0 + timedelta(days=3)).isoformat()
    response = call(
        f"/v1/events/stats?from={start.replace('+', '%2B')}&to={end.replace('+', '%2B')}",
        secret_key,
    )
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "data": [{"name": "order", "count": 2}, {"name": "user.signup", "count": 1}],
        "from": start,
        "to": end,
    }


def test_stats_default_to_the_last_30_days(secret_key, cast):
    ann, _, _ = cast
    event_record(contact=ann, name="recent", at=timezone.now() - timedelta(days=29))
    event_record(contact=ann, name="old", at=timezone.now() - timedelta(days=31))
    body = call("/v1/events/stats", secret_key).json()
    assert body["data"] == [{"name": "recent", "count": 1}]
    to = datetime.fromisoformat(body["to"])
    assert to - datetime.fromisoformat(body["from"]) == timedelta(days=30)
    assert abs(timezone.now() - to) < timedelta(minutes=1)
    only_to = call("/v1/events/stats?to=2026-03-03", secret_key).json()
    assert only_to["from"] == "2026-02-01T00:00:00+00:00"
    assert only_to["data"] == [{"name": "order", "count": 1}, {"name": "user.signup", "count": 1}]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=2025-01-01&to=2026-03-01", "from"),  # more than 366 days
        ("from=2026-03-02&to=2026-03-01", "from"),
        ("from=2999-01-01", "from"),  # after now, the default `to`
        ("from=soon", "from"),
        ("to=0001-01-01", "to"),  # 30 days before it does not exist
        ("from=", "from"),
        ("period=7d", "period"),  # unknown
    ],
)
def test_a_bad_period_is_a_400_naming_the_field(secret_key, query, field):
    err = error(call(f"/v1/events/stats?{query}", secret_key), 400)
    assert field in err["fields"]


def test_refusals_record_nothing(secret_key, cast):
    before = Event.objects.count()
    call("/v1/events?page=0", secret_key)
    call("/v1/events/stats?from=soon", secret_key)
    assert Event.objects.count() == before
