"""A workflow written entirely in Plunk's step shapes, imported with `manage.py importworkflows`
and run by real processes down every branch (both of its wait, all three of its multi-branch
Condition, both of its yes/no Condition), each leading to a step that leaves a mark: emails to
a real SMTP server, webhooks to a real local HTTP server, the contacts afterwards."""

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

TIMEOUT = 4  # seconds (Plunk's unit): room for three activations to arrive over HTTP


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
        {
            "key": "solo_tag",
            "type": "update_contact",
            "config": {"updates": {"size": "solo"}, "subscriptionAction": "none"},
        },
        {
            "key": "between_tag",
            "type": "update_contact",
            "config": {"updates": {"size": "between"}},
        },
        # Plunk's binary Condition, strict: "free" equals "free".
        {
            "key": "free",
            "type": "condition",
            "config": {"field": "contact.data.plan", "operator": "equals", "value": "free"},
        },
        # Plunk's Exit without a reason: the run records Plunk's default, `exit_step`.
        {"key": "gone", "type": "exit", "config": {}},
        {
            "key": "winback",
            "type": "update_contact",
            "config": {"updates": {"winback": True}, "subscriptionAction": "subscribe"},
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
        {"from": "size", "branch": "solo", "to": "solo_tag"},
        {"from": "size", "branch": "default", "to": "between_tag"},
        {"from": "activated", "branch": "timeout", "to": "lapse"},
        {"from": "lapse", "to": "free"},
        {"from": "free", "branch": "yes", "to": "gone"},
        {"from": "free", "branch": "no", "to": "winback"},
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

    # Who takes which way: ann (3 seats) team, cat (1) solo, dan (2) default, all three
    # activated; bob (free) and eve (pro) time out, then yes and no. bob has unsubscribed: the
    # team still hears about him (CUSTOM skips the check).
    signups = {
        "ann@example.com": ({"plan": "pro", "seats": 3, "firstName": "Ann", "trial": True}, True),
        "bob@example.com": ({"plan": "free", "seats": 1}, False),
        "cat@example.com": ({"plan": "pro", "seats": 1, "firstName": "Cat"}, True),
        "dan@example.com": ({"plan": "pro", "seats": 2}, True),
        "eve@example.com": ({"plan": "pro", "seats": 5}, True),
    }
    for email, (data, subscribed) in signups.items():
        response = requests.post(
            f"{stack.web_url}/v1/track",
            json={"event": "user.signup", "email": email, "data": data, "subscribed": subscribed},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text

    activations = {
        "ann@example.com": {"via": "app", "devices": ["ios"]},
        "cat@example.com": {"via": "web"},
        "dan@example.com": {"via": "email"},
    }

    def waiting(emails):
        return Execution.objects.filter(
            contact__email__in=emails, status="WAITING", current_step__key="activated"
        ).count() == len(emails)

    stack.wait_until(lambda: waiting(activations), timeout=20, what="ann, cat, dan at the wait")
    for email, data in activations.items():
        stack.track(api_key, "user.activated", email, data)
    stack.wait_until(
        lambda: not Execution.objects.filter(status__in=Execution.ACTIVE).exists(),
        timeout=30,
        what="every run to finish",
        describe=lambda: str(
            list(StepRun.objects.values_list("execution__contact__email", "step_key", "error"))
        ),
    )

    contacts = {c.email.split("@")[0]: c for c in Contact.objects.all()}
    ann, bob, cat, dan, eve = (contacts[n] for n in ("ann", "bob", "cat", "dan", "eve"))
    activated = [
        ("alert", "completed", "next"),
        ("pause", "completed", "next"),
        ("activated", "completed", "event"),
        ("crm", "completed", "next"),
        ("tag", "completed", "next"),
        ("thanks", "completed", "next"),
    ]
    timed_out = [
        ("alert", "completed", "next"),
        ("pause", "completed", "next"),
        ("activated", "completed", "timeout"),
        ("lapse", "completed", "next"),
    ]
    assert history(ann.email) == [
        *activated,
        ("size", "completed", "team"),
        ("seats", "completed", "next"),
    ]
    assert history(cat.email) == [
        *activated,
        ("size", "completed", "solo"),
        ("solo_tag", "completed", "next"),
    ]
    assert history(dan.email) == [
        *activated,
        ("size", "completed", "default"),
        ("between_tag", "completed", "next"),
    ]
    assert history(bob.email) == [
        *timed_out,
        ("free", "completed", "yes"),
        ("gone", "completed", ""),
    ]
    assert history(eve.email) == [
        *timed_out,
        ("free", "completed", "no"),
        ("winback", "completed", "next"),
    ]
    ends = {
        e.contact.email.split("@")[0]: (e.status, e.exit_reason)
        for e in Execution.objects.select_related("contact")
    }
    assert ends == {
        "ann": ("COMPLETED", ""),
        "bob": ("EXITED", "exit_step"),
        "cat": ("COMPLETED", ""),
        "dan": ("COMPLETED", ""),
        "eve": ("COMPLETED", ""),
    }
    runs = {
        r.step_key: r
        for r in StepRun.objects.filter(execution__contact=bob).select_related("execution")
    }
    waited = runs["activated"].finished_at - runs["activated"].started_at
    assert TIMEOUT <= waited.total_seconds() < TIMEOUT + 5
    paused = runs["pause"].finished_at - runs["pause"].started_at
    assert 1.2 <= paused.total_seconds() < 6

    # Emails: the team got every alert (bob's too), the activated their thanks, no one else.
    assert sorted(smtp.subjects_for("team@example.com")) == [
        f"New signup: {email} on {data['plan']}" for email, (data, _) in sorted(signups.items())
    ]
    assert smtp.subjects_for("ann@example.com") == ["Thanks, Ann (app)"]
    assert smtp.subjects_for("cat@example.com") == ["Thanks, Cat (web)"]
    assert smtp.subjects_for("dan@example.com") == ["Thanks, there (email)"]
    assert smtp.subjects_for("bob@example.com") == []
    assert smtp.subjects_for("eve@example.com") == []
    alerts = Message.objects.filter(to_email="team@example.com")
    assert sorted(m.contact.email for m in alerts) == sorted(signups)

    # The webhooks: a PUT per activated contact, to its rendered path; ann's GET.
    puts = {req.path: (req, res) for req, res in httpserver.log if req.method == "PUT"}
    assert set(puts) == {f"/contacts/{c.pk}" for c in (ann, cat, dan)}
    [get] = [req for req, _ in httpserver.log if req.method == "GET"]
    assert len(httpserver.log) == 4
    request, response = puts[f"/contacts/{ann.pk}"]
    assert response.status_code == 200
    # The GET webhook: rendered path and query, and no body.
    assert (get.method, get.path, get.args["n"]) == ("GET", f"/seats/{ann.pk}", "3")
    assert get.get_data() == b""
    # ann's PUT: templated header, typed body, signed.
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
    assert json.loads(puts[f"/contacts/{cat.pk}"][0].get_data())["seats"] == 1

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
    assert (cat.subscribed, cat.data) == (
        True,
        {
            "plan": "pro",
            "seats": 1,
            "firstName": "Cat",
            "stage": "active",
            "via": "web",
            "size": "solo",
        },
    )
    assert (dan.subscribed, dan.data) == (
        True,
        {"plan": "pro", "seats": 2, "stage": "active", "via": "email", "size": "between"},
    )
    assert (bob.subscribed, bob.data) == (False, {"plan": "free", "seats": 1, "stage": "lapsed"})
    # eve: unsubscribed by `lapse`, subscribed again by `winback`.
    assert (eve.subscribed, eve.data) == (
        True,
        {"plan": "pro", "seats": 5, "stage": "lapsed", "winback": True},
    )

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
    assert configs["seats"] == {"url": configs["seats"]["url"], "method": "GET"}
    assert configs["tag"] == {"set": {"stage": "active"}, "unset": ["trial"]}
    assert configs["lapse"] == {"set": {"stage": "lapsed"}, "subscribed": False}
    assert configs["solo_tag"] == {"set": {"size": "solo"}}
    assert configs["winback"] == {"set": {"winback": True}, "subscribed": True}
    assert configs["gone"] == {}
    assert configs["thanks"] == {"template": "Thanks"}
