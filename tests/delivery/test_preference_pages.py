"""The pages behind `manageUrl` (preferences) and `subscribeUrl` (resubscribe after a
confirmation): GET shows, POST acts, a tampered or foreign token is refused, and while the
database is down they answer 503 like the unsubscribe page."""

from urllib.parse import urlsplit

import pytest
from django.core import signing
from django.db import connection
from django.test import Client

from config.redact import redact
from contacts_app.models import Contact, Event
from contacts_app.services import (
    MANAGE_SALT,
    SUBSCRIBE_SALT,
    contact_upsert,
    manage_token,
    manage_url,
    subscribe_token,
    subscribe_url,
    unsubscribe_token,
    unsubscribe_url,
)
from tests.test_production_settings import (  # the real gunicorn harness
    PRODUCTION_ENV,
    SECRET_KEY,
    start_web,  # noqa: F401 - a fixture
    test_database_url,
)


def path_of(url):
    return urlsplit(url).path


def subscribed():
    return Contact.objects.get().subscribed


# --- Preferences (manageUrl) ------------------------------------------------------------------


def test_manage_shows_the_current_state_and_changes_nothing_on_get(db):
    contact, _ = contact_upsert(email="ann@example.com")
    page = Client().get(path_of(manage_url(contact)))
    assert page.status_code == 200
    assert b"ann@example.com" in page.content
    assert b"<strong>subscribed</strong>" in page.content
    assert b'value="unsubscribe"' in page.content
    assert subscribed() is True


def test_manage_unsubscribes_and_subscribes_again(db):
    contact, _ = contact_upsert(email="ann@example.com")
    # A page in an email: posted without a CSRF token, the signed token is the credential.
    client = Client(enforce_csrf_checks=True)
    url = path_of(manage_url(contact))
    off = client.post(url, {"action": "unsubscribe"})
    assert off.status_code == 200
    assert b"Saved: you are unsubscribed" in off.content
    assert b'value="subscribe"' in off.content
    assert subscribed() is False

    shown = client.get(url)
    assert b"<strong>unsubscribed</strong>" in shown.content

    on = client.post(url, {"action": "subscribe"})
    assert b"Saved: you are subscribed" in on.content
    assert subscribed() is True


def test_manage_refuses_an_unknown_action(db):
    contact, _ = contact_upsert(email="ann@example.com")
    response = Client().post(path_of(manage_url(contact)), {"action": "delete"})
    assert response.status_code == 400
    assert subscribed() is True


# --- Resubscribe (subscribeUrl) ---------------------------------------------------------------


def test_subscribe_asks_first_and_subscribes_on_post(db):
    contact, _ = contact_upsert(email="ann@example.com", subscribed=False)
    url = path_of(subscribe_url(contact))
    asked = Client().get(url)
    assert asked.status_code == 200
    assert b"Subscribe again?" in asked.content
    assert b"<form" in asked.content
    assert subscribed() is False  # a link scanner opening the link changes nothing

    done = Client(enforce_csrf_checks=True).post(url, {"action": "subscribe"})
    assert done.status_code == 200
    assert b"You are subscribed" in done.content
    assert subscribed() is True


def test_subscribe_when_already_subscribed_says_so(db):
    contact, _ = contact_upsert(email="ann@example.com")
    page = Client().get(path_of(subscribe_url(contact)))
    assert b"already gets our email" in page.content
    assert b"<form" not in page.content


def test_subscribe_after_unsubscribing_from_the_unsubscribe_page(db):
    contact, _ = contact_upsert(email="ann@example.com")
    Client().post(path_of(unsubscribe_url(contact)), {"action": "unsubscribe"})
    assert subscribed() is False
    Client().post(path_of(subscribe_url(contact)))
    assert subscribed() is True


# --- Bad links --------------------------------------------------------------------------------

PAGES = [
    ("manage", manage_url),
    ("subscribe", subscribe_url),
]


@pytest.mark.parametrize(("page", "url_of"), PAGES)
def test_a_tampered_token_gets_a_clear_page(db, page, url_of):
    contact, _ = contact_upsert(email="ann@example.com", subscribed=False)
    url = path_of(url_of(contact))
    for method in ("get", "post"):
        response = getattr(Client(), method)(url[:-3] + "abc", {"action": "subscribe"})
        assert response.status_code == 400
        assert b"does not work" in response.content
    assert subscribed() is False


@pytest.mark.parametrize(
    ("page", "foreign"),
    [
        ("manage", unsubscribe_token),
        ("manage", subscribe_token),
        ("subscribe", unsubscribe_token),
        ("subscribe", manage_token),
        ("unsubscribe", manage_token),
        ("unsubscribe", subscribe_token),
    ],
)
def test_a_token_opens_only_its_own_page(db, page, foreign):
    contact, _ = contact_upsert(email="ann@example.com", subscribed=False)
    response = Client().post(f"/{page}/{foreign(contact)}", {"action": "subscribe"})
    assert response.status_code == 400
    assert subscribed() is False


