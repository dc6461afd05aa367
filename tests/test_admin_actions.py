"""The Execution admin's bulk cancel action: one service call, permission-checked."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from tests.conftest import chain, drain
from workflows_app import engine
from workflows_app.models import Execution, StepRun

DELAY = {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "days"}}


@pytest.fixture
def waiting_runs(track, make_workflow):
    make_workflow(*chain(dict(DELAY)))
    for name in ("ann", "bob", "cy"):
        track.post({"event": "user.signup", "email": f"{name}@example.com"})
    drain()
    assert Execution.objects.filter(status=Execution.WAITING).count() == 3
    return list(Execution.objects.order_by("id"))


def staff_client(django_user_model, *, can_cancel):
    user = django_user_model.objects.create_user("ops", "ops@example.com", "pw", is_staff=True)
    perms = ["view_execution"] + (["cancel_execution"] if can_cancel else [])
    user.user_permissions.set(Permission.objects.filter(codename__in=perms))
    client = Client()
    client.force_login(user)
    return client


def post_cancel(client, runs):
    return client.post(
        "/admin/workflows_app/execution/",
        {"action": "cancel", "_selected_action": [str(r.pk) for r in runs]},
    )


def test_the_cancel_action_cancels_the_selected_runs_only(waiting_runs, django_user_model):
    client = staff_client(django_user_model, can_cancel=True)
    post_cancel(client, waiting_runs[:2])
    statuses = list(Execution.objects.order_by("id").values_list("status", flat=True))
    assert statuses == [Execution.CANCELLED, Execution.CANCELLED, Execution.WAITING]
    assert StepRun.objects.filter(status=StepRun.CANCELLED).count() == 2
    assert Execution.objects.get(pk=waiting_runs[0].pk).exit_reason == "Cancelled by ops"


def test_the_cancel_action_needs_the_permission(waiting_runs, django_user_model):
    client = staff_client(django_user_model, can_cancel=False)
    page = client.get("/admin/workflows_app/execution/")
    assert page.status_code == 200  # the list is visible to this user...
    assert "Cancel selected executions" not in page.content.decode()  # ...the action is not
    post_cancel(client, waiting_runs)
    assert not Execution.objects.filter(status=Execution.CANCELLED).exists()


def test_cancelling_counts_only_runs_that_were_still_active(waiting_runs):
    engine.execution_cancel(execution=waiting_runs[0])
    assert engine.executions_cancel(ids=[r.pk for r in waiting_runs]) == 2
    assert engine.executions_cancel(ids=[r.pk for r in waiting_runs]) == 0
