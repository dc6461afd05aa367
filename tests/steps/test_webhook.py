import json

import pytest
import time_machine
from werkzeug import Response

from templates_app.rendering import render_typed_json
from tests.conftest import chain, drain
from tests.flow import T0, execution_of, history, track_ok
from workflows_app.files import document_export
from workflows_app.graph import GraphError
from workflows_app.models import Execution, StepRun
from workflows_app.steps import webhook as webhook_module


@pytest.fixture(autouse=True)
def _allow_loopback(settings):
    # The local test server listens on loopback, which production refuses by default.
    settings.WEBHOOK_ALLOW_LOOPBACK = True


def hook(url, key="notify", **config):
    return {"key": key, "type": "webhook", "name": "Notify CRM", "config": {"url": url, **config}}


def after(key="after"):
    return {"key": key, "type": "update_contact", "config": {"set": {"after_webhook": True}}}


def bodies(httpserver):
    return [json.loads(request.get_data()) for request, _ in httpserver.log]


def test_it_posts_the_default_payload(httpserver, track, make_workflow):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    workflow = make_workflow(*chain(hook(httpserver.url_for("/hook"))), name="CRM sync")
    track_ok(track, data={"plan": "pro", "order": {"total": 5}})
    drain()

    ex = execution_of()
    assert ex.status == Execution.COMPLETED, ex.error
    [(request, _)] = httpserver.log
    assert request.headers["Content-Type"].startswith("application/json")
    body = json.loads(request.get_data())
    assert body == {
        "contact": {
            "id": str(ex.contact_id),
            "email": "ann@example.com",
            "subscribed": True,
            "data": {"plan": "pro", "order": {"total": 5}},
        },
        "event": {"plan": "pro", "order": {"total": 5}},
        "workflow": {"id": workflow.pk, "name": "CRM sync"},
        "execution": {
            "id": ex.pk,
            "startedAt": ex.started_at.isoformat(),  # Plunk's name
            "started_at": ex.started_at.isoformat(),
        },
    }
    run = ex.step_runs.get()
    assert request.headers["webhook-id"] == f"exec-{ex.pk}-run-{run.pk}"
    assert (run.status, run.output["status"]) == (StepRun.COMPLETED, 200)


def test_it_sends_configured_headers_and_a_configured_body(httpserver, track, make_workflow):
    httpserver.expect_request(
        "/hook", method="POST", headers={"X-Api-Key": "s3cret"}, json={"kind": "fixed", "n": [1]}
    ).respond_with_data("ok")
    config = {"headers": {"X-Api-Key": "s3cret"}, "body": {"kind": "fixed", "n": [1]}}
    make_workflow(*chain(hook(httpserver.url_for("/hook"), **config)))
    track_ok(track)
    drain()
    assert execution_of().status == Execution.COMPLETED
    assert len(httpserver.log) == 1
    assert httpserver.log[0][1].status_code == 200  # the matcher accepted headers and body


def test_it_adds_a_json_reply_to_the_context_under_the_step_key(httpserver, track, make_workflow):
    httpserver.expect_request("/hook").respond_with_json({"score": 42, "tier": "gold"})
    steps = [
        hook(httpserver.url_for("/hook")),
        {
            "key": "high",
            "type": "condition",
            "config": {"field": "event.notify.score", "operator": "greaterThan", "value": 40},
        },
        after(),
    ]
    transitions = [
        {"from": "trigger", "to": "notify"},
        {"from": "notify", "to": "high"},
        {"from": "high", "branch": "yes", "to": "after"},
    ]
    make_workflow(steps, transitions)
    track_ok(track, data={"plan": "pro"})
    drain()

    ex = execution_of()
    assert ex.context == {"plan": "pro", "notify": {"score": 42, "tier": "gold"}}
    assert ex.step_runs.get(step_key="notify").output["response"] == {"score": 42, "tier": "gold"}
    assert history(ex)[1:] == [
        ("high", StepRun.COMPLETED, "yes"),
        ("after", StepRun.COMPLETED, "next"),
    ]


def test_a_reply_that_is_not_json_leaves_the_context_alone(httpserver, track, make_workflow):
    httpserver.expect_request("/hook").respond_with_data("<html>thanks</html>", status=202)
    make_workflow(*chain(hook(httpserver.url_for("/hook"))))
    track_ok(track, data={"plan": "pro"})
    drain()
    ex = execution_of()
    assert ex.status == Execution.COMPLETED
    assert ex.context == {"plan": "pro"}


