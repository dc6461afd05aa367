"""Contacts stored before emails were normalised (IDNA domains) are found again after the
upgrade, with their subscription; two rows that collapse into one address are both kept."""

import importlib

import pytest
from django.apps import apps
from django.db import connection

from contacts_app.models import Contact
from contacts_app.services import normalize_email

migration = importlib.import_module("contacts_app.migrations.0003_normalize_emails")


def stored_as(email: str, **fields) -> Contact:
    # The shape rows had before: Contact.save() would normalise, so write the row directly.
    contact = Contact.objects.create(email="placeholder@example.com", **fields)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE contacts_app_contact SET email = %s WHERE id = %s", [email, contact.pk]
        )
    return contact


@pytest.mark.django_db
def test_old_idna_addresses_are_stored_in_the_normal_form(capsys):
    ann = stored_as("ann@münchen.de", subscribed=False)
    bob = stored_as("bob@example.com")
    migration.normalize(apps, None)
    ann.refresh_from_db()
    bob.refresh_from_db()
    assert ann.email == "ann@xn--mnchen-3ya.de" == normalize_email("ANN@MÜNCHEN.de")
    assert ann.subscribed is False
    assert bob.email == "bob@example.com"
    assert capsys.readouterr().err == ""


@pytest.mark.django_db
def test_two_rows_that_collapse_are_kept_and_named(capsys):
    old = stored_as("ann@münchen.de", subscribed=False)
    new = stored_as("ann@xn--mnchen-3ya.de")
    migration.normalize(apps, None)
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.email, new.email) == ("ann@münchen.de", "ann@xn--mnchen-3ya.de")
    assert new.subscribed is False  # the unsubscribe is not lost
    assert "'ann@münchen.de' was kept as it is" in capsys.readouterr().err
