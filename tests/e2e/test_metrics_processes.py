"""/metrics on real processes: gunicorn's workers, a django-q2 cluster and a clock count into
one folder, and one scrape of the web shows it all (tests/test_metrics.py has the rest)."""

from __future__ import annotations

import os

import pytest
import requests

from config import metrics
from templates_app.models import Template
from tests.test_metrics import TOKEN, key, samples
from workflows_app.models import Execution
from workflows_app.services import workflow_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_web_workers_and_clock_count_into_one_scrape(
    make_stack, api_key, smtp, httpserver, tmp_path
):
    """gunicorn (2 workers), a django-q2 cluster and a clock: one /metrics shows what each did,
    and still shows it, once, after the cluster has stopped."""
    httpserver.expect_request("/hook").respond_with_json({"ok": True})
    Template.objects.create(
        name="Receipt", type=Template.TRANSACTIONAL, subject="Receipt", html="<p>r</p>"
    )
    workflow_create(
        name="Paid",
        trigger_event="order.paid",
        enabled=True,
        graph={
            "steps": [
                {"key": "hook", "type": "webhook", "config": {"url": httpserver.url_for("/hook")}},
                {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "seconds"}},
                {"key": "mail", "type": "send_email", "config": {"template": "Receipt"}},
            ],
            "transitions": [
                {"from": "trigger", "to": "hook"},
                {"from": "hook", "to": "pause"},
                {"from": "pause", "to": "mail"},
            ],
        },
    )
    folder = tmp_path / "metrics"
    stack = make_stack(
        PROMETHEUS_MULTIPROC_DIR=str(folder), METRICS_TOKEN=TOKEN, WEBHOOK_ALLOW_LOOPBACK="true"
    )
    stack.start_web()
    stack.start_worker()
    stack.start_clock()
    for n in range(3):
        stack.track(api_key, "order.paid", f"buyer{n}@example.com")
    stack.wait_until(
        lambda: Execution.objects.filter(status=Execution.COMPLETED).count() == 3,
        timeout=60,
        what="3 runs completed",
    )

    def scrape_web() -> dict[tuple[str, frozenset], float]:
        response = requests.get(
            f"{stack.web_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        assert response.status_code == 200, response.text
        return samples(response.text)

    expected = {
        key("lifecycle_track_requests_total", status="200"): 3,  # the web workers
        key("lifecycle_webhook_calls_total", outcome="success"): 3,  # the cluster's workers
        key("lifecycle_emails_total", status="sent"): 3,
        key("lifecycle_step_visits_total", type="webhook", outcome="completed"): 3,
        key("lifecycle_step_visits_total", type="send_email", outcome="completed"): 3,
        key("lifecycle_executions", status="COMPLETED"): 3,
        key("lifecycle_database_up"): 1,
    }
    found = scrape_web()
    assert {k: found.get(k) for k in expected} == expected
    # The clock hands out the 3 runs whose delay ended (the engine records how late).
    assert found[key("lifecycle_timer_lateness_seconds_count")] >= 3

    stack.stop_all()  # the cluster and the clock end: their counts stay, counted once
    stack.start_web()
    found = scrape_web()
    assert {k: found.get(k) for k in expected} == expected
    live = {int(name.split("_")[1][:-3]) for name in os.listdir(folder) if name[-4].isdigit()}
    assert all(metrics._alive(pid) for pid in live)