def test_a_server_error_is_retried_later_with_the_same_webhook_id(httpserver, track, make_workflow):
    httpserver.expect_oneshot_request("/hook").respond_with_data("down", status=503)
    httpserver.expect_oneshot_request("/hook").respond_with_data("slow down", status=429)
    httpserver.expect_request("/hook").respond_with_json({"ok": True})
    make_workflow(*chain(hook(httpserver.url_for("/hook")), after()))

    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        drain(now=T0)
        ex = execution_of()
        run = ex.step_runs.get()
        assert (ex.status, ex.current_step.key) == (Execution.RUNNING, "notify")
        assert ex.wake_at > T0  # the retry waits in the database, not in a worker
        assert (run.status, run.attempts) == (StepRun.STARTED, 1)
        assert "HTTP 503" in run.error
        assert len(httpserver.log) == 1

        # Not before its time.
        assert drain(now=T0) == 0
        assert len(httpserver.log) == 1

        traveller.move_to(ex.wake_at)
        drain(now=ex.wake_at)
        ex.refresh_from_db()
        run.refresh_from_db()
        assert run.attempts == 2
        assert "HTTP 429" in run.error
        assert ex.status == Execution.RUNNING

        traveller.move_to(ex.wake_at)
        drain(now=ex.wake_at)

    ex.refresh_from_db()
    assert ex.status == Execution.COMPLETED
    assert history(ex) == [
        ("notify", StepRun.COMPLETED, "next"),
        ("after", StepRun.COMPLETED, "next"),
    ]
    assert ex.step_runs.get(step_key="notify").attempts == 3
    ids = {request.headers["webhook-id"] for request, _ in httpserver.log}
    assert ids == {f"exec-{ex.pk}-run-{run.pk}"}
    assert len(httpserver.log) == 3


def test_it_fails_after_the_last_retry(httpserver, track, make_workflow):
    httpserver.expect_request("/hook").respond_with_data("broken", status=500)
    make_workflow(*chain(hook(httpserver.url_for("/hook")), after()))
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        drain(now=T0)
        for _ in range(webhook_module.Webhook.retry_policy.max_attempts - 1):
            ex = execution_of()
            assert ex.status == Execution.RUNNING
            traveller.move_to(ex.wake_at)
            drain(now=ex.wake_at)

    ex = execution_of()
    assert ex.status == Execution.FAILED
    assert "HTTP 500" in ex.error and "Notify CRM" in ex.error
    assert len(httpserver.log) == webhook_module.Webhook.retry_policy.max_attempts
    assert history(ex) == [("notify", StepRun.FAILED, "")]


@pytest.mark.parametrize("status", [400, 404, 410, 422])
def test_a_client_error_fails_the_run_at_once(httpserver, track, make_workflow, status):
    httpserver.expect_request("/hook").respond_with_data("no such hook", status=status)
    make_workflow(*chain(hook(httpserver.url_for("/hook")), after()))
    track_ok(track)
    drain()

    ex = execution_of()
    assert ex.status == Execution.FAILED
    assert f"HTTP {status}" in ex.error
    assert "Notify CRM" in ex.error
    run = ex.step_runs.get()
    assert run.status == StepRun.FAILED
    assert f"HTTP {status}" in run.error
    assert len(httpserver.log) == 1
    assert "after_webhook" not in ex.contact.data


def test_a_connection_error_is_retried(httpserver, track, make_workflow):
    url = httpserver.url_for("/hook")
    httpserver.stop()  # nothing listens on the port now
    try:
        make_workflow(*chain(hook(url)))
        with time_machine.travel(T0, tick=False):
            track_ok(track)
            drain(now=T0)
        ex = execution_of()
        assert ex.status == Execution.RUNNING
        assert ex.wake_at > T0
        run = ex.step_runs.get()
        assert (run.status, run.attempts) == (StepRun.STARTED, 1)
        assert "Connection" in run.error
    finally:
        httpserver.start()


