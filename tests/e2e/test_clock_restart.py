"""Restarting the clock loses no timer: delays that fall due while no clock runs fire as soon
as one is back (and two clocks at once run each due step once)."""

import time
from datetime import timedelta

import pytest
from django.db.models import Max
from django.utils import timezone

from contacts_app.models import Contact
from workflows_app.models import Execution, StepRun
from workflows_app.services import workflow_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RUNS = 20
DELAY = 2  # seconds


def test_it_fires_timers_that_fell_due_while_the_clock_was_down(make_stack, api_key):
    steps = [
        {"key": "pause", "type": "delay", "config": {"amount": DELAY, "unit": "seconds"}},
        {"key": "tag", "type": "update_contact", "config": {"set": {"woke": True}}},
    ]
    transitions = [{"from": "trigger", "to": "pause"}, {"from": "pause", "to": "tag"}]
    workflow_create(
        name="Nap",
        trigger_event="nap",
        enabled=True,
        graph={"steps": steps, "transitions": transitions},
    )
    stack = make_stack()
    stack.start_web()
    stack.start_worker()
    stack.start_clock()
    for i in range(RUNS):
        stack.track(api_key, "nap", f"sleeper{i}@example.com")

    waiting = Execution.objects.filter(status="WAITING", current_step__key="pause")
    stack.wait_until(
        lambda: waiting.count() == RUNS, timeout=20, what=f"{RUNS} runs waiting at the delay"
    )
    stack.kill("clock")
    last_due = waiting.aggregate(Max("wake_at"))["wake_at__max"]
    stopped_at = timezone.now()
    assert last_due > stopped_at, "the delays fell due before the clock was stopped"

    # Every timer falls due with no clock running: nothing moves.
    time.sleep((last_due - timezone.now()).total_seconds() + 1.0)
    assert waiting.count() == RUNS, "runs moved on without a clock"
    assert not StepRun.objects.filter(step_key="tag").exists()

    restarted_at = timezone.now()
    stack.start_clock()
    stack.start("clock2", [stack.procs["clock"].args[0], "manage.py", "clock"])
    stack.wait_until(
        lambda: Execution.objects.filter(status="COMPLETED").count() == RUNS,
        timeout=20,
        what="every run to complete after the clock restart",
    )

    assert not Execution.objects.exclude(status="COMPLETED").exists()
    for ex in Execution.objects.all():
        runs = list(ex.step_runs.order_by("id"))
        assert [(r.step_key, r.status, r.branch) for r in runs] == [
            ("pause", "completed", "next"),
            ("tag", "completed", "next"),
        ], ex.pk
        pause, tag = runs
        due = pause.started_at + timedelta(seconds=DELAY)
        # Fired after the restart (not lost, not early), within seconds of the clock's return.
        assert tag.started_at >= max(due, restarted_at)
        assert tag.started_at - restarted_at < timedelta(seconds=10)
    assert Contact.objects.filter(data__woke=True).count() == RUNS
