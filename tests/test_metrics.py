"""GET /metrics: its token, the counters the app keeps (in this process and in others on the
host), the gauges read from the database, and the folding of ended processes' files.

Other test runs and a `make run` of this checkout count into the same folder, so a counter is
checked by what this process added (prometheus_client's registry holds this process's own
values) and /metrics by showing at least that; labels no one else uses are checked exactly."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from django.db import OperationalError
from django.utils import timezone
from django_q.models import OrmQ
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from config import metrics
from contacts_app.services import contact_upsert
from templates_app.models import Message, Template
from templates_app.services import SendPermanentError, message_send
from tests.conftest import drain
from workflows_app.models import Execution

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-token-for-tests"


def scrape(client, **headers) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return samples(response.content.decode())


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def mine(name: str, **labels: str) -> float:
    """This process's own value of a sample (0 before its first count)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def key(name: str, **labels: str) -> tuple[str, frozenset]:
    return (name, frozenset(labels.items()))


# --- Who may read it ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_with_a_token_it_refuses_no_credentials_with_401(client, settings):
    settings.METRICS_TOKEN = TOKEN
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"lifecycle_" not in response.content
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401


@pytest.mark.django_db
def test_with_a_token_it_refuses_a_wrong_one_with_403(client, settings):
    settings.METRICS_TOKEN = TOKEN
    for wrong in (TOKEN + "x", TOKEN[:-1], "sk_" + TOKEN, "x"):
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {wrong}")
        assert response.status_code == 403
        assert b"lifecycle_" not in response.content


@pytest.mark.django_db
def test_with_the_token_it_answers_from_anywhere(client, settings):
    settings.METRICS_TOKEN = TOKEN
    found = scrape(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}", REMOTE_ADDR="203.0.113.9")
    assert found[key("lifecycle_database_up")] == 1