def test_each_visit_gets_its_own_webhook_id(httpserver, track, make_workflow):
    httpserver.expect_request("/hook").respond_with_handler(lambda request: Response("ok"))
    make_workflow(*chain(hook(httpserver.url_for("/hook"))), reentry=True)
    track_ok(track)
    drain()
    track_ok(track)
    drain()
    ids = [request.headers["webhook-id"] for request, _ in httpserver.log]
    assert len(ids) == 2 and len(set(ids)) == 2
    assert [b["execution"]["id"] for b in bodies(httpserver)] == sorted(
        Execution.objects.values_list("id", flat=True)
    )


# --- Plunk's shape: methods, Liquid in the URL, headers and a typed body ------------------------


def track_plunk(track, **data):
    return track_ok(
        track,
        data={
            "plan": "pro",
            "seats": 3,
            "price": 9.5,
            "vip": True,
            "tags": ["a", "b"],
            "address": {"city": "Lyon"},
            "orderId": "A-17",
            **data,
        },
    )


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "POST"])
def test_it_sends_with_the_method_and_renders_url_headers_and_a_typed_body(
    httpserver, track, make_workflow, method
):
    httpserver.expect_request(f"/orders/A-17/{method.lower()}", method=method).respond_with_json(
        {"stored": True}
    )
    config = {
        "url": httpserver.url_for("/orders/{{ orderId }}/") + method.lower(),
        "method": method,
        "headers": {"Authorization": "Bearer {{ plan }}-key", "X-Email": "{{ email }}"},
        "body": {
            "seats": "{{ seats }}",
            "price": "{{price}}",
            "vip": "{{ vip }}",
            "tags": "{{ tags }}",
            "address": "{{ address }}",
            "missing": "{{ nothing }}",
            "fallback": "{{ nothing ?? there }}",
            "filtered": "{{ seats | plus: 1 }}",
            "text": "Plan {{ plan }} for {{ seats }} seats",
            "spaced": "  {{ plan }}  ",
            "nested": [{"city": "{{ address.city }}"}, "{{ data.plan }}", 7, None],
            "literal": "no liquid",
        },
    }
    make_workflow(*chain(hook(config.pop("url"), **config)))
    track_plunk(track)
    drain()

    ex = execution_of()
    assert ex.status == Execution.COMPLETED, ex.error
    [(request, response)] = httpserver.log
    assert response.status_code == 200
    assert request.headers["Authorization"] == "Bearer pro-key"
    assert request.headers["X-Email"] == "ann@example.com"
    assert json.loads(request.get_data()) == {
        "seats": 3,
        "price": 9.5,
        "vip": True,
        "tags": ["a", "b"],
        "address": {"city": "Lyon"},
        "missing": None,
        "fallback": "there",
        "filtered": 4,
        "text": "Plan pro for 3 seats",
        "spaced": "pro",
        "nested": [{"city": "Lyon"}, "pro", 7, None],
        "literal": "no liquid",
    }
    output = ex.step_runs.get().output
    assert {k: output[k] for k in ("url", "method", "statusCode", "success", "response")} == {
        "url": httpserver.url_for(f"/orders/A-17/{method.lower()}"),
        "method": method,
        "statusCode": 200,
        "success": True,
        "response": {"stored": True},
    }


def test_get_sends_no_body_and_is_still_signed(httpserver, track, make_workflow):
    httpserver.expect_request("/lookup", method="GET", query_string="plan=pro").respond_with_json(
        {"credit": 10}
    )
    url = httpserver.url_for("/lookup") + "?plan={{ plan }}"
    make_workflow(*chain(hook(url, method="get", body={"ignored": "{{ plan }}"})))
    track_plunk(track)
    drain()

    ex = execution_of()
    assert ex.status == Execution.COMPLETED, ex.error
    [(request, _)] = httpserver.log
    assert request.method == "GET"
    assert request.get_data() == b""
    assert "Content-Type" not in request.headers
    run = ex.step_runs.get()
    assert request.headers["webhook-id"] == f"exec-{ex.pk}-run-{run.pk}"
    assert request.headers["webhook-signature"].startswith("v1,")
    assert ex.context["notify"] == {"credit": 10}


def test_it_stores_plunks_shape_canonically(make_workflow):
    config = {
        "url": "  https://hooks.example.com/{{ id }}  ",
        "method": "put",
        "headers": {"X-Plan": "{{ plan }}"},
        "body": {"n": "{{ seats }}"},
    }
    workflow = make_workflow(*chain(hook(**config)))
    stored = {
        "url": "https://hooks.example.com/{{ id }}",
        "method": "PUT",
        "headers": {"X-Plan": "{{ plan }}"},
        "body": {"n": "{{ seats }}"},
    }
    assert workflow.steps.get().config == stored
    [exported] = document_export([workflow.name])["workflows"][0]["steps"]
    assert exported["config"] == stored
    # Ours is kept as written (no method added).
    plain = make_workflow(*chain(hook("https://hooks.example.com/x")), name="plain")
    assert plain.steps.get().config == {"url": "https://hooks.example.com/x"}


