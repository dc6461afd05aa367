from datetime import timedelta
from urllib.parse import urlsplit

import time_machine
from django.test import Client
from django.utils import timezone

from contacts_app.models import Contact
from contacts_app.services import contact_upsert, unsubscribe_url


def path_of(url):
    return urlsplit(url).path


def test_get_shows_a_confirmation_and_does_not_unsubscribe(db):
    contact, _ = contact_upsert(email="ann@example.com")
    response = Client().get(path_of(unsubscribe_url(contact)))
    assert response.status_code == 200
    assert b"Unsubscribe?" in response.content
    assert Contact.objects.get().subscribed is True


def test_one_click_post_unsubscribes_at_once(db):
    contact, _ = contact_upsert(email="ann@example.com")
    # RFC 8058: the mail client POSTs "List-Unsubscribe=One-Click", without CSRF token.
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        path_of(unsubscribe_url(contact)),
        "List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert Contact.objects.get().subscribed is False


def test_resubscribe_from_the_same_page(db):
    contact, _ = contact_upsert(email="ann@example.com", subscribed=False)
    response = Client().post(path_of(unsubscribe_url(contact)), {"action": "resubscribe"})
    assert b"Welcome back" in response.content
    assert Contact.objects.get().subscribed is True


def test_tampered_token_gets_a_clear_page(db):
    contact, _ = contact_upsert(email="ann@example.com")
    url = path_of(unsubscribe_url(contact))
    response = Client().post(url[:-3] + "abc")
    assert response.status_code == 400
    assert b"does not work" in response.content
    assert Contact.objects.get().subscribed is True


def test_expired_token_gets_a_clear_page(db):
    contact, _ = contact_upsert(email="ann@example.com")
    url = path_of(unsubscribe_url(contact))
    with time_machine.travel(timezone.now() + timedelta(days=400), tick=False):
        response = Client().post(url)
    assert response.status_code == 400
    assert Contact.objects.get().subscribed is True
