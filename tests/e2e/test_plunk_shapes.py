"""A workflow written entirely in Plunk's step shapes, imported with `manage.py importworkflows`
and run by real processes down both branches of its wait: emails to a real SMTP server, a
webhook to a real local HTTP server, the contacts afterwards."""

import json
import re
import subprocess

import pytest
import requests
from standardwebhooks.webhooks import Webhook as Verifier

from contacts_app.models import Contact
from templates_app.models import Message
from tests.e2e.conftest import PYTHON, ROOT
from workflows_app.files import document_export
from workflows_app.models import Execution, StepRun, Workflow

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TIMEOUT = 3  # seconds (Plunk's unit): room for ann's event to arrive over HTTP


def plunk_document(hook_url: str) -> dict:
    templates = [
        {
            "name": "Team alert",
            "type": "marketing",
            "subject": "New signup: {{ email }} on {{ plan }}",
            "html": "<p>{{ email }} signed up.</p>",
        },
        {
            "name": "Thanks",
            "type": "marketing",
            "subject": "Thanks, {{ firstName ?? there }} ({{ via }})",
            "html": "<p>Thanks!</p><a href='{{ unsubscribeUrl }}'>Unsubscribe</a>",
        },
    ]
    steps = [
        {
            "key": "alert",
            "type": "send_email",
            "config": {
                "templateId": "Team alert",
                "recipient": {"type": "CUSTOM", "customEmail": "team@example.com"},
            },
        },
        {"key": "pause", "type": "delay", "config": {"amount": 0.02, "unit": "minutes"}},
        {
            "key": "activated",
            "type": "wait_for_event",
            "config": {"eventName": "user.activated", "timeout": TIMEOUT},
        },
        {
            "key": "crm",
            "type": "webhook",
            "config": {
                "url": hook_url + "/contacts/{{ id }}",
                "method": "PUT",
                "headers": {"X-Plan": "plan-{{ plan }}"},
                # `via` and `devices` come from the resuming event, merged into the context.
                "body": {
                    "email": "{{ email }}",
                    "seats": "{{ seats }}",
                    "via": "{{ via }}",
                    "devices": "{{ devices }}",
                    "note": "{{ firstName }} has {{ seats }} seats",
                },
            },
        },
        {
            "key": "tag",
            "type": "update_contact",
            "config": {
                "updates": {"stage": "active", "trial": None, "firstName": ""},
                "subscriptionAction": "none",
            },
        },
        {"key": "thanks", "type": "send_email", "config": {"templateId": "Thanks"}},
        {
            # Plunk's multi-branch Condition: first match wins, else `default`.
            "key": "size",
            "type": "condition",
            "config": {
                "mode": "multi",
                "field": "data.seats",
                "branches": [
                    {"id": "solo", "name": "Solo", "operator": "lessThan", "value": 2},
                    {"id": "team", "name": "Team", "operator": "greaterThanOrEqual", "value": 3},
                ],
            },
        },
        {
            "key": "seats",
            "type": "webhook",
            "config": {"url": hook_url + "/seats/{{ id }}?n={{ seats }}", "method": "GET"},
        },
        {
            "key": "lapse",
            "type": "update_contact",
            "config": {"updates": {"stage": "lapsed"}, "subscriptionAction": "unsubscribe"},
        },
        # Plunk's binary Condition, strict: "free" equals "free", nothing on `no`.
        {
            "key": "free",
            "type": "condition",
            "config": {"field": "contact.data.plan", "operator": "equals", "value": "free"},
        },
    ]
    transitions = [
        {"from": "trigger", "to": "alert"},
        {"from": "alert", "to": "pause"},
        {"from": "pause", "to": "activated"},
        {"from": "activated", "branch": "event", "to": "crm"},
        {"from": "crm", "to": "tag"},
        {"from": "tag", "to": "thanks"},
        {"from": "thanks", "to": "size"},
        {"from": "size", "branch": "team", "to": "seats"},
        {"from": "activated", "branch": "timeout", "to": "lapse"},
        {"from": "lapse", "to": "free"},
    ]
    workflow = {
        "name": "Plunk onboarding",
        "trigger_event": "user.signup",
        "enabled": True,
        "steps": steps,
        "transitions": transitions,
    }
    return {"templates": templates, "workflows": [workflow]}


def history(email):
    return [
        (r.step_key, r.status, r.branch)
        for r in StepRun.objects.filter(execution__contact__email=email).order_by("id")
    ]