@pytest.mark.parametrize(
    "config, message",
    [
        ({"url": "{{ base }}/hook"}, "must start with http:// or https://"),
        ({"url": "ftp://example.com/{{ x }}"}, "must start with http:// or https://"),
        ({"url": "https://exa mple.com/"}, "not a valid URL"),
        ({"url": "https://example.com/", "method": "TRACE"}, "config.method"),
        ({"url": "https://example.com/", "headers": {"Bad Name": "x"}}, "header name"),
        ({"url": "https://example.com/", "headers": {"X-A": "a\r\nX-B: b"}}, "line break"),
    ],
)
def test_it_refuses_a_bad_config_at_save(make_workflow, config, message):
    with pytest.raises(GraphError) as caught:
        make_workflow(*chain({"key": "n", "type": "webhook", "config": config}))
    assert message in str(caught.value)


def test_the_ssrf_guard_judges_the_rendered_url(httpserver, track, make_workflow, settings):
    settings.WEBHOOK_ALLOW_LOOPBACK = False
    httpserver.expect_request("/inside").respond_with_data("secret")
    # Saved with a harmless-looking host; the contact's data points it at loopback.
    make_workflow(*chain(hook("http://{{ host }}/inside"), after()))
    track_plunk(track, host=f"127.0.0.1:{httpserver.port}")
    drain()

    ex = execution_of()
    assert ex.status == Execution.FAILED
    assert "private or reserved address" in ex.error
    assert httpserver.log == []
    assert history(ex) == [("notify", StepRun.FAILED, "")]


@pytest.mark.parametrize(
    "url, data, message",
    [
        ("https://{{ host }}/x", {"host": ""}, "not a valid URL"),
        ("http://{{ host }}", {"host": "exa mple.com"}, "not a valid URL"),
        ("https://example.com/{{ junk }}", {"junk": "x" * 2100}, "longer than"),
    ],
)
def test_a_rendered_url_that_is_not_valid_fails_the_step_at_once(
    httpserver, track, make_workflow, url, data, message
):
    make_workflow(*chain(hook(url), after()))
    track_plunk(track, **data)
    drain()
    ex = execution_of()
    assert ex.status == Execution.FAILED
    assert "rendered URL" in ex.error and message in ex.error
    assert ex.step_runs.get().attempts <= 1


def test_a_rendered_header_value_with_a_line_break_fails_the_step(httpserver, track, make_workflow):
    httpserver.expect_request("/hook").respond_with_data("ok")
    make_workflow(*chain(hook(httpserver.url_for("/hook"), headers={"X-Name": "{{ name }}"})))
    track_plunk(track, name="Ann\r\nX-Injected: yes")
    drain()
    ex = execution_of()
    assert ex.status == Execution.FAILED
    assert "line break" in ex.error
    assert httpserver.log == []


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"n": "{{ (1..100000000) }}"}, None),
        ({"n": "{{ (1..3) }}"}, {"n": [1, 2, 3]}),
        ({"n": "{{ 7 }}", "s": "{{ 'x' }}"}, {"n": 7, "s": "x"}),
    ],
)
def test_typed_body_values_are_bounded_and_json(httpserver, track, make_workflow, body, expected):
    httpserver.expect_request("/hook").respond_with_data("ok")
    make_workflow(*chain(hook(httpserver.url_for("/hook"), body=body)))
    track_plunk(track)
    drain()
    ex = execution_of()
    if expected is None:
        assert ex.status == Execution.FAILED
        assert "more than the limit of 10000" in ex.error
        assert httpserver.log == []
    else:
        assert ex.status == Execution.COMPLETED, ex.error
        assert bodies(httpserver) == [expected]


def test_a_typed_value_that_is_not_finite_becomes_null():
    # As JSON.stringify does; a float overflow is the one way a filter can make one.
    assert render_typed_json({"n": "{{ big | times: 10 }}"}, {"big": 1e308}) == {"n": None}
