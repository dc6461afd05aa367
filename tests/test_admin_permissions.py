"""Contact data behind its permission: users holding exactly the permissions named, through the
admin as they would use it. Contact data, the execution context and step outputs (which carry
contact data) are shown only with contacts_app.view_contact; a view-only user gets the
read-only workflow page and the Executions tab, never a 500."""

import json

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from tests.canvas_data import staff_user
from tests.conftest import chain, drain
from workflows_app.models import Execution

VIEW_WORKFLOW = "workflows_app.view_workflow"
VIEW_EXECUTION = "workflows_app.view_execution"
VIEW_STEPRUN = "workflows_app.view_steprun"
VIEW_CONTACT = "contacts_app.view_contact"
VIEW_TEMPLATE = "templates_app.view_template"
CHANGE_TEMPLATE = "templates_app.change_template"

CONTACT_SECRET = "contact-secret-7d1f"  # stored on the contact (and in the trigger's data)
EVENT_SECRET = "event-only-secret-93ab"  # not persistent: only in the event, so the context
STEP_SECRET = "step-output-secret-51c0"  # set by Update Contact: in its output and the data
SECRETS = (CONTACT_SECRET, EVENT_SECRET, STEP_SECRET)


def client_for(*perms: str, username: str = "staff", email: str = "") -> Client:
    user = staff_user(username, *perms)
    if email:
        user.email = email
        user.save()
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def execution(track, make_workflow) -> Execution:
    make_workflow(
        *chain(
            {"key": "tag", "type": "update_contact", "config": {"set": {"stage": STEP_SECRET}}},
            {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "days"}},
        )
    )
    response = track.post(
        {
            "event": "user.signup",
            "email": "ann@example.com",
            "data": {
                "plan": CONTACT_SECRET,
                "coupon": {"value": EVENT_SECRET, "persistent": False},
            },
        }
    )
    assert response.status_code == 200
    drain()
    return Execution.objects.get(contact__email="ann@example.com", status=Execution.WAITING)


def execution_page(client, execution):
    url = reverse(
        "admin:workflows_app_workflow_execution", args=[execution.workflow_id, execution.pk]
    )
    return client.get(url)


