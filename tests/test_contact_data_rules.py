"""Contact data rules (issue 9, item 4) on every write path: `null` deletes a key, `""` changes
nothing, reserved keys (`id`, `email`, `unsubscribeUrl`, `subscribeUrl`, `manageUrl`,
`plunk_*`) are dropped. Paths: /v1/track (the one-statement SQL and the ORM path), contact_upsert,
the Update Contact step (contact_update_data, both of its implementations), the admin form."""

from __future__ import annotations

import functools

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from contacts_app.models import Contact
from contacts_app.services import (
    ContactDataTooLarge,
    contact_data_changes,
    contact_update_data,
    contact_upsert,
)
from tests.conftest import chain, drain
from workflows_app import api as track_api
from workflows_app import track as track_mod

BEFORE = {"plan": "pro", "city": "Oslo", "gone": 1}
WRITE = {
    "plan": "",  # ignored: stays "pro"
    "city": None,  # removed
    "gone": None,
    "new": "yes",
    "zero": 0,  # falsy values other than "" and null are stored
    "off": False,
    "id": "x",
    "email": "evil@example.com",
    "unsubscribeUrl": "https://evil.example/u",
    "subscribeUrl": "https://evil.example/s",
    "manageUrl": "https://evil.example/m",
    "plunk_id": "p",
    "plunk_anything": "p",
}
AFTER = {"plan": "pro", "new": "yes", "zero": 0, "off": False}


def test_one_function_decides_what_a_write_means():
    to_set, to_unset = contact_data_changes(WRITE)
    assert to_set == {"new": "yes", "zero": 0, "off": False}
    assert sorted(to_unset) == ["city", "gone"]
    assert contact_data_changes(None) == ({}, [])
    # Nested values are values: only the top level follows the rules.
    assert contact_data_changes({"a": {"b": None, "c": ""}}) == ({"a": {"b": None, "c": ""}}, [])


@pytest.fixture(params=[True, False], ids=["one_statement", "orm"])
def path(request, monkeypatch):
    monkeypatch.setattr(track_api, "track", functools.partial(track_mod.track, fast=request.param))
    return request.param


def test_track_applies_the_rules(track, path):
    assert track.post({"event": "e", "email": "ann@example.com", "data": BEFORE}).status_code == 200
    response = track.post({"event": "e", "email": "ann@example.com", "data": WRITE})
    assert response.status_code == 200, response.content
    assert Contact.objects.get().data == AFTER


def test_track_on_a_new_contact_stores_neither_nulls_nor_empty_strings(track, path):
    response = track.post({"event": "e", "email": "bob@example.com", "data": WRITE})
    assert response.status_code == 200, response.content
    assert Contact.objects.get().data == {"new": "yes", "zero": 0, "off": False}


def test_track_keeps_every_value_in_the_event_and_unwraps_non_persistent_ones(track, path):
    from contacts_app.models import Event

    data = {"a": None, "b": "", "c": {"value": "tmp", "persistent": False}, "d": 1}
    track.post({"event": "e", "email": "ann@example.com", "data": {"a": 1, "b": 2}})
    assert track.post({"event": "e2", "email": "ann@example.com", "data": data}).status_code == 200
    assert Event.objects.get(name="e2").data == {"a": None, "b": "", "c": "tmp", "d": 1}
    assert Contact.objects.get().data == {"b": 2, "d": 1}


def test_track_a_wrapped_persistent_null_deletes_the_key(track, path):
    track.post({"event": "e", "email": "ann@example.com", "data": {"a": 1}})
    wrapped = {"a": {"value": None, "persistent": True}}
    response = track.post({"event": "e", "email": "ann@example.com", "data": wrapped})
    assert response.status_code == 200
    assert Contact.objects.get().data == {}


def test_track_removing_keys_is_never_refused_for_size(track, path, settings):
    track.post({"event": "e", "email": "ann@example.com", "data": {"big": "x" * 500}})
    settings.CONTACT_MAX_DATA_BYTES = 100  # the contact is over a cap lowered later
    response = track.post({"event": "e", "email": "ann@example.com", "data": {"big": None}})
    assert response.status_code == 200, response.content
    assert Contact.objects.get().data == {}
    refused = track.post({"event": "e", "email": "ann@example.com", "data": {"x": "y" * 200}})
    assert refused.status_code == 400 and "data" in refused.json()["error"]["fields"]


def test_contact_upsert_applies_the_rules(db):
    contact_upsert(email="ann@example.com", data=BEFORE)
    contact, created = contact_upsert(email="ann@example.com", data=WRITE)
    assert not created
    assert contact.data == AFTER
    assert Contact.objects.get().data == AFTER
    new, created = contact_upsert(email="bob@example.com", data=WRITE)
    assert created and new.data == {"new": "yes", "zero": 0, "off": False}


@pytest.fixture(params=["postgresql", "orm"])
def update_path(request, monkeypatch):
    """contact_update_data has a one-statement PostgreSQL form and an ORM form (SQLite)."""
    if request.param == "orm":
        monkeypatch.setattr(connection, "vendor", "sqlite")
    return request.param


def test_contact_update_data_applies_the_rules_to_set(db, update_path):
    contact, _ = contact_upsert(email="ann@example.com", data=BEFORE)
    updated = contact_update_data(contact=contact, set=WRITE, unset=["new_never_there"])
    assert updated.data == AFTER
    assert Contact.objects.get().data == AFTER


def test_contact_update_data_still_refuses_growth_past_the_cap(db, update_path, settings):
    contact, _ = contact_upsert(email="ann@example.com", data={"a": 1})
    settings.CONTACT_MAX_DATA_BYTES = 50
    with pytest.raises(ContactDataTooLarge):
        contact_update_data(contact=contact, set={"b": "x" * 100, "a": None})
    assert Contact.objects.get().data == {"a": 1}


def test_the_update_contact_step_applies_the_rules(track, make_workflow):
    step = {
        "key": "tag",
        "type": "update_contact",
        "config": {"set": {"plan": "", "city": None, "email": "x@y.z", "plunk_x": 1, "n": 2}},
    }
    make_workflow(*chain(step))
    body = {"event": "user.signup", "email": "ann@example.com", "data": BEFORE}
    assert track.post(body).status_code == 200
    drain()
    assert Contact.objects.get().data == {"plan": "pro", "gone": 1, "n": 2}


@pytest.fixture
def admin(db):
    user = User.objects.create_superuser("root", "root@example.com", "pw-not-used-here")
    client = Client()
    client.force_login(user)
    return client


def admin_form(data: str, *, email="ann@example.com", subscribed=True):
    form = {"email": email, "data": data, "events-TOTAL_FORMS": 0, "events-INITIAL_FORMS": 0}
    if subscribed:
        form["subscribed"] = "on"
    return form


def test_the_admin_form_applies_the_rules(admin):
    import json

    contact, _ = contact_upsert(email="ann@example.com", data=BEFORE)
    # Left out ("gone") or null ("city"): removed; "" ("plan"): unchanged; reserved: dropped.
    written = {k: v for k, v in WRITE.items() if k != "gone"}
    url = f"/admin/contacts_app/contact/{contact.pk}/change/"
    response = admin.post(url, admin_form(json.dumps(written)))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Contact.objects.get().data == AFTER


def test_the_admin_add_form_applies_the_rules(admin):
    import json

    response = admin.post("/admin/contacts_app/contact/add/", admin_form(json.dumps(WRITE)))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Contact.objects.get().data == {"new": "yes", "zero": 0, "off": False}
