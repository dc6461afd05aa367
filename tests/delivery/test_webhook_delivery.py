"""The Webhook step against a real local HTTP server: signatures, retries, SSRF guard."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook as Verifier
from werkzeug import Response

from tests.conftest import drain
from workflows_app.models import Execution, StepRun, Workflow


@pytest.fixture
def hook_flow(track, make_workflow, httpserver):
    def build(path="/hook", body=None, then_tag=True):
        config = {"url": httpserver.url_for(path), "timeout_seconds": 5}
        if body is not None:
            config["body"] = body
        steps = [{"key": "notify", "type": "webhook", "config": config}]
        transitions = [{"from": "trigger", "to": "notify"}]
        if then_tag:
            steps.append({"key": "tag", "type": "update_contact", "config": {"set": {"hooked": 1}}})
            transitions.append({"from": "notify", "to": "tag"})
        workflow = make_workflow(steps, transitions, trigger="order.paid")
        track.post(
            {
                "event": "order.paid",
                "email": "ann@example.com",
                "data": {"total": 42, "firstName": "Ann"},
            }
        )
        return workflow

    return build


def requests_to(httpserver, path="/hook"):
    return [r for r, _ in httpserver.log if r.path == path]


def test_it_posts_the_default_payload_signed_per_standard_webhooks(hook_flow, httpserver):
    httpserver.expect_request("/hook", method="POST").respond_with_json(
        {"ok": True, "tier": "gold"}
    )
    workflow = hook_flow()
    drain()
    [request] = requests_to(httpserver)
    payload = Verifier(Workflow.objects.get().signing_secret).verify(
        request.get_data(as_text=True), dict(request.headers)
    )
    execution = Execution.objects.get()
    assert payload["contact"]["email"] == "ann@example.com"
    assert payload["event"] == {"total": 42, "firstName": "Ann"}
    assert payload["workflow"] == {"id": workflow.pk, "name": workflow.name}
    assert payload["execution"]["id"] == execution.pk
    assert request.headers["Content-Type"] == "application/json"
    # The JSON reply is kept and offered to later steps under the step's key.
    assert execution.status == Execution.COMPLETED
    assert execution.context["notify"] == {"ok": True, "tier": "gold"}
    assert StepRun.objects.get(step_key="notify").output["response"]["tier"] == "gold"


def test_a_tampered_body_fails_verification(hook_flow, httpserver):
    from standardwebhooks.webhooks import WebhookVerificationError

    httpserver.expect_request("/hook").respond_with_data("ok")
    hook_flow()
    drain()
    [request] = requests_to(httpserver)
    with pytest.raises(WebhookVerificationError):
        Verifier(Workflow.objects.get().signing_secret).verify(
            request.get_data(as_text=True).replace("42", "43"), dict(request.headers)
        )


def test_the_body_template_renders_liquid_in_strings(hook_flow, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    hook_flow(
        body={
            "text": "Hi {{ firstName }}, total {{ event.total }}",
            "n": 1,
            "list": ["{{ email }}"],
        }
    )
    drain()
    [request] = requests_to(httpserver)
    assert json.loads(request.data) == {
        "text": "Hi Ann, total 42",
        "n": 1,
        "list": ["ann@example.com"],
    }


def test_retries_keep_the_same_webhook_id_and_wait_in_the_database(hook_flow, httpserver):
    httpserver.expect_oneshot_request("/hook").respond_with_data("down", status=503)
    httpserver.expect_oneshot_request("/hook").respond_with_data("ok", status=200)
    hook_flow()
    now = timezone.now()
    drain(now=now)
    execution = Execution.objects.get()
    assert execution.status == Execution.RUNNING
    assert execution.wake_at > now  # held in the database, no sleeping worker
    run = StepRun.objects.get(step_key="notify")
    assert (run.status, run.attempts) == (StepRun.STARTED, 1)
    assert "503" in run.error
    drain(now=now + timedelta(hours=2))
    first, second = requests_to(httpserver)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert Execution.objects.get().status == Execution.COMPLETED
    assert StepRun.objects.get(step_key="notify").attempts == 2


def test_retry_after_is_honoured(hook_flow, httpserver):
    httpserver.expect_request("/hook").respond_with_response(
        Response("slow down", status=429, headers={"Retry-After": "3600"})
    )
    hook_flow()
    now = timezone.now()
    drain(now=now)
    assert Execution.objects.get().wake_at >= now + timedelta(seconds=3600)


def test_after_the_last_attempt_it_fails_with_status_and_body(hook_flow, httpserver):
    httpserver.expect_request("/hook").respond_with_data("database on fire", status=500)
    hook_flow()
    now = timezone.now()
    for hours in range(0, 48, 2):
        drain(now=now + timedelta(hours=hours))
    execution = Execution.objects.get()
    assert execution.status == Execution.FAILED
    assert "HTTP 500: database on fire" in execution.error
    assert len(requests_to(httpserver)) == 6
    assert not StepRun.objects.filter(step_key="tag").exists()


def test_other_4xx_fail_at_once(hook_flow, httpserver):
    httpserver.expect_request("/hook").respond_with_data("no such hook", status=404)
    hook_flow()
    drain()
    execution = Execution.objects.get()
    assert execution.status == Execution.FAILED
    assert "HTTP 404: no such hook" in execution.error
    assert len(requests_to(httpserver)) == 1


def test_loopback_is_refused_unless_allowed(hook_flow, httpserver, settings):
    settings.WEBHOOK_ALLOW_LOOPBACK = False
    httpserver.expect_request("/hook").respond_with_data("ok")
    hook_flow()
    drain()
    execution = Execution.objects.get()
    assert execution.status == Execution.FAILED
    assert "private or reserved address" in execution.error
    assert requests_to(httpserver) == []


def test_a_dns_name_resolving_to_loopback_is_refused(track, make_workflow, httpserver, settings):
    settings.WEBHOOK_ALLOW_LOOPBACK = False
    httpserver.expect_request("/hook").respond_with_data("ok")
    url = (
        httpserver.url_for("/hook").replace("127.0.0.1", "localhost").replace("[::1]", "localhost")
    )
    make_workflow(
        [{"key": "n", "type": "webhook", "config": {"url": url}}],
        [{"from": "trigger", "to": "n"}],
        trigger="x",
    )
    track.post({"event": "x", "email": "ann@example.com"})
    drain()
    assert Execution.objects.get().status == Execution.FAILED
    assert requests_to(httpserver) == []


def test_a_redirect_to_a_private_address_is_refused(hook_flow, httpserver):
    # Loopback is allowed here (the test server); the redirect target 0.0.0.0 ("this host",
    # a reserved range) must still be refused before any connection is made.
    httpserver.expect_request("/hook").respond_with_response(
        Response("", status=307, headers={"Location": f"http://0.0.0.0:{httpserver.port}/inside"})
    )
    hook_flow()
    drain()
    execution = Execution.objects.get()
    assert execution.status == Execution.FAILED
    assert "private or reserved address" in execution.error
    assert requests_to(httpserver, "/inside") == []


def test_a_redirect_to_an_allowed_address_is_followed(hook_flow, httpserver):
    httpserver.expect_request("/hook").respond_with_response(
        Response("", status=307, headers={"Location": httpserver.url_for("/moved")})
    )
    httpserver.expect_request("/moved").respond_with_json({"moved": True})
    hook_flow()
    drain()
    assert Execution.objects.get().context["notify"] == {"moved": True}


def test_a_large_reply_is_read_up_to_the_cap_and_not_parsed(hook_flow, httpserver, settings):
    settings.WEBHOOK_MAX_RESPONSE_BYTES = 1000
    httpserver.expect_request("/hook").respond_with_json({"blob": "x" * 5000})
    hook_flow()
    drain()
    execution = Execution.objects.get()
    assert execution.status == Execution.COMPLETED
    assert "notify" not in execution.context


def test_only_http_urls_are_accepted(make_workflow):
    from workflows_app.graph import GraphError

    with pytest.raises(GraphError, match="URL"):
        make_workflow(
            [{"key": "n", "type": "webhook", "config": {"url": "file:///etc/passwd"}}],
            [{"from": "trigger", "to": "n"}],
        )
