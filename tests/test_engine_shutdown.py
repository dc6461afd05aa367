"""A worker asked to stop (workflows_app.shutdown, set by `manage.py qcluster` on SIGTERM or
SIGINT) finishes the step in hand and hands every other run back, due at once. The end-to-end
proof with real processes and signals is tests/e2e/test_shutdown.py."""

import pytest
from django.utils import timezone
from werkzeug import Response

from tests.conftest import chain, drain
from workflows_app import engine, shutdown
from workflows_app.models import Execution, StepRun


@pytest.fixture(autouse=True)
def _fresh_flag(settings):
    settings.WEBHOOK_ALLOW_LOOPBACK = True
    shutdown.reset()
    yield
    shutdown.reset()


def hook(key, url):
    return {"key": key, "type": "webhook", "config": {"url": url}}


def test_claimed_runs_not_begun_are_handed_back_at_once(track, make_workflow, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    make_workflow(*chain(hook("a", httpserver.url_for("/hook"))), trigger="order.paid")
    for i in range(3):
        track.post({"event": "order.paid", "email": f"c{i}@example.com"})
    ids = engine.executions_claim_due(now=timezone.now(), limit=10)
    claimed = {ex.pk: ex.version for ex in Execution.objects.all()}
    assert len(ids) == 3 and all(
        ex.lease_until and ex.wake_at is None for ex in Execution.objects.all()
    )

    shutdown.request()
    before = timezone.now()
    assert engine.executions_advance(ids) == {"released": 3}
    for ex in Execution.objects.all():
        assert ex.status == Execution.RUNNING
        assert ex.lease_until is None
        assert before <= ex.wake_at <= timezone.now()  # due now: no lease to wait for
        assert ex.version == claimed[ex.pk] + 1
    assert not StepRun.objects.exists()
    assert httpserver.log == []

    shutdown.reset()  # another worker
    drain()
    assert set(Execution.objects.values_list("status", flat=True)) == {Execution.COMPLETED}
    assert len(httpserver.log) == 3


def test_the_step_in_progress_finishes_and_the_next_is_not_begun(track, make_workflow, httpserver):
    def first(request):
        shutdown.request()  # the signal lands while this webhook call is in flight
        return Response("ok")

    httpserver.expect_request("/first").respond_with_handler(first)
    httpserver.expect_request("/second").respond_with_data("ok")
    steps = [
        hook("first", httpserver.url_for("/first")),
        hook("second", httpserver.url_for("/second")),
    ]
    make_workflow(*chain(*steps), trigger="order.paid")
    track.post({"event": "order.paid", "email": "ann@example.com"})
    [pk] = engine.executions_claim_due(now=timezone.now(), limit=10)
    assert engine.executions_advance([pk]) == {"RUNNING": 1}

    ex = Execution.objects.get()
    assert (ex.status, ex.lease_until) == (Execution.RUNNING, None)
    assert ex.wake_at <= timezone.now()
    runs = [(r.step_key, r.status) for r in ex.step_runs.order_by("id")]
    # The webhook in flight completed and was recorded; the next one was not begun.
    assert runs == [("first", StepRun.COMPLETED)]
    assert [r.path for r, _ in httpserver.log] == ["/first"]

    shutdown.reset()
    drain()
    ex.refresh_from_db()
    assert ex.status == Execution.COMPLETED
    assert [r.step_key for r in ex.step_runs.order_by("id")] == ["first", "second"]
    assert [r.path for r, _ in httpserver.log] == ["/first", "/second"]  # each exactly once


def test_a_released_run_that_moved_meanwhile_is_left_alone(track, make_workflow, httpserver):
    make_workflow(*chain(hook("a", httpserver.url_for("/hook"))), trigger="order.paid")
    track.post({"event": "order.paid", "email": "ann@example.com"})
    engine.executions_claim_due(now=timezone.now(), limit=10)
    stale = Execution.objects.get()
    engine.execution_cancel(execution=stale, by="ops")
    assert engine.executions_release([stale], now=timezone.now()) == 0
    assert Execution.objects.get().status == Execution.CANCELLED