@pytest.mark.parametrize(("page", "url_of"), PAGES)
def test_only_get_and_post(db, page, url_of):
    contact, _ = contact_upsert(email="ann@example.com")
    assert Client().put(path_of(url_of(contact))).status_code == 405


# --- Database down ------------------------------------------------------------------------------


@pytest.fixture
def database_down(transactional_db):
    """The default connection pointed at a database that can not be reached, then restored."""
    settings_dict = connection.settings_dict
    saved = dict(settings_dict)
    connection.close()
    if connection.vendor == "postgresql":
        settings_dict["PORT"] = "1"  # nothing listens there
        settings_dict["HOST"] = "127.0.0.1"
    else:
        settings_dict["NAME"] = "/nonexistent-directory/db.sqlite3"
    yield
    connection.close()
    settings_dict.clear()
    settings_dict.update(saved)


@pytest.mark.parametrize(
    ("page", "token_of", "words"),
    [
        ("manage", manage_token, b"unsubscribe you"),
        ("subscribe", subscribe_token, b"subscribe you again"),
        ("unsubscribe", unsubscribe_token, b"unsubscribe you"),
    ],
)
def test_while_the_database_is_down_the_pages_answer_503(page, token_of, words, database_down):
    token = token_of(Contact(email="ann@example.com"))
    client = Client(raise_request_exception=False)
    for response in (
        client.get(f"/{page}/{token}"),
        client.post(f"/{page}/{token}", {"action": "subscribe"}),
    ):
        assert response.status_code == 503
        assert response["Retry-After"] == "60"
        assert b"try again in a minute" in response.content
        assert words in response.content


# --- Tokens never reach the logs -------------------------------------------------------------


@pytest.mark.parametrize("page", ["unsubscribe", "subscribe", "manage"])
def test_tokens_are_redacted_from_log_lines(page):
    token = "eJzTSk_JTS0uSUxJAQAd7AQw:1vC0aa:abcdef"
    line = (
        f'127.0.0.1 - - "POST /{page}/{token} HTTP/1.1" 200 '
        f'"https://lifecycle.example.com/{page}/{token}?x=1"'
    )
    redacted = redact(line)
    assert token not in redacted
    assert redacted.count(f"/{page}/[redacted]") == 2
    assert "?x=1" in redacted


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_gunicorn_logs_carry_no_token_of_the_new_pages(start_web):  # noqa: F811
    contact, _ = contact_upsert(email="ann@example.com")
    web = start_web("prefs", **PRODUCTION_ENV, DATABASE_URL=test_database_url())
    tokens = {
        "manage": signing.dumps(str(contact.pk), salt=MANAGE_SALT, compress=True, key=SECRET_KEY),
        "subscribe": signing.dumps(
            str(contact.pk), salt=SUBSCRIBE_SALT, compress=True, key=SECRET_KEY
        ),
    }
    referer = f"https://lifecycle.example.com/manage/{tokens['manage']}"
    assert web.get(f"/manage/{tokens['manage']}").status_code == 200
    off = web.post(
        f"/manage/{tokens['manage']}", data={"action": "unsubscribe"}, headers={"Referer": referer}
    )
    assert off.status_code == 200 and "you are unsubscribed" in off.text
    assert web.get(f"/subscribe/{tokens['subscribe']}").status_code == 200
    assert web.post(f"/subscribe/{tokens['subscribe']}").status_code == 200
    assert Contact.objects.get(pk=contact.pk).subscribed is True
    assert web.get(f"/manage/{tokens['manage']}-tampered").status_code == 400  # logged by Django
    web.stop()

    access, errors = web.access_log.read_text(), web.error_log.read_text()
    assert access.count("/manage/[redacted]") >= 4  # request lines and the Referer
    assert access.count("/subscribe/[redacted]") == 2
    assert "Bad Request: /manage/[redacted]" in errors
    for token in tokens.values():
        assert token not in access and token not in errors


# --- Every change is a real subscription change, with its system event ------------------------


def test_the_pages_change_subscriptions_through_the_one_service(db):
    """Through contact_set_subscribed: a real change records contact.subscribed /
    contact.unsubscribed; a repeated POST changes nothing and records nothing."""
    contact, _ = contact_upsert(email="ann@example.com")
    manage, resubscribe = path_of(manage_url(contact)), path_of(subscribe_url(contact))
    Client().post(manage, {"action": "unsubscribe"})
    Client().post(manage, {"action": "unsubscribe"})
    Client().post(resubscribe)
    Client().post(manage, {"action": "subscribe"})
    names = list(Event.objects.order_by("created_at", "id").values_list("name", flat=True))
    assert names == ["contact.unsubscribed", "contact.subscribed"]