def test_a_view_only_user_gets_the_read_only_workflow_page_and_its_tabs(execution):
    client = client_for(VIEW_WORKFLOW)
    workflow = execution.workflow
    page = client.get(reverse("admin:workflows_app_workflow_change", args=[workflow.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="workflow-canvas"' in html and workflow.trigger_event in html
    assert 'name="_save"' not in html  # nothing to save for this user
    canvas = client.get(reverse("admin:workflows_app_workflow_canvas", args=[workflow.pk]))
    assert canvas.status_code == 200 and canvas.json()["can_change"] is False
    tab = client.get(reverse("admin:workflows_app_workflow_executions", args=[workflow.pk]))
    assert tab.status_code == 200 and f"contact #{execution.contact_id}" in tab.content.decode()
    assert execution_page(client, execution).status_code == 200


def test_the_executions_tab_shows_emails_and_searches_only_for_contact_viewers(execution):
    url = reverse("admin:workflows_app_workflow_executions", args=[execution.workflow_id])
    viewer = client_for(VIEW_WORKFLOW)
    html = viewer.get(url).content.decode()
    assert "ann@example.com" not in html and f"contact #{execution.contact_id}" in html
    assert 'id="wf-search"' not in html
    # A search by email would say whose runs these are: it is not applied for this user.
    probe = viewer.get(url, {"q": "nobody@example.com"})
    assert probe.status_code == 200
    assert [row["execution"] for row in probe.context["rows"]] == [execution]
    assert "nobody@example.com" not in probe.content.decode()

    ops = client_for(VIEW_WORKFLOW, VIEW_CONTACT, username="ops")
    html = ops.get(url).content.decode()
    assert "ann@example.com" in html and 'id="wf-search"' in html
    assert ops.get(url, {"q": "nobody@example.com"}).context["rows"] == []


def test_cancelling_names_the_contact_only_to_contact_viewers(execution):
    url = reverse(
        "admin:workflows_app_workflow_execution_cancel",
        args=[execution.workflow_id, execution.pk],
    )
    cancel = "workflows_app.cancel_execution"
    hidden = client_for(VIEW_WORKFLOW, cancel).get(url).content.decode()
    assert "ann@example.com" not in hidden and f"contact #{execution.contact_id}" in hidden
    shown = client_for(VIEW_WORKFLOW, cancel, VIEW_CONTACT, username="ops").get(url)
    assert "ann@example.com" in shown.content.decode()


def test_the_execution_page_shows_contact_data_and_context_only_to_contact_viewers(execution):
    hidden = execution_page(client_for(VIEW_WORKFLOW), execution)
    assert hidden.status_code == 200
    html = hidden.content.decode()
    assert "ann@example.com" not in html  # the contact is named by its id...
    assert f"contact #{execution.contact_id}" in html
    assert "Update Contact" in html or "update_contact" in html
    for secret in SECRETS:  # ...and what the run knows about the contact is not shown
        assert secret not in html
    assert 'id="wf-data-hidden"' in html

    shown = execution_page(client_for(VIEW_WORKFLOW, VIEW_CONTACT, username="ops"), execution)
    html = shown.content.decode()
    for secret in SECRETS:
        assert secret in html
    assert "ann@example.com" in html
    assert 'id="wf-data-hidden"' not in html


def test_the_execution_admin_page_hides_context_and_step_outputs_without_contact_view(
    execution,
):
    url = reverse("admin:workflows_app_execution_change", args=[execution.pk])
    hidden = client_for(VIEW_EXECUTION, VIEW_STEPRUN).get(url)
    assert hidden.status_code == 200
    html = hidden.content.decode()
    assert "Attempts" in html  # the step history is there, without its outputs
    for secret in SECRETS:
        assert secret not in html
    shown = client_for(VIEW_EXECUTION, VIEW_STEPRUN, VIEW_CONTACT, username="ops").get(url)
    assert shown.status_code == 200
    html = shown.content.decode()
    assert EVENT_SECRET in html and STEP_SECRET in html


def test_the_execution_admin_names_the_contact_by_number_without_contact_view(execution):
    listing = reverse("admin:workflows_app_execution_changelist")
    page = reverse("admin:workflows_app_execution_change", args=[execution.pk])
    hidden = client_for(VIEW_EXECUTION, VIEW_STEPRUN)
    for response in (hidden.get(listing), hidden.get(page)):
        assert response.status_code == 200
        html = response.content.decode()
        assert "ann@example.com" not in html
        assert f"contact #{execution.contact_id}" in html
    # Searching by email would tell whose runs these are: ignored, and no search box.
    searched = hidden.get(listing, {"q": "nobody-matches-this"})
    assert f"contact #{execution.contact_id}" in searched.content.decode()
    assert 'id="searchbar"' not in searched.content.decode()

    ops = client_for(VIEW_EXECUTION, VIEW_STEPRUN, VIEW_CONTACT, username="ops")
    assert "ann@example.com" in ops.get(listing).content.decode()
    assert "ann@example.com" in ops.get(page).content.decode()
    assert "ann@example.com" not in ops.get(listing, {"q": "nobody"}).content.decode()


def test_errors_lose_the_contact_data_they_quote_without_contact_view(execution):
    # A refused recipient's address, a webhook receiver echoing its request, a URL rendered
    # from the contact's fields: what a failure may quote of the contact.
    execution.error = (
        "Step 'notify' failed: provider refused the message: SMTPRecipientsRefused: "
        "{'ann@example.com': (550, b'5.1.1 no such user')}"
    )
    execution.save(update_fields=["error"])
    run = execution.step_runs.order_by("id").first()
    run.error = f'HTTP 422: {{"echo": {{"email": "ann@example.com", "plan": "{CONTACT_SECRET}"}}}}'
    run.save(update_fields=["error"])
    admin_page = reverse("admin:workflows_app_execution_change", args=[execution.pk])

    hidden = client_for(VIEW_WORKFLOW, VIEW_EXECUTION, VIEW_STEPRUN)
    for response in (execution_page(hidden, execution), hidden.get(admin_page)):
        assert response.status_code == 200
        html = response.content.decode()
        assert "ann@example.com" not in html and CONTACT_SECRET not in html
        assert "SMTPRecipientsRefused" in html and "[address hidden]" in html  # what failed
        assert "HTTP 422: [reply hidden]" in html

    shown = client_for(VIEW_WORKFLOW, VIEW_EXECUTION, VIEW_STEPRUN, VIEW_CONTACT, username="ops")
    for response in (execution_page(shown, execution), shown.get(admin_page)):
        assert CONTACT_SECRET in response.content.decode()


def test_field_suggestions_leave_out_contact_keys_without_contact_view(execution):
    url = reverse("admin:workflows_app_workflow_canvas_fields", args=[execution.workflow_id])
    fields = client_for(VIEW_WORKFLOW).get(url).json()["fields"]
    assert "contact.plan" not in fields and "contact.stage" not in fields
    assert {"contact.email", "contact.subscribed", "event.plan"} <= set(fields)
    with_contacts = client_for(VIEW_WORKFLOW, VIEW_CONTACT, username="ops").get(url).json()
    assert {"contact.plan", "contact.stage"} <= set(with_contacts["fields"])


def preview(client, **fields):
    body = {"subject": "Hi {{ plan }}", "html": "<p>{{ plan }}</p>", "text": "", **fields}
    return client.post(reverse("admin:templates_app_template_preview"), body)


def test_the_template_preview_refuses_a_real_contact_without_contact_view(execution):
    client = client_for(VIEW_TEMPLATE)
    refused = preview(client, contact="ann@example.com")
    assert refused.status_code == 403
    (error,) = refused.json()["errors"]
    assert error["field"] == "contact" and "permission to view contacts" in error["message"]
    assert CONTACT_SECRET not in refused.content.decode()
    # Nor does it tell who exists: an unknown address gets the same answer.
    assert preview(client, contact="nobody@example.com").status_code == 403
    sample = preview(client, sample=json.dumps({"plan": "sample-plan"}))
    assert sample.status_code == 200 and sample.json()["subject"] == "Hi sample-plan"

    allowed = preview(
        client_for(VIEW_TEMPLATE, VIEW_CONTACT, username="ops"), contact="ann@example.com"
    )
    assert allowed.status_code == 200 and allowed.json()["subject"] == f"Hi {CONTACT_SECRET}"


def test_a_test_send_for_a_real_contact_needs_contact_view(execution, template):
    client = client_for(VIEW_TEMPLATE, CHANGE_TEMPLATE, email="me@example.com")
    url = reverse("admin:templates_app_template_send_test", args=[template.pk])
    client.post(url, {"contact": "ann@example.com", "subject": "Hi {{ plan }}"})
    assert mail.outbox == []
    client.post(url, {"subject": "Hi {{ plan }}"})  # sample data is fine
    assert [m.subject for m in mail.outbox] == ["[Test] Hi pro"]
    allowed = client_for(
        VIEW_TEMPLATE, CHANGE_TEMPLATE, VIEW_CONTACT, username="ops", email="ops@example.com"
    )
    allowed.post(url, {"contact": "ann@example.com", "subject": "Hi {{ plan }}"})
    assert mail.outbox[-1].subject == f"[Test] Hi {CONTACT_SECRET}"


def test_the_execution_page_hides_where_an_email_went_without_contact_view(
    track, template, make_workflow
):
    make_workflow(
        *chain(
            {"key": "hello", "type": "send_email", "config": {"template": "Welcome"}},
            {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "days"}},
        )
    )
    assert track.post({"event": "user.signup", "email": "bea@example.com"}).status_code == 200
    drain()
    execution = Execution.objects.get(contact__email="bea@example.com")
    assert execution.step_runs.filter(message__isnull=False).exists()  # an email went out
    html = execution_page(client_for(VIEW_WORKFLOW), execution).content.decode()
    assert "bea@example.com" not in html and f"contact #{execution.contact_id}" in html
    shown = execution_page(client_for(VIEW_WORKFLOW, VIEW_CONTACT, username="ops"), execution)
    assert "to bea@example.com" in shown.content.decode()


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (
            "Step 'hook' failed: rendered URL 'https://x.test/u/ann@example.com?plan=gold': "
            "refused: a private address",
            "Step 'hook' failed: rendered URL [hidden]: refused: a private address",
        ),
        ("HTTP 500: upstream said ann@example.com", "HTTP 500: [reply hidden]"),
        (
            "gave up after 5 attempts; last: ConnectTimeout",
            "gave up after 5 attempts; last: ConnectTimeout",
        ),
    ],
)
def test_what_an_error_keeps_of_the_failure_without_contact_data(error, shown):
    from workflows_app.admin_views import error_redacted

    assert error_redacted(error) == shown
