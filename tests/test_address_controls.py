"""An address with a control character or a line separator in a quoted local part is refused
on every path that makes contacts, naming the field: every email to it would fail to build."""

import json

import pytest
from django.test import Client

from contacts_app.emails import email_error
from contacts_app.models import Contact

pytestmark = pytest.mark.django_db

BAD = ['"a\x0bb"@example.com', '"a\u2028b"@example.com', '"a\x85b"@example.com', '"a\tb"@x.co']


@pytest.mark.parametrize("address", BAD)
def test_email_error_refuses_control_characters(address):
    assert "control characters" in email_error(address)


def test_ordinary_quoted_and_international_addresses_still_pass():
    for address in ['"ann"@example.com', "ann@xn--mnchen-3ya.de", "ann+tag@example.com"]:
        assert email_error(address) == "", address


@pytest.mark.parametrize("address", BAD)
def test_track_and_the_contacts_api_refuse_them_naming_email(secret_key, address):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret_key}"}
    for path, body in [
        ("/v1/track", {"event": "signup", "email": address}),
        ("/v1/contacts", {"email": address}),
    ]:
        response = Client().post(
            path, data=json.dumps(body), content_type="application/json", **auth
        )
        assert response.status_code == 400, (path, response.content)
        assert "email" in response.json()["error"]["fields"]
    assert not Contact.objects.exists()
