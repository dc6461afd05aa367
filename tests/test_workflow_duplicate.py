"""Duplicating a workflow: the service, the list's admin action and the page's button."""

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client

from tests.canvas_data import WAIT_GRAPH, start_runs
from workflows_app.graph import workflow_graph_document
from workflows_app.models import Step, Workflow
from workflows_app.services import workflow_create, workflow_duplicate

pytestmark = pytest.mark.django_db

GRAPH = {
    "steps": [
        {
            "key": "welcome",
            "type": "send_email",
            "name": "Say hello",
            "config": {"template": "Welcome"},
            "position": {"x": 10, "y": 20},
        },
        {
            "key": "check",
            "type": "condition",
            "name": "Pro?",
            "config": {"field": "contact.plan", "operator": "equals", "value": "pro"},
            "position": {"x": 10, "y": 200},
        },
        {
            "key": "done",
            "type": "exit",
            "name": "",
            "config": {"reason": "pro"},
            "position": {"x": 10, "y": 380},
        },
    ],
    "transitions": [
        {"from": "trigger", "to": "welcome", "branch": "next"},
        {"from": "welcome", "to": "check", "branch": "next"},
        {"from": "check", "to": "done", "branch": "yes"},
    ],
}


@pytest.fixture
def original(template):
    return workflow_create(
        name="Onboarding",
        trigger_event="user.signup",
        description="Welcome new people",
        allow_reentry=True,
        enabled=True,
        graph=GRAPH,
    )


def test_it_copies_settings_and_graph_into_a_disabled_copy(original):
    copy = workflow_duplicate(workflow=original, by="boss")

    copy.refresh_from_db()
    assert copy.pk != original.pk
    assert copy.name == "Onboarding (Copy)"
    assert copy.enabled is False
    assert copy.trigger_event == "user.signup"
    assert copy.description == "Welcome new people"
    assert copy.allow_reentry is True
    assert copy.graph_saved_by == "boss"
    assert copy.signing_secret != original.signing_secret
    assert workflow_graph_document(copy) == workflow_graph_document(original)
    # Its own rows, linked to the same template by key.
    welcome = Step.objects.get(workflow=copy, key="welcome")
    assert welcome.pk != Step.objects.get(workflow=original, key="welcome").pk
    assert welcome.template == Step.objects.get(workflow=original, key="welcome").template
    # The original is untouched.
    original.refresh_from_db()
    assert original.name == "Onboarding" and original.enabled is True


def test_it_numbers_further_copies(original):
    names = [workflow_duplicate(workflow=original).name for _ in range(3)]
    assert names == ["Onboarding (Copy)", "Onboarding (Copy 2)", "Onboarding (Copy 3)"]
    # A copy of a copy is named after the copy.
    copy = Workflow.objects.get(name="Onboarding (Copy)")
    assert workflow_duplicate(workflow=copy).name == "Onboarding (Copy) (Copy)"


def test_a_long_name_is_cut_to_fit(template):
    long = workflow_create(name="x" * 200, trigger_event="user.signup")
    copy = workflow_duplicate(workflow=long)
    assert copy.name == "x" * 193 + " (Copy)"
    assert len(workflow_duplicate(workflow=long).name) == 200


def test_a_workflow_with_active_runs_can_be_duplicated(transactional_db):
    busy = workflow_create(
        name="Nurture", trigger_event="user.signup", enabled=True, graph=WAIT_GRAPH
    )
    start_runs(busy, ["ann@example.com"])
    copy = workflow_duplicate(workflow=busy)
    assert copy.executions.count() == 0
    assert workflow_graph_document(copy) == workflow_graph_document(busy)


def test_an_empty_workflow_duplicates(db):
    empty = workflow_create(name="Empty", trigger_event="user.signup")
    copy = workflow_duplicate(workflow=empty)
    assert workflow_graph_document(copy) == {"steps": [], "transitions": []}


def staff(django_user_model, *codenames):
    user = django_user_model.objects.create_user("ed", "ed@example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_the_button_duplicates_and_lands_on_the_copy(original, admin_client):
    page = admin_client.get(f"/admin/workflows_app/workflow/{original.pk}/change/")
    assert 'data-testid="duplicate-workflow"' in page.content.decode()

    response = admin_client.post(f"/admin/workflows_app/workflow/{original.pk}/duplicate/")

    copy = Workflow.objects.get(name="Onboarding (Copy)")
    assert response.status_code == 302
    assert response.url == f"/admin/workflows_app/workflow/{copy.pk}/change/"
    assert any("as 'Onboarding (Copy)'" in m and "disabled" in m for m in messages_of(response))


def test_the_button_needs_post_and_the_add_permission(original, django_user_model):
    viewer = staff(django_user_model, "view_workflow", "change_workflow")
    page = viewer.get(f"/admin/workflows_app/workflow/{original.pk}/change/")
    assert page.status_code == 200
    assert "duplicate-workflow" not in page.content.decode()
    url = f"/admin/workflows_app/workflow/{original.pk}/duplicate/"
    assert viewer.post(url).status_code == 403
    assert Workflow.objects.count() == 1


def test_the_button_refuses_get(original, admin_client):
    url = f"/admin/workflows_app/workflow/{original.pk}/duplicate/"
    assert admin_client.get(url).status_code == 405
    assert Workflow.objects.count() == 1


def test_the_list_action_duplicates_one_and_opens_it(original, admin_client):
    response = admin_client.post(
        "/admin/workflows_app/workflow/",
        {"action": "duplicate", "_selected_action": [str(original.pk)]},
    )
    copy = Workflow.objects.get(name="Onboarding (Copy)")
    assert response.status_code == 302
    assert response.url == f"/admin/workflows_app/workflow/{copy.pk}/change/"
    assert copy.enabled is False


def test_the_list_action_duplicates_several(original, admin_client):
    other = workflow_create(name="Winback", trigger_event="user.churned")
    response = admin_client.post(
        "/admin/workflows_app/workflow/",
        {"action": "duplicate", "_selected_action": [str(original.pk), str(other.pk)]},
        follow=True,
    )
    assert set(Workflow.objects.values_list("name", flat=True)) == {
        "Onboarding",
        "Onboarding (Copy)",
        "Winback",
        "Winback (Copy)",
    }
    assert any("Duplicated 2 workflow(s)" in m for m in messages_of(response))


def test_the_list_action_needs_the_add_permission(original, django_user_model):
    client = staff(django_user_model, "view_workflow", "change_workflow")
    page = client.get("/admin/workflows_app/workflow/")
    assert 'value="duplicate"' not in page.content.decode()
    client.post(
        "/admin/workflows_app/workflow/",
        {"action": "duplicate", "_selected_action": [str(original.pk)]},
    )
    assert Workflow.objects.count() == 1
