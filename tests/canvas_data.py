"""Data the canvas and Executions tab tests share, built through the real services."""

from django.contrib.auth.models import Permission, User
from django.utils import timezone

from contacts_app.services import contact_upsert, event_record
from workflows_app import engine
from workflows_app.models import Execution, Workflow
from workflows_app.services import workflow_create

WAIT_GRAPH = {
    "steps": [
        {
            "key": "pause",
            "type": "delay",
            "name": "Pause",
            "config": {"amount": 2, "unit": "days"},
            "position": {"x": 0, "y": 0},
        },
        {
            "key": "done",
            "type": "exit",
            "name": "Done",
            "config": {"reason": "waited"},
            "position": {"x": 0, "y": 160},
        },
    ],
    "transitions": [{"from": "trigger", "to": "pause"}, {"from": "pause", "to": "done"}],
}


def workflow_with_waiting_runs(*, name="Nurture", emails=(), trigger="user.signup") -> Workflow:
    """An enabled workflow (Delay 2 days -> Exit) with one WAITING execution per email."""
    workflow = workflow_create(name=name, trigger_event=trigger, enabled=True, graph=WAIT_GRAPH)
    start_runs(workflow, emails)
    return workflow


def start_runs(workflow: Workflow, emails, data=None) -> list[Execution]:
    now = timezone.now()
    for email in emails:
        contact, _ = contact_upsert(email=email, data=data or {"plan": "pro"})
        event = event_record(contact=contact, name=workflow.trigger_event, data={"total": 42})
        engine.executions_start(contact=contact, event=event, now=now)
    ids = engine.executions_claim_due(now=now, limit=1000)
    engine.executions_advance(ids)
    return list(Execution.objects.filter(workflow=workflow, contact__email__in=emails))


def staff_user(username: str, *perms: str, password: str = "pw-secret-123") -> User:
    """A staff user with exactly these permissions ("app_label.codename")."""
    user = User.objects.create_user(username=username, password=password, is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user
