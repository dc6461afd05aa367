"""Small helpers shared by the step and engine tests: track an event, read a run's history."""

from datetime import UTC, datetime

from workflows_app.models import Execution

# A fixed, timezone-aware start for time-machine tests.
T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


def track_ok(track, event="user.signup", email="ann@example.com", data=None, subscribed=None):
    """POSTs /v1/track and insists it was accepted."""
    body = {"event": event, "email": email}
    if data is not None:
        body["data"] = data
    if subscribed is not None:
        body["subscribed"] = subscribed
    response = track.post(body)
    assert response.status_code == 200, response.content
    return response.json()


def execution_of(email="ann@example.com", **filters):
    return Execution.objects.get(contact__email=email, **filters)


def history(execution):
    """[(step_key, status, branch)] in visit order: what ops read in the Executions tab."""
    return [(r.step_key, r.status, r.branch) for r in execution.step_runs.order_by("id")]


def keys_run(execution):
    return [r.step_key for r in execution.step_runs.order_by("id")]


class WorkerKilled(BaseException):
    """Stands in for `kill -9` of a worker: nothing in the engine catches a BaseException."""


def crash_after(step_type):
    """Patches a step type so the worker 'dies' right after the step did its work, before the
    engine could record the outcome."""
    from unittest import mock

    from workflows_app.steps import STEP_TYPES

    kind = STEP_TYPES[step_type]
    original = type(kind).run

    def run(ctx):
        original(kind, ctx)
        raise WorkerKilled(step_type)

    return mock.patch.object(kind, "run", run)