def test_a_plunk_shaped_workflow_imports_and_runs_every_branch(
    make_stack, api_key, smtp, httpserver, tmp_path
):
    httpserver.expect_request(
        re.compile(r"/contacts/[0-9a-f-]{36}"), method="PUT"
    ).respond_with_json({"ok": True})
    httpserver.expect_request(re.compile(r"/seats/[0-9a-f-]{36}"), method="GET").respond_with_json(
        {"ok": True}
    )
    stack = make_stack(WEBHOOK_ALLOW_LOOPBACK="true")
    document = tmp_path / "plunk.json"
    document.write_text(json.dumps(plunk_document(httpserver.url_for("").rstrip("/"))))
    imported = subprocess.run(
        [PYTHON, "manage.py", "importworkflows", str(document)],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 0, imported.stderr
    workflow = Workflow.objects.get(name="Plunk onboarding")

    stack.start_web()
    stack.start_worker()
    stack.start_clock()

    # bob has unsubscribed: the team still hears about him (CUSTOM skips the check).
    for email, data, subscribed in (
        ("ann@example.com", {"plan": "pro", "seats": 3, "firstName": "Ann", "trial": True}, True),
        ("bob@example.com", {"plan": "free", "seats": 1}, False),
    ):
        response = requests.post(
            f"{stack.web_url}/v1/track",
            json={"event": "user.signup", "email": email, "data": data, "subscribed": subscribed},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text

    def waiting(email):
        return Execution.objects.filter(
            contact__email=email, status="WAITING", current_step__key="activated"
        ).exists()

    stack.wait_until(lambda: waiting("ann@example.com"), timeout=20, what="ann at the wait")
    stack.track(api_key, "user.activated", "ann@example.com", {"via": "app", "devices": ["ios"]})
    stack.wait_until(
        lambda: not Execution.objects.filter(status__in=Execution.ACTIVE).exists(),
        timeout=30,
        what="both runs to finish",
        describe=lambda: str(
            list(StepRun.objects.values_list("execution__contact__email", "step_key", "error"))
        ),
    )

    ann = Contact.objects.get(email="ann@example.com")
    bob = Contact.objects.get(email="bob@example.com")
    assert history(ann.email) == [
        ("alert", "completed", "next"),
        ("pause", "completed", "next"),
        ("activated", "completed", "event"),
        ("crm", "completed", "next"),
        ("tag", "completed", "next"),
        ("thanks", "completed", "next"),
        ("size", "completed", "team"),
        ("seats", "completed", "next"),
    ]
    assert history(bob.email) == [
        ("alert", "completed", "next"),
        ("pause", "completed", "next"),
        ("activated", "completed", "timeout"),
        ("lapse", "completed", "next"),
        ("free", "completed", "yes"),
    ]
    runs = {
        r.step_key: r
        for r in StepRun.objects.filter(execution__contact=bob).select_related("execution")
    }
    waited = runs["activated"].finished_at - runs["activated"].started_at
    assert TIMEOUT <= waited.total_seconds() < TIMEOUT + 5
    paused = runs["pause"].finished_at - runs["pause"].started_at
    assert 1.2 <= paused.total_seconds() < 6

    # Emails: the team got both alerts (bob's too), ann her thanks, bob nothing.
    assert sorted(smtp.subjects_for("team@example.com")) == [
        "New signup: ann@example.com on pro",
        "New signup: bob@example.com on free",
    ]
    assert smtp.subjects_for("ann@example.com") == ["Thanks, Ann (app)"]
    assert smtp.subjects_for("bob@example.com") == []
    alerts = Message.objects.filter(to_email="team@example.com")
    assert sorted(m.contact.email for m in alerts) == ["ann@example.com", "bob@example.com"]

    # The webhook: PUT to the rendered path, templated header, typed body, signed.
    [(request, response), (get, _)] = httpserver.log
    assert response.status_code == 200
    # The GET webhook: rendered path and query, and no body.
    assert (get.method, get.path, get.args["n"]) == ("GET", f"/seats/{ann.pk}", "3")
    assert get.get_data() == b""
    assert (request.method, request.path) == ("PUT", f"/contacts/{ann.pk}")
    assert request.headers["X-Plan"] == "plan-pro"
    body = request.get_data(as_text=True)
    assert json.loads(body) == {
        "email": "ann@example.com",
        "seats": 3,
        "via": "app",
        "devices": ["ios"],
        "note": "Ann has 3 seats",
    }
    Verifier(workflow.signing_secret).verify(body, dict(request.headers))

    # The contacts afterwards (tracked data lands on the contact too: `via`, `devices`).
    assert (ann.subscribed, ann.data) == (
        True,
        {
            "plan": "pro",
            "seats": 3,
            "firstName": "Ann",
            "stage": "active",
            "via": "app",
            "devices": ["ios"],
        },
    )
    assert (bob.subscribed, bob.data) == (False, {"plan": "free", "seats": 1, "stage": "lapsed"})

    # Stored, and exported, in our canonical shapes.
    configs = {
        s["key"]: s["config"]
        for s in document_export(["Plunk onboarding"])["workflows"][0]["steps"]
    }
    assert configs["alert"] == {
        "template": "Team alert",
        "recipient": {"type": "CUSTOM", "customEmail": "team@example.com"},
    }
    assert configs["activated"] == {
        "event": "user.activated",
        "timeout": {"amount": TIMEOUT, "unit": "seconds"},
    }
    assert configs["crm"]["method"] == "PUT"
    assert configs["tag"] == {"set": {"stage": "active"}, "unset": ["trial"], "subscribed": None}
    assert configs["lapse"] == {"set": {"stage": "lapsed"}, "unset": [], "subscribed": False}
    assert configs["thanks"] == {"template": "Thanks"}
