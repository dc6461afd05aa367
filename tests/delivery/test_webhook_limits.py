"""Webhooks that cannot wedge a run: replies jsonb cannot store, slow receivers, odd redirects,
header injection, IPv4 addresses hidden in IPv6 ones - against real local HTTP servers."""

import os
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from werkzeug import Response

from tests.conftest import chain, drain
from workflows_app import engine
from workflows_app.graph import GraphError
from workflows_app.models import Execution, StepRun

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _allow_loopback(settings):
    settings.WEBHOOK_ALLOW_LOOPBACK = True


def hook(url, **config):
    return {"key": "notify", "type": "webhook", "config": {"url": url, **config}}


AFTER = {"key": "after", "type": "update_contact", "config": {"set": {"after_webhook": True}}}


@pytest.fixture
def run_hook(track, make_workflow):
    """Builds trigger -> webhook(url) -> update_contact, tracks the trigger, drains once."""

    def run(url, **config):
        make_workflow(*chain(hook(url, **config), AFTER), trigger="order.paid")
        response = track.post({"event": "order.paid", "email": "ann@example.com"})
        assert response.status_code == 200, response.content
        started = time.monotonic()
        drain()
        return Execution.objects.get(), time.monotonic() - started

    return run


def notify_run():
    return StepRun.objects.get(step_key="notify")


# --- Replies jsonb cannot store ---------------------------------------------------------------


def test_a_nan_reply_is_dropped_with_a_note_and_the_run_goes_on(run_hook, httpserver):
    httpserver.expect_request("/hook").respond_with_data(
        '{"score": NaN}', content_type="application/json"
    )
    execution, _ = run_hook(httpserver.url_for("/hook"))
    assert execution.status == Execution.COMPLETED, execution.error
    assert "notify" not in execution.context
    output = notify_run().output
    assert output["status"] == 200 and output["response"] is None
    assert output["notes"] == [
        "reply not kept: NaN is not a JSON number; use a finite number or null"
    ]
    assert execution.contact.data["after_webhook"] is True
    assert len(httpserver.log) == 1  # posted once: no lease expiry, no re-post


@pytest.mark.parametrize("number", ["1e400", "-Infinity"])
def test_out_of_range_numbers_are_dropped_with_a_note(run_hook, httpserver, number):
    httpserver.expect_request("/hook").respond_with_data(
        f'{{"score": {number}}}', content_type="application/json"
    )
    execution, _ = run_hook(httpserver.url_for("/hook"))
    assert execution.status == Execution.COMPLETED, execution.error
    [note] = notify_run().output["notes"]
    assert note.startswith("reply not kept:")


def test_a_nul_character_is_removed_and_the_rest_kept(run_hook, httpserver):
    httpserver.expect_request("/hook").respond_with_data(
        '{"name": "Ann\\u0000Lee", "tags": ["a\\u0000"], "lone": "\\ud800x"}',
        content_type="application/json",
    )
    execution, _ = run_hook(httpserver.url_for("/hook"))
    assert execution.status == Execution.COMPLETED, execution.error
    assert execution.context["notify"] == {"name": "AnnLee", "tags": ["a"], "lone": "?x"}
    run = notify_run()
    assert run.output["response"] == execution.context["notify"]
    assert run.output["notes"] == ["reply removed NUL characters", "reply replaced invalid Unicode"]


def test_a_nul_in_an_error_body_is_stored_without_it(run_hook, httpserver):
    httpserver.expect_request("/hook").respond_with_data("bad\x00gateway", status=502)
    execution, _ = run_hook(httpserver.url_for("/hook"))
    # A retry is scheduled (not a wedged run re-posting after every lease expiry).
    assert execution.status == Execution.RUNNING and execution.wake_at is not None
    assert notify_run().error == "HTTP 502: badgateway"


# --- The whole call is bounded ----------------------------------------------------------------


