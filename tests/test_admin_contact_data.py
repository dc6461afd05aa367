"""Review fixes for issue 8: what an email and an event carry is contact data (their subject,
body and address are rendered from it), and admin input that used to reach a 500."""

import pytest
from axes.models import AccessAttempt
from django.urls import reverse

from contacts_app.models import Contact, Event
from templates_app.models import Message, Template
from tests.conftest import chain, drain
from tests.flow import execution_of
from tests.test_admin_permissions import VIEW_CONTACT, VIEW_EXECUTION, VIEW_WORKFLOW, client_for

SECRET = "SECRETNAME-40c1"
VIEW_MESSAGE = "templates_app.view_message"
VIEW_EVENT = "contacts_app.view_event"


@pytest.fixture
def sent(track, make_workflow, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    Template.objects.create(
        name="Welcome", type=Template.TRANSACTIONAL, subject="Welcome, {{ firstName }}", html="x"
    )
    make_workflow(
        *chain(
            {"key": "mail", "type": "send_email", "config": {"template": "Welcome"}},
            {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "days"}},
        )
    )
    response = track.post(
        {"event": "user.signup", "email": "ann@example.com", "data": {"firstName": SECRET}}
    )
    assert response.status_code == 200
    drain()
    assert Message.objects.get().subject == f"Welcome, {SECRET}"
    return execution_of()


def test_the_execution_page_hides_email_subjects_without_contact_view(sent):
    url = reverse("admin:workflows_app_workflow_execution", args=[sent.workflow_id, sent.pk])
    hidden = client_for(VIEW_WORKFLOW, VIEW_EXECUTION, username="ops").get(url)
    assert hidden.status_code == 200
    assert SECRET not in hidden.content.decode()
    assert "subject hidden" in hidden.content.decode()
    shown = client_for(VIEW_WORKFLOW, VIEW_EXECUTION, VIEW_CONTACT, username="crm").get(url)
    assert SECRET in shown.content.decode()


def test_messages_and_events_need_the_contact_permission_too(sent):
    message = Message.objects.get()
    event = Event.objects.filter(name="user.signup").get()
    pages = [
        reverse("admin:templates_app_message_change", args=[message.pk]),
        reverse("admin:templates_app_message_changelist"),
        reverse("admin:contacts_app_event_change", args=[event.pk]),
    ]
    without = client_for(VIEW_MESSAGE, VIEW_EVENT, username="ops")
    for page in pages:
        response = without.get(page)
        assert response.status_code == 403, page
        assert SECRET not in response.content.decode()
    with_contacts = client_for(VIEW_MESSAGE, VIEW_EVENT, VIEW_CONTACT, username="crm")
    assert SECRET in with_contacts.get(pages[0]).content.decode()
    assert with_contacts.get(pages[2]).status_code == 200


@pytest.mark.parametrize(
    ("changelist", "bad"),
    [
        ("admin:contacts_app_contact_changelist", "not-a-uuid"),
        ("admin:workflows_app_execution_changelist", "x"),
        ("admin:workflows_app_workflow_changelist", "1e3"),
        ("admin:axes_accessattempt_changelist", "x"),
    ],
)
def test_a_malformed_list_selection_is_a_400(admin_client, db, changelist, bad):
    response = admin_client.post(
        reverse(changelist),
        {"action": "delete_selected", "_selected_action": [bad], "post": "yes"},
    )
    assert response.status_code == 400
    assert "not valid ids" in response.content.decode()


def test_a_deep_json_in_the_contact_form_is_a_form_error(admin_client, db):
    contact = Contact.objects.create(email="ann@example.com", data={"plan": "pro"})
    response = admin_client.post(
        reverse("admin:contacts_app_contact_change", args=[contact.pk]),
        {
            "email": "ann@example.com",
            "subscribed": "on",
            "data": "[" * 100_000,
            "events-TOTAL_FORMS": "0",
            "events-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "nested deeper" in response.content.decode()
    assert Contact.objects.get(pk=contact.pk).data == {"plan": "pro"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sample": "[" * 100_000}, "nested deeper"),
        ({"sample": '{"a": NaN}'}, "NaN"),
        ({"contact": "ann\x00@example.com"}, "not an email address"),
    ],
)
def test_the_template_preview_refuses_bad_controls_with_400(admin_client, db, fields, message):
    body = {"subject": "Hi", "html": "<p>x</p>", "text": "", **fields}
    response = admin_client.post(reverse("admin:templates_app_template_preview"), body)
    assert response.status_code == 400
    assert message in str(response.json())


def test_axes_attempts_are_still_listed(admin_client, db):
    AccessAttempt.objects.create(username="x", ip_address="10.0.0.1", failures_since_start=1)
    assert admin_client.get(reverse("admin:axes_accessattempt_changelist")).status_code == 200
