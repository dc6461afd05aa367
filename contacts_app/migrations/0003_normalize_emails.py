"""Stores existing contacts' addresses in the normal form every path now uses (IDNA ASCII
domain, NFC local part), so an address stored before (`ann@münchen.de`) is still the contact a
new call for it finds, with its subscription. Where two stored rows collapse into one address,
both are kept and named in the migration's output (merging two histories is a decision for a
person, in the admin); an unsubscribe on either carries over to the row new calls find."""

import sys

from django.db import migrations

from contacts_app.emails import normalize_email


def normalize(apps, schema_editor):
    Contact = apps.get_model("contacts_app", "Contact")
    taken = set(Contact.objects.values_list("email", flat=True))
    # Only non-ASCII addresses or punycode in any case can change: the rest are stored lower-case.
    candidates = [
        (pk, email)
        for pk, email in Contact.objects.values_list("id", "email")
        if not email.isascii() or "xn--" in email.lower()
    ]
    collisions = []
    for pk, email in candidates:
        normal = normalize_email(email)
        if normal == email:
            continue
        if normal in taken:
            collisions.append((email, normal))
            # Consent follows the person: if either row unsubscribed, the one that new calls
            # will find is unsubscribed too.
            if not Contact.objects.get(pk=pk).subscribed:
                Contact.objects.filter(email=normal).update(subscribed=False)
            continue
        Contact.objects.filter(pk=pk).update(email=normal)
        taken.discard(email)
        taken.add(normal)
    for email, normal in collisions:
        print(
            f"\n  contacts_app: {email!r} was kept as it is: {normal!r} is another contact; "
            "merge them by hand.",
            file=sys.stderr,
        )


class Migration(migrations.Migration):
    dependencies = [("contacts_app", "0002_contact_data_cap")]

    operations = [migrations.RunPython(normalize, migrations.RunPython.noop)]
