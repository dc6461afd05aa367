import json

import pytest
import time_machine
from werkzeug import Response

from tests.conftest import chain, drain
from tests.flow import T0, execution_of, history, track_ok
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
        "execution": {"id": ex.pk, "started_at": ex.started_at.isoformat()},
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
            "config": {"field": "event.notify.score", "operator": "greater_than", "value": 40},
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
        for _ in range(webhook_module.MAX_ATTEMPTS - 1):
            ex = execution_of()
            assert ex.status == Execution.RUNNING
            traveller.move_to(ex.wake_at)
            drain(now=ex.wake_at)

    ex = execution_of()
    assert ex.status == Execution.FAILED
    assert "HTTP 500" in ex.error and "Notify CRM" in ex.error
    assert len(httpserver.log) == webhook_module.MAX_ATTEMPTS
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