@pytest.mark.django_db
def test_without_a_token_it_answers_this_host_only(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    # Behind a proxy, the address the proxy saw, not the proxy's own loopback address.
    settings.PROXY_COUNT = 1
    behind = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert behind.status_code == 403


@pytest.mark.django_db
def test_it_is_get_only_and_not_redirected_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/metrics").status_code == 200
    assert client.post("/metrics").status_code == 405


# --- Counters -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_track_requests_are_counted_by_status(client, track):
    ok_before = mine("lifecycle_track_requests_total", status="200")
    refused_before = mine("lifecycle_track_requests_total", status="401")
    invalid_before = mine("lifecycle_track_requests_total", status="400")
    assert track.post({"event": "user.signup", "email": "ann@example.com"}).status_code == 200
    assert track.post({"event": "user.signup", "email": "bob@example.com"}).status_code == 200
    assert track.post({"event": "user.signup", "email": "ann@"}).status_code == 400
    assert track.post({"event": "x", "email": "a@example.com"}, key="sk_wrong").status_code == 401
    assert mine("lifecycle_track_requests_total", status="200") == ok_before + 2
    assert mine("lifecycle_track_requests_total", status="400") == invalid_before + 1
    assert mine("lifecycle_track_requests_total", status="401") == refused_before + 1
    found = scrape(client)
    assert found[key("lifecycle_track_requests_total", status="200")] >= ok_before + 2


@pytest.fixture
def contact(db):
    return contact_upsert(email="ann@example.com", data={"firstName": "Ann"})[0]


@pytest.fixture
def receipt(db):
    return Template.objects.create(
        name="Receipt", type=Template.TRANSACTIONAL, subject="Receipt", html="<p>r</p>"
    )


def test_a_ledger_send_is_counted_by_its_result(client, settings, contact, receipt):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    sent_before = mine("lifecycle_emails_total", status="sent")
    failed_before = mine("lifecycle_emails_total", status="failed")
    message_send(idempotency_key="k1", template=receipt, contact=contact)
    message_send(idempotency_key="k1", template=receipt, contact=contact)  # already sent
    assert mine("lifecycle_emails_total", status="sent") == sent_before + 1

    # A provider refusing for good: counted as failed, and the row says so.
    with (
        mock.patch("anymail.backends.test.EmailBackend.send_messages", side_effect=ValueError),
        pytest.raises(SendPermanentError),
    ):
        message_send(idempotency_key="k2", template=receipt, contact=contact)
    assert Message.objects.get(idempotency_key="k2").status == Message.FAILED
    assert mine("lifecycle_emails_total", status="failed") == failed_before + 1
    assert scrape(client)[key("lifecycle_emails_total", status="sent")] >= sent_before + 1


@pytest.fixture
def webhook_workflow(track, make_workflow, httpserver):
    config = {"url": httpserver.url_for("/hook"), "timeout_seconds": 5}
    make_workflow(
        [{"key": "notify", "type": "webhook", "config": config}],
        [{"from": "trigger", "to": "notify"}],
        trigger="order.paid",
    )
    return lambda: track.post({"event": "order.paid", "email": "ann@example.com"})


def test_webhook_calls_are_counted_by_outcome(client, webhook_workflow, httpserver):
    success_before = mine("lifecycle_webhook_calls_total", outcome="success")
    retry_before = mine("lifecycle_webhook_calls_total", outcome="retry")
    httpserver.expect_oneshot_request("/hook").respond_with_data("down", status=503)
    httpserver.expect_oneshot_request("/hook").respond_with_data("ok", status=200)
    webhook_workflow()
    now = timezone.now()
    drain(now=now)
    assert mine("lifecycle_webhook_calls_total", outcome="retry") == retry_before + 1
    assert mine("lifecycle_webhook_calls_total", outcome="success") == success_before
    drain(now=now + timedelta(hours=2))
    assert Execution.objects.get().status == Execution.COMPLETED
    assert mine("lifecycle_webhook_calls_total", outcome="success") == success_before + 1
    found = scrape(client)
    assert found[key("lifecycle_webhook_calls_total", outcome="success")] >= success_before + 1


def test_a_refused_webhook_address_is_counted(settings, webhook_workflow, httpserver):
    settings.WEBHOOK_ALLOW_LOOPBACK = False
    refused_before = mine("lifecycle_webhook_calls_total", outcome="refused")
    webhook_workflow()
    drain()
    assert Execution.objects.get().status == Execution.FAILED
    assert mine("lifecycle_webhook_calls_total", outcome="refused") == refused_before + 1
    assert httpserver.log == []


@pytest.mark.django_db
def test_timer_lateness_is_a_histogram_with_buckets_from_10_ms(client):
    name = "lifecycle_timer_lateness_seconds_bucket"
    before = {le: mine(name, le=le) for le in ("0.01", "0.1", "0.25", "10.0", "+Inf")}
    metrics.timer_lateness(0.2)
    metrics.timer_lateness(-0.5)  # a clock ahead of the database's: never negative
    assert mine(name, le="0.01") == before["0.01"] + 1
    assert mine(name, le="0.1") == before["0.1"] + 1
    assert mine(name, le="0.25") == before["0.25"] + 2
    assert mine(name, le="+Inf") == before["+Inf"] + 2
    found = scrape(client)
    les = {dict(labels)["le"] for (n, labels) in found if n == name}
    assert {"0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0"} <= les
    assert found[key(name, le="0.25")] >= before["0.25"] + 2
    assert key("lifecycle_timer_lateness_seconds_count") in found


# --- Gauges from the database -------------------------------------------------------------------


def test_gauges_show_the_database(client, track, make_workflow):
    steps = [{"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "hours"}}]
    make_workflow(steps, [{"from": "trigger", "to": "pause"}])
    for n in range(3):
        track.post({"event": "user.signup", "email": f"u{n}@example.com"})
    found = scrape(client)
    assert found[key("lifecycle_executions", status="RUNNING")] == 3  # due, not yet claimed
    assert found[key("lifecycle_due_runs")] == 3
    drain()
    Execution.objects.filter(contact__email="u0@example.com").update(
        wake_at=timezone.now() - timedelta(seconds=90)
    )
    OrmQ.objects.create(key="lifecycle", payload="x")
    found = scrape(client)
    assert found[key("lifecycle_executions", status="WAITING")] == 3
    assert found[key("lifecycle_executions", status="COMPLETED")] == 0
    assert found[key("lifecycle_due_runs")] == 1
    assert 90 <= found[key("lifecycle_due_lag_seconds")] < 200
    assert found[key("lifecycle_queue_depth")] == 1
    assert found[key("lifecycle_database_up")] == 1


@pytest.mark.django_db
def test_a_database_that_does_not_answer_is_a_gauge_not_a_failed_scrape(client):
    metrics.track_request(299)  # something of this process to see
    with mock.patch(
        "workflows_app.system.executions_by_status", side_effect=OperationalError("gone")
    ):
        found = scrape(client)
    assert found[key("lifecycle_database_up")] == 0
    assert key("lifecycle_executions", status="RUNNING") not in found
    assert found[key("lifecycle_track_requests_total", status="299")] >= 1


# --- Many processes -----------------------------------------------------------------------------


def run_python(code: str, **env: str) -> int:
    """Runs `code` in a new Python process of this project; returns its pid once it ended."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip())


COUNT = "import os; from config import metrics; {}; print(os.getpid())"


@pytest.mark.django_db
def test_counts_of_another_process_show_up_and_stay_after_it_ended(client):
    kind = f"probe-{uuid.uuid4().hex[:8]}"  # a step type no other process counts
    proc = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            COUNT.format(f"[metrics.step_visit({kind!r}, 'completed') for _ in range(3)]"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout.strip().splitlines()[-1])
    visits = key("lifecycle_step_visits_total", type=kind, outcome="completed")
    assert scrape(client)[visits] == 3
    # The ended process's file was folded into the archive, and is counted once.
    assert not (Path(metrics.MULTIPROC_DIR) / f"counter_{pid}.db").exists()
    assert scrape(client)[visits] == 3


def test_ended_processes_are_folded_into_one_archive_counted_once(tmp_path):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    code = COUNT.format("metrics.step_visit('delay', 'waiting'); metrics.timer_lateness(0.05)")
    pids = [run_python(code, **env) for _ in range(3)]
    assert {f"counter_{pid}.db" for pid in pids} <= set(os.listdir(tmp_path))

    found = samples_of(metrics.process_metrics(str(tmp_path)))
    assert found[key("lifecycle_step_visits_total", type="delay", outcome="waiting")] == 3
    assert found[key("lifecycle_timer_lateness_seconds_bucket", le="0.05")] == 3
    assert found[key("lifecycle_timer_lateness_seconds_bucket", le="0.025")] == 0
    left = sorted(name for name in os.listdir(tmp_path) if name.endswith(".db"))
    assert left == ["counter_archive.db", "histogram_archive.db"]

    run_python(code, **env)
    found = samples_of(metrics.process_metrics(str(tmp_path)))
    assert found[key("lifecycle_step_visits_total", type="delay", outcome="waiting")] == 4
    assert found[key("lifecycle_timer_lateness_seconds_count")] == 4


def test_a_fold_interrupted_part_way_counts_each_process_once(tmp_path, monkeypatch):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    run_python(COUNT.format("metrics.email_result('sent')"), **env)
    run_python(COUNT.format("metrics.email_result('sent')"), **env)

    # Killed after the new archive is in place, before the ended processes' files are gone.
    real_unlink = os.unlink

    def crash(path, *args, **kwargs):
        if os.path.basename(str(path)).startswith("counter_") and "archive" not in str(path):
            raise KeyboardInterrupt("killed")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", crash)
    with pytest.raises(KeyboardInterrupt):
        metrics.process_metrics(str(tmp_path))
    monkeypatch.setattr(os, "unlink", real_unlink)

    for _ in range(2):
        found = samples_of(metrics.process_metrics(str(tmp_path)))
        assert found[key("lifecycle_emails_total", status="sent")] == 2
    assert not (tmp_path / "compaction.json").exists()


def test_a_running_process_keeps_its_own_file_until_it_ends(tmp_path):
    code = (
        "import os, sys; from config import metrics; metrics.webhook_call('success'); "
        "print(os.getpid(), flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        pid = int(child.stdout.readline())
        calls = key("lifecycle_webhook_calls_total", outcome="success")
        assert samples_of(metrics.process_metrics(str(tmp_path)))[calls] == 1
        assert (tmp_path / f"counter_{pid}.db").exists()
    finally:
        child.communicate("", timeout=30)
    assert samples_of(metrics.process_metrics(str(tmp_path)))[calls] == 1
    assert not (tmp_path / f"counter_{pid}.db").exists()


def samples_of(families) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in families
        for s in family.samples
    }