class DripServer:
    """A raw socket HTTP server that answers one byte at a time, `pause` seconds apart, for at
    most `lasts` seconds: a receiver slow enough to defeat any per-read timeout."""

    def __init__(self, head: bytes, body: bytes, *, drip_head: bool, pause=0.1, lasts=15.0):
        self.head, self.body, self.drip_head = head, body, drip_head
        self.pause, self.lasts = pause, lasts
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.closed_early = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.sock.settimeout(30)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        self.requests += 1
        with conn:
            conn.recv(65536)
            started = time.monotonic()
            if not self.drip_head:
                conn.sendall(self.head)
            stream = (self.head if self.drip_head else b"") + self.body
            for i in range(len(stream)):
                if time.monotonic() - started > self.lasts:
                    return
                try:
                    conn.sendall(stream[i : i + 1])
                except OSError:
                    self.closed_early.set()  # the client hung up: what we want
                    return
                time.sleep(self.pause)

    def close(self):
        self.sock.close()


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2000\r\n\r\n"


@pytest.mark.parametrize("drip_head", [False, True], ids=["slow-body", "slow-headers"])
def test_a_dripping_receiver_is_given_up_on_at_the_timeout(run_hook, drip_head):
    server = DripServer(HEAD, b'{"a": "' + b"x" * 1990 + b'"}', drip_head=drip_head)
    try:
        execution, took = run_hook(f"http://127.0.0.1:{server.port}/hook", timeout_seconds=2)
    finally:
        server.close()
    # 2 s for the whole call, not per read (each byte arrives within 0.1 s); a little margin
    # for the machine.
    assert 1.9 < took < 3.5, took
    assert execution.status == Execution.RUNNING  # a transient failure: retried later
    assert execution.wake_at > timezone.now()
    run = notify_run()
    assert (run.status, run.attempts) == (StepRun.STARTED, 1)
    assert "no complete reply within 2 s" in run.error
    assert server.requests == 1


def test_the_timeout_is_capped_by_the_setting(run_hook, settings):
    settings.WEBHOOK_MAX_TIMEOUT_SECONDS = 1
    server = DripServer(HEAD, b"x" * 2000, drip_head=False)
    try:
        execution, took = run_hook(f"http://127.0.0.1:{server.port}/hook", timeout_seconds=30)
    finally:
        server.close()
    assert took < 2.5, took
    assert "no complete reply within 1 s" in notify_run().error


def test_a_fast_reply_is_unaffected_by_the_deadline(run_hook, httpserver):
    httpserver.expect_request("/hook").respond_with_json({"ok": True})
    execution, took = run_hook(httpserver.url_for("/hook"), timeout_seconds=1)
    assert execution.status == Execution.COMPLETED
    assert execution.context["notify"] == {"ok": True}
    # The watchdog is cancelled, not waited for.
    assert took < 1


def test_the_lease_runs_from_the_real_time_of_the_last_write(
    track, make_workflow, httpserver, settings
):
    # A pass that began long ago (as if earlier steps had been slow) must not write a lease
    # counted from its start: that lease could already be over while the webhook runs.
    httpserver.expect_request("/hook").respond_with_data("busy", status=503)
    make_workflow(*chain(hook(httpserver.url_for("/hook"))), trigger="order.paid")
    track.post({"event": "order.paid", "email": "ann@example.com"})
    [pk] = engine.executions_claim_due(now=timezone.now(), limit=10)
    long_ago = timezone.now() - timedelta(hours=1)
    before = timezone.now()
    engine.execution_advance(pk, now=long_ago)
    execution = Execution.objects.get()
    assert execution.status == Execution.RUNNING
    assert execution.lease_until >= before + timedelta(seconds=settings.ENGINE_LEASE_SECONDS)


