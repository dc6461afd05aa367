"""POST /v1/track under concurrent calls from several threads, and while the database is down.

These tests commit for real (transaction=True): each thread has its own connection, as gunicorn
workers would, so only the database's own constraints can keep the rules.
"""

from __future__ import annotations

import functools
import json
import socket
import threading

import pytest
from django.db import connection
from django.test import Client

from contacts_app.models import Contact, Event, IdempotencyKey
from tests.conftest import drain
from workflows_app import api as track_api
from workflows_app import track as track_mod
from workflows_app.models import Execution
from workflows_app.services import workflow_create

THREADS = 12

EXIT_GRAPH = {
    "steps": [{"key": "done", "type": "exit", "config": {}}],
    "transitions": [{"from": "trigger", "to": "done"}],
}


@pytest.fixture(params=[True, False], ids=["one_statement", "orm"])
def path(request, monkeypatch):
    monkeypatch.setattr(track_api, "track", functools.partial(track_mod.track, fast=request.param))
    return request.param


def fire(raw_key, bodies, headers=None):
    """Posts every body at once, one thread and one connection each; returns the responses
    as (status, decoded body) in order."""
    barrier = threading.Barrier(len(bodies))
    results: list = [None] * len(bodies)

    def call(i, body):
        try:
            client = Client()
            barrier.wait(timeout=30)
            response = client.post(
                "/v1/track",
                data=json.dumps(body),
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {raw_key}",
                **(headers or {}),
            )
            results[i] = (response.status_code, response.json())
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=call, args=(i, b)) for i, b in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a request hung"
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    return results


def statuses(results):
    return sorted(status for status, _ in results)


@pytest.mark.django_db(transaction=True)
def test_it_enters_a_workflow_once_under_concurrent_calls_without_reentry(secret_key, path):
    workflow = workflow_create(
        name="Once", trigger_event="user.signup", enabled=True, graph=EXIT_GRAPH
    )
    body = {"event": "user.signup", "email": "ann@example.com"}
    results = fire(secret_key, [body] * THREADS)
    assert statuses(results) == [200] * THREADS
    assert Event.objects.count() == THREADS
    assert Contact.objects.count() == 1
    assert Execution.objects.filter(workflow=workflow).count() == 1
    drain()
    assert Execution.objects.get().status == Execution.EXITED
    results = fire(secret_key, [body] * THREADS)
    assert statuses(results) == [200] * THREADS
    assert Execution.objects.filter(workflow=workflow).count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_never_runs_two_at_once_under_concurrent_calls_with_reentry(secret_key, path):
    workflow = workflow_create(
        name="Again",
        trigger_event="user.signup",
        enabled=True,
        allow_reentry=True,
        graph=EXIT_GRAPH,
    )
    body = {"event": "user.signup", "email": "ann@example.com"}
    runs = Execution.objects.filter(workflow=workflow)
    for round_ in range(1, 4):
        results = fire(secret_key, [body] * THREADS)
        assert statuses(results) == [200] * THREADS
        assert runs.filter(status__in=Execution.ACTIVE).count() == 1
        assert runs.count() == round_
        drain()
        assert runs.filter(status__in=Execution.ACTIVE).count() == 0
    assert Event.objects.count() == 3 * THREADS


@pytest.mark.django_db(transaction=True)
def test_it_creates_one_contact_for_concurrent_first_events(secret_key, path):
    workflow_create(name="Once", trigger_event="user.signup", enabled=True, graph=EXIT_GRAPH)
    variants = ["new@example.com", "NEW@example.com", "New@Example.Com", " new@EXAMPLE.com "]
    bodies = [
        {"event": "user.signup", "email": variants[i % len(variants)], "data": {f"k{i}": i}}
        for i in range(THREADS)
    ]
    results = fire(secret_key, bodies)
    assert statuses(results) == [200] * THREADS
    contact = Contact.objects.get()
    assert contact.email == "new@example.com" and contact.subscribed is True
    assert {body["data"]["contact"] for _, body in results} == {str(contact.pk)}
    # Every call's keys were merged: no update lost another's.
    assert contact.data == {f"k{i}": i for i in range(THREADS)}
    assert Event.objects.filter(contact=contact).count() == THREADS
    assert Execution.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_accepts_a_concurrently_repeated_idempotency_key_once(secret_key, path):
    workflow_create(
        name="Once", trigger_event="user.signup", enabled=True, allow_reentry=True, graph=EXIT_GRAPH
    )
    body = {"event": "user.signup", "email": "ann@example.com"}
    results = fire(secret_key, [body] * THREADS, {"HTTP_IDEMPOTENCY_KEY": "order-42"})
    assert statuses(results) == [200] + [409] * (THREADS - 1)
    assert all(b["error"]["code"] == "duplicate_request" for s, b in results if s == 409)
    assert Event.objects.count() == 1
    assert Execution.objects.count() == 1
    assert IdempotencyKey.objects.count() == 1


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("warm", [False, True], ids=["cold_key_cache", "warm_key_cache"])
def test_it_answers_503_while_the_database_is_down_and_recovers(track, warm):
    body = {"event": "user.signup", "email": "ann@example.com"}
    if warm:
        assert track.post(body).status_code == 200
    before = Event.objects.count()
    port = connection.settings_dict["PORT"]
    connection.settings_dict["PORT"] = _closed_port()
    connection.close()
    try:
        response = track.post({**body, "email": "bob@example.com"})
        assert response.status_code == 503, response.content
        assert response["Content-Type"].startswith("application/json")
        assert int(response["Retry-After"]) > 0
        error = response.json()
        assert error["success"] is False
        assert error["error"]["code"] == "service_unavailable"
        assert error["error"]["message"]
        assert b"Traceback" not in response.content
    finally:
        connection.settings_dict["PORT"] = port
        connection.close()
    assert Event.objects.count() == before
    assert not Contact.objects.filter(email="bob@example.com").exists()
    response = track.post({**body, "email": "bob@example.com"})
    assert response.status_code == 200, response.content
    assert Contact.objects.filter(email="bob@example.com").exists()
