"""Runs started over the API, on real processes (gunicorn, qcluster, clock) and a real SMTP
server: POST /v1/workflows/<id>/executions sends its email once with the given context, and
POST .../executions/cancel-all stops waiting runs for good."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from contacts_app.services import contact_upsert
from templates_app.models import Template
from workflows_app.models import Execution, StepRun, Workflow
from workflows_app.services import workflow_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def manual_workflow(name: str, steps: list[dict]) -> Workflow:
    keys = [s["key"] for s in steps]
    transitions = [{"from": "trigger", "to": keys[0]}] + [
        {"from": a, "to": b} for a, b in zip(keys, keys[1:], strict=False)
    ]
    return workflow_create(
        name=name,
        trigger_type=Workflow.MANUAL,
        enabled=True,
        graph={"steps": steps, "transitions": transitions},
    )


def receipt_template() -> None:
    Template.objects.create(
        name="Receipt",
        type=Template.TRANSACTIONAL,
        subject="Order {{ orderId }} confirmed",
        html="<p>Thanks for order {{ event.orderId }}.</p>",
    )


def started(stack, api_key: str, workflow: Workflow, body: dict) -> dict:
    response = requests.post(
        f"{stack.web_url}/v1/workflows/{workflow.pk}/executions",
        json=body,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    assert response.status_code == 201, (response.status_code, response.text)
    return response.json()["data"]


def running_stack(make_stack):
    stack = make_stack()
    stack.start_web()
    stack.start_worker()
    stack.start_clock()
    return stack


def test_a_run_started_by_api_sends_its_email_once_with_the_context(make_stack, smtp, api_key):
    receipt_template()
    workflow = manual_workflow(
        "Order follow-up",
        [{"key": "receipt", "type": "send_email", "config": {"template": "Receipt"}}],
    )
    ann, _ = contact_upsert(email="ann@example.com")
    stack = running_stack(make_stack)

    data = started(
        stack, api_key, workflow, {"contactId": str(ann.pk), "context": {"orderId": "A-1"}}
    )
    assert data["status"] == "RUNNING" and data["context"] == {"orderId": "A-1"}
    execution = Execution.objects.get(pk=data["id"])

    def finished() -> bool:
        execution.refresh_from_db()
        return execution.status == Execution.COMPLETED

    stack.wait_until(finished, timeout=60, what="the run to complete")
    stack.wait_until(lambda: smtp.count() >= 1, timeout=30, what="the email at the SMTP server")
    time.sleep(1.5)  # a duplicate delivery would show up by now
    assert smtp.subjects_for("ann@example.com") == ["Order A-1 confirmed"]
    assert smtp.count() == 1

    # The API shows the run and its one step.
    reply = requests.get(
        f"{stack.web_url}/v1/workflows/{workflow.pk}/executions/{execution.pk}",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    assert reply.status_code == 200
    shown = reply.json()["data"]
    assert shown["status"] == "COMPLETED" and shown["finishedAt"]
    assert [(s["stepKey"], s["status"]) for s in shown["steps"]] == [("receipt", "completed")]
    assert shown["steps"][0]["messageId"] is not None


def test_cancel_all_stops_waiting_runs_for_good(make_stack, smtp, api_key):
    receipt_template()
    workflow = manual_workflow(
        "Slow follow-up",
        [
            {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "hours"}},
            {"key": "receipt", "type": "send_email", "config": {"template": "Receipt"}},
        ],
    )
    for name in ("ann", "bob", "cy", "dee"):
        contact_upsert(email=f"{name}@example.com")
    stack = running_stack(make_stack)

    def start_waiting(emails: list[str]):
        ids = [
            started(stack, api_key, workflow, {"email": e, "context": {"orderId": "B-2"}})["id"]
            for e in emails
        ]
        runs = Execution.objects.filter(pk__in=ids)
        stack.wait_until(
            lambda: runs.filter(status=Execution.WAITING).count() == len(ids),
            timeout=60,
            what="the workers to bring the runs to their Delay",
        )
        return runs

    runs = start_waiting(["ann@example.com", "bob@example.com", "cy@example.com"])
    # The hour passes while the clock is down: when it is back, their timers are due at once.
    stack.kill("clock")
    Execution.objects.filter(pk__in=runs).update(wake_at=timezone.now() - timedelta(seconds=1))

    reply = requests.post(
        f"{stack.web_url}/v1/workflows/{workflow.pk}/executions/cancel-all",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"success": True, "data": {"cancelled": 3}}
    stack.start_clock()

    # A control run, started after the cancel and due the same way, does go on and send: the
    # clock and workers are live, and would have sent the cancelled runs' emails too.
    control = start_waiting(["dee@example.com"])
    control.update(wake_at=timezone.now() - timedelta(seconds=1))
    stack.wait_until(lambda: smtp.count() >= 1, timeout=60, what="the control run's email")
    time.sleep(2)
    assert smtp.subjects_for("dee@example.com") == ["Order B-2 confirmed"]
    assert smtp.count() == 1
    assert set(runs.values_list("status", flat=True)) == {Execution.CANCELLED}
    assert not StepRun.objects.filter(execution__in=runs, step_key="receipt").exists()
    assert set(StepRun.objects.filter(execution__in=runs).values_list("status", flat=True)) == {
        StepRun.CANCELLED
    }