def load_settings(**env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ENGINE_", "EMAIL_"))}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "true", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_lease_without_room_for_the_longest_step_and_two_heartbeats_is_refused():
    # WEBHOOK_MAX_TIMEOUT_SECONDS' default (30 s) is the longest step; the heartbeat is an
    # eighth of the lease unless set.
    refused = load_settings(ENGINE_LEASE_SECONDS="36", EMAIL_TIMEOUT="20")  # 30 + 2 x 4.5 > 36
    assert refused.returncode != 0
    assert "ENGINE_LEASE_SECONDS (36) must be at least the longest a step may take (30 s" in (
        refused.stderr
    )
    assert "two heartbeats (ENGINE_HEARTBEAT_SECONDS, 4.5 s)" in refused.stderr
    assert load_settings(ENGINE_LEASE_SECONDS="40", EMAIL_TIMEOUT="20").returncode == 0
    slow_beat = load_settings(ENGINE_LEASE_SECONDS="40", ENGINE_HEARTBEAT_SECONDS="6")
    assert slow_beat.returncode != 0  # 30 + 2 x 6 > 40
    short = {"ENGINE_LEASE_SECONDS": "4", "EMAIL_TIMEOUT": "2", "WEBHOOK_MAX_TIMEOUT_SECONDS": "2"}
    assert load_settings(**short).returncode == 0


# --- Redirects, headers, addresses ------------------------------------------------------------


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/x", "file:///etc/passwd", "gopher://x/"])
def test_a_redirect_to_a_non_http_scheme_fails_at_once(run_hook, httpserver, target):
    httpserver.expect_request("/hook").respond_with_response(
        Response("", status=302, headers={"Location": target})
    )
    execution, _ = run_hook(httpserver.url_for("/hook"))
    assert execution.status == Execution.FAILED
    assert "refused: invalid URL" in execution.error
    assert len(httpserver.log) == 1  # not retried
    assert notify_run().attempts == 1


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X-Api-Key": "s3cret\r\nX-Injected: 1"}, "line break"),
        ({"X-Api-Key": "s3cret\nX-Injected: 1"}, "line break"),
        ({"X-Api-Key\r\nX-Injected": "1"}, "header name"),
        ({"X Api Key": "1"}, "header name"),
        ({"": "1"}, "header name"),
    ],
)
def test_header_injection_is_refused_on_save(make_workflow, headers, message):
    with pytest.raises(GraphError) as caught:
        make_workflow(*chain(hook("https://example.com/hook", headers=headers)))
    [error] = caught.value.errors
    assert error["step"] == "notify"
    assert error["field"] == "config.headers"
    assert message in error["message"]


def test_ordinary_headers_are_accepted(make_workflow):
    headers = {"X-Api-Key": "s3cret value; with=punctuation", "Authorization": "Bearer a.b-c"}
    make_workflow(*chain(hook("https://example.com/hook", headers=headers)))


@pytest.mark.parametrize(
    "host", ["[::127.0.0.1]", "[::ffff:127.0.0.1]", "[::10.0.0.1]", "[::169.254.169.254]"]
)
def test_ipv4_addresses_inside_ipv6_are_refused_like_the_ipv4_address(
    run_hook, httpserver, settings, host
):
    settings.WEBHOOK_ALLOW_LOOPBACK = False
    httpserver.expect_request("/hook").respond_with_data("ok")
    execution, _ = run_hook(f"http://{host}:{httpserver.port}/hook")
    assert execution.status == Execution.FAILED
    assert "private or reserved address" in execution.error
    assert httpserver.log == []


# --- The other side effect: email -------------------------------------------------------------


def test_an_smtp_server_that_never_answers_holds_a_send_for_email_timeout_only(
    track, make_workflow, settings
):
    from templates_app.models import Template

    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never greets
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", silent.getsockname()[1]
    settings.EMAIL_TIMEOUT = 1
    Template.objects.create(name="T", type=Template.TRANSACTIONAL, subject="s", html="<p>x</p>")
    make_workflow(
        *chain({"key": "mail", "type": "send_email", "config": {"template": "T"}}),
        trigger="order.paid",
    )
    track.post({"event": "order.paid", "email": "ann@example.com"})
    started = time.monotonic()
    try:
        drain()
    finally:
        silent.close()
    took = time.monotonic() - started
    assert took < 2.5, took
    execution = Execution.objects.get()
    assert execution.status == Execution.RUNNING  # transient: retried later
    assert execution.wake_at > timezone.now()
    assert "timed out" in StepRun.objects.get(step_key="mail").error
