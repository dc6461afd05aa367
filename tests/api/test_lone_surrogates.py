"""A lone surrogate (`"\\ud800"` in JSON) in an API body is a 400 naming the field at fault, like
any bad value: echoed back in that error, it once made the reply itself fail (a 500)."""

import pytest
from django.test import Client

from contacts_app.models import Contact
from templates_app.models import Message, Template
from workflows_app.models import Workflow

pytestmark = pytest.mark.django_db

S = '"\\ud800"'  # as JSON text: a lone surrogate once parsed
BODIES = [
    ("/v1/templates", '{"name": "a", "subject": "s", "body": "b", "type": ' + S + "}", "type"),
    ("/v1/workflows", '{"name": "w", "triggerType": ' + S + "}", "triggerType"),
    ("/v1/contacts/bulk-subscribe", '{"mode": ' + S + "}", "mode"),
    ("/v1/contacts", '{"email": "a@example.com", "data": {' + S + ": 1}}", "data"),
    (
        "/v1/send",
        '{"to": "a@example.com", "subject": "s", "body": "b", "headers": {' + S + ': "v"}}',
        "headers",
    ),
]


@pytest.mark.parametrize(("path", "raw", "field"), BODIES)
def test_a_lone_surrogate_is_refused_naming_its_field(secret_key, path, raw, field):
    response = Client().post(
        path, data=raw, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {secret_key}"
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert any(name.startswith(field) for name in error["fields"]), error
    counts = (Template.objects.count(), Workflow.objects.count(), Contact.objects.count())
    assert counts == (0, 0, 0) and not Message.objects.exists()


def test_escaped_pairs_and_other_unicode_are_fine(secret_key):
    response = Client().post(
        "/v1/contacts",
        data='{"email": "a@example.com", "data": {"name": "J\\u00f6rg \\ud83d\\ude00"}}',
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret_key}",
    )
    assert response.status_code == 201, response.content
    assert Contact.objects.get().data == {"name": "Jörg 😀"}
