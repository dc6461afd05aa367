"""GET /healthz: 200 with its checks when the database answers and every migration is applied,
503 JSON otherwise. (The database-down case runs against a real gunicorn in
test_production_settings.py.)"""

from __future__ import annotations

from unittest import mock

import pytest
from django.db import DatabaseError
from django.db.migrations.executor import MigrationExecutor

from config import urls


@pytest.fixture(autouse=True)
def _forget_migrations_check():
    urls._MIGRATIONS_OK_UNTIL = 0.0
    yield
    urls._MIGRATIONS_OK_UNTIL = 0.0


@pytest.mark.django_db
def test_it_answers_200_with_its_checks(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "database": "ok", "migrations": "ok"}


@pytest.mark.django_db
def test_it_answers_503_while_a_migration_is_unapplied(client):
    with mock.patch.object(MigrationExecutor, "migration_plan", return_value=[("m", False)] * 2):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"ok": False, "database": "ok", "migrations": "pending: 2"}
    assert response["Retry-After"] == "10"


@pytest.mark.django_db
def test_it_remembers_a_good_migrations_check_for_a_while(client):
    with mock.patch.object(MigrationExecutor, "migration_plan", return_value=[]) as plan:
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz").status_code == 200
    assert plan.call_count == 1


@pytest.mark.django_db
def test_it_checks_pending_migrations_again_until_they_are_applied(client):
    with mock.patch.object(
        MigrationExecutor, "migration_plan", return_value=[("m", False)]
    ) as plan:
        assert client.get("/healthz").status_code == 503
        assert client.get("/healthz").status_code == 503
    assert plan.call_count == 2
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_it_answers_503_when_the_database_fails(client):
    with mock.patch.object(MigrationExecutor, "migration_plan", side_effect=DatabaseError("gone")):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"ok": False, "database": "unavailable"}
