"""JSON typed into the admin follows the API's rules: a form error, never a 500, and nothing
stored."""

import pytest
from django.urls import reverse

from contacts_app.models import Contact
from contacts_app.services import contact_upsert

pytestmark = pytest.mark.django_db

# The contact page's events inline posts its (empty) management form.
INLINE = {"events-TOTAL_FORMS": "0", "events-INITIAL_FORMS": "0"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('{"score": NaN}', "NaN is not a JSON number"),
        ('{"score": 1e400}', "out of range"),
        ('{"deep": ' + "[" * 40 + "]" * 40 + "}", "nested deeper"),
        ('{"name": "Ann\\u0000"}', "NUL character"),
        ("[1, 2]", "must be a JSON object"),
        ("{not json", "Not valid JSON"),
    ],
)
def test_contact_data_in_the_admin_is_checked(admin_client, data, message):
    contact, _ = contact_upsert(email="ann@example.com", data={"plan": "pro"})
    url = reverse("admin:contacts_app_contact_change", args=[contact.pk])
    response = admin_client.post(
        url, {"email": "ann@example.com", "subscribed": "on", "data": data, **INLINE}
    )
    assert response.status_code == 200  # the form again, with the error
    assert message in response.content.decode()
    assert Contact.objects.get(pk=contact.pk).data == {"plan": "pro"}


def test_valid_contact_data_is_saved(admin_client):
    contact, _ = contact_upsert(email="ann@example.com", data={"plan": "pro"})
    url = reverse("admin:contacts_app_contact_change", args=[contact.pk])
    response = admin_client.post(
        url, {"email": "ann@example.com", "subscribed": "on", "data": '{"plan": "team"}', **INLINE}
    )
    assert response.status_code == 302
    assert Contact.objects.get(pk=contact.pk).data == {"plan": "team"}
