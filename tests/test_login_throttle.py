"""Admin login throttling (django-axes): after AXES_FAILURE_LIMIT (5) wrong passwords one
username is locked out from that address for the cool-off (15 minutes), even with the right
password; other addresses are not; an admin unlocks early (AccessAttempt delete in the admin,
or `manage.py axes_reset`). Through the real login page."""

import datetime as dt

import pytest
import time_machine
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

pytestmark = pytest.mark.django_db

PASSWORD = "right-horse-battery-staple"
LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture(autouse=True)
def _fast_hashing(settings):
    # Dozens of logins per test: the real hasher's cost is not what is tested here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def boss(django_user_model):
    return django_user_model.objects.create_superuser("boss", "boss@example.com", PASSWORD)


def log_in(password: str, *, address: str = "203.0.113.5", username: str = "boss", **meta):
    """A fresh browser posting the login form; returns (response, client)."""
    client = Client(REMOTE_ADDR=address, **meta)
    response = client.post(LOGIN, {"username": username, "password": password})
    return response, client


def logged_in(client: Client) -> bool:
    return client.get("/admin/").status_code == 200


def fail_five_times(**where):
    statuses = [log_in("wrong", **where)[0].status_code for _ in range(5)]
    # The login form again with its error, four times; the fifth failure locks.
    assert statuses == [200, 200, 200, 200, 429]


def test_five_wrong_passwords_lock_out_that_user_from_that_address(boss):
    fail_five_times()
    response, client = log_in(PASSWORD)
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    assert not logged_in(client)

    other, client = log_in(PASSWORD, address="198.51.100.7")  # another address: not locked
    assert other.status_code == 302 and logged_in(client)


def test_the_lockout_ends_after_the_cool_off(boss):
    fail_five_times()
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=14), tick=False):
        assert log_in(PASSWORD)[0].status_code == 429
    # That try, during the lockout, started the cool-off again: 15 minutes from it.
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=14 + 16), tick=False):
        response, client = log_in(PASSWORD)
        assert response.status_code == 302 and logged_in(client)


def test_axes_reset_unlocks(boss):
    fail_five_times()
    assert log_in(PASSWORD)[0].status_code == 429
    call_command("axes_reset")
    response, client = log_in(PASSWORD)
    assert response.status_code == 302 and logged_in(client)


def test_an_admin_unlocks_by_deleting_the_access_attempt(boss, django_user_model):
    fail_five_times(username="ops")  # a user that does not even exist is throttled the same
    django_user_model.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    assert log_in(PASSWORD, username="ops")[0].status_code == 429

    admin = Client()
    admin.force_login(boss)
    attempt = AccessAttempt.objects.get(username="ops")
    listing = admin.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and "203.0.113.5" in listing.content.decode()
    admin.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert not AccessAttempt.objects.exists()
    response, client = log_in(PASSWORD, username="ops")
    assert response.status_code == 302 and logged_in(client)


def test_behind_a_proxy_the_address_is_the_one_the_proxy_saw(boss, settings):
    settings.PROXY_COUNT = 1
    # Every request arrives from the proxy (127.0.0.1); the attacker varies what it writes
    # into X-Forwarded-For, but the proxy appends the address it really saw.
    statuses = [
        log_in("wrong", address="127.0.0.1", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}, 203.0.113.5")[
            0
        ].status_code
        for n in range(5)
    ]
    assert statuses == [200, 200, 200, 200, 429]
    locked, _client = log_in(
        PASSWORD, address="127.0.0.1", HTTP_X_FORWARDED_FOR="10.9.9.9, 203.0.113.5"
    )
    assert locked.status_code == 429
    # Someone else behind the same proxy still logs in.
    response, client = log_in(PASSWORD, address="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert response.status_code == 302 and logged_in(client)
