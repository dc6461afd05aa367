"""Structured logs (LOG_FORMAT=json): one JSON object a line, with the request id of the web
request a line was written for (echoed in X-Request-ID) and the execution, workflow and step
of the engine run; a bad LOG_FORMAT stops the start-up."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import uuid
from unittest import mock

import pytest
import requests

from config.logcontext import ContextFilter, JsonFormatter, current_context, log_context
from config.redact import RedactFilter
from tests.conftest import chain, drain
from tests.flow import execution_of, track_ok
from tests.test_production_settings import (
    PRODUCTION_ENV,
    ROOT,
    VIA_PROXY,
    clean_env,
    free_port,
    import_settings,
    token_for,
)
from workflows_app import api
from workflows_app.steps import STEP_TYPES

log = logging.getLogger("tests.logging")


@pytest.fixture
def json_lines():
    """The root logger's lines as LOG_FORMAT=json writes them (same filters, same formatter),
    read back parsed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactFilter())
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)

    def read() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield read
    root.removeHandler(handler)


def test_it_writes_one_json_object_a_line_with_the_exception(json_lines):
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        log.exception("it broke for %s", "ann")
    with log_context(request_id="abc", execution_id=7):
        log.warning("inside", extra={"attempt": 2})
    first, second = json_lines()
    assert first["level"] == "ERROR" and first["logger"] == "tests.logging"
    assert first["message"] == "it broke for ann"
    assert "ValueError: bad" in first["exception"]
    assert first["time"].endswith("+00:00")
    assert "request_id" not in first
    assert second["request_id"] == "abc" and second["execution_id"] == 7
    assert second["attempt"] == 2
    assert current_context() == {}


def test_it_redacts_tokens_in_json_lines_too(json_lines):
    logging.getLogger("django.request").warning("Bad Request: /unsubscribe/secret-token")
    (line,) = json_lines()
    assert line["message"] == "Bad Request: /unsubscribe/[redacted]"


# --- The request id -------------------------------------------------------------------------


def _logging_track(*args, **kwargs):
    log.info("tracking")
    return real_track(*args, **kwargs)


real_track = api.track


@pytest.mark.django_db
def test_it_gives_each_request_an_id_on_its_lines_and_in_the_reply(track, json_lines):
    with mock.patch.object(api, "track", _logging_track):
        response = track.post({"event": "user.signup", "email": "ann@example.com"})
    assert response.status_code == 200
    request_id = response.headers["X-Request-ID"]
    assert len(request_id) == 32 and int(request_id, 16) >= 0
    (line,) = [line for line in json_lines() if line["message"] == "tracking"]
    assert line["request_id"] == request_id
    assert current_context() == {}


@pytest.mark.django_db
def test_it_keeps_a_sane_incoming_request_id(client, json_lines):
    response = client.get("/no-such-page", HTTP_X_REQUEST_ID="edge-1.abc_DEF")
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "edge-1.abc_DEF"
    # Django logs "Not Found" after the middleware is done: the id still comes along.
    (line,) = [line for line in json_lines() if line["logger"] == "django.request"]
    assert line["message"] == "Not Found: /no-such-page"
    assert line["request_id"] == "edge-1.abc_DEF"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "hostile", ["", "a b", "x" * 201, 'quote"', "new\\nline", "../../etc", "ünï", "a;b"]
)
def test_it_replaces_an_insane_incoming_request_id(client, hostile):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=hostile)
    request_id = response.headers["X-Request-ID"]
    assert request_id != hostile and len(request_id) == 32
    uuid.UUID(hex=request_id)


# --- The engine's lines ---------------------------------------------------------------------


def update(key):
    return {"key": key, "type": "update_contact", "config": {"set": {key: True}}}


@pytest.mark.django_db
def test_engine_lines_name_the_execution_workflow_and_step_and_never_leak(
    track, make_workflow, json_lines
):
    workflow = make_workflow(*chain(update("first"), update("boom")))
    real_run = STEP_TYPES["update_contact"].run

    def run(ctx):
        log.info("visiting %s", ctx.step.key)
        if ctx.step.key == "boom" and ctx.contact.email == "ann@example.com":
            raise RuntimeError("kaboom")
        return real_run(ctx)

    track_ok(track, email="ann@example.com")
    track_ok(track, email="bob@example.com")
    ann, bob = execution_of("ann@example.com"), execution_of("bob@example.com")
    with mock.patch.object(STEP_TYPES["update_contact"], "run", side_effect=run):
        drain()
    log.info("after the runs")

    lines = json_lines()
    crashed = [line for line in lines if line["logger"] == "workflows_app.engine"]
    assert len(crashed) == 1
    assert crashed[0]["message"] == f"step boom of execution {ann.pk} crashed"
    assert "RuntimeError: kaboom" in crashed[0]["exception"]
    assert (crashed[0]["execution_id"], crashed[0]["workflow_id"], crashed[0]["step_key"]) == (
        ann.pk,
        workflow.pk,
        "boom",
    )
    visits = [
        (line["execution_id"], line["workflow_id"], line["step_key"], line["message"])
        for line in lines
        if line["message"].startswith("visiting")
    ]
    assert sorted(visits) == sorted(
        (ex.pk, workflow.pk, key, f"visiting {key}")
        for ex in (ann, bob)
        for key in ("first", "boom")
    )
    (after,) = [line for line in lines if line["message"] == "after the runs"]
    assert not {"execution_id", "workflow_id", "step_key"} & after.keys()
    assert current_context() == {}


# --- LOG_FORMAT at start-up -----------------------------------------------------------------


def test_a_bad_log_format_stops_the_start_up(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=clean_env(tmp_path, DEBUG="true", LOG_FORMAT="bogus"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "LOG_FORMAT must be one of text, json, got 'bogus'" in result.stderr


@pytest.mark.parametrize("value", ["text", "json", "JSON", ""])
def test_the_log_formats_start(tmp_path, value):
    assert import_settings(tmp_path, DEBUG="true", LOG_FORMAT=value).returncode == 0


def test_a_management_command_writes_json_lines(tmp_path):
    """qcluster and clock are management commands: Django's logging set-up is theirs too,
    django-q2's own logger included."""
    script = (
        "import django, logging; django.setup(); import django_q.conf; "
        "logging.getLogger('django-q').info('q line'); "
        "logging.getLogger('django.request').warning('dev line'); "
        "import warnings; warnings.warn('careful')"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=clean_env(
            tmp_path, DEBUG="true", LOG_FORMAT="json", DJANGO_SETTINGS_MODULE="config.settings"
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    # Once each: Django's development console handler does not write a second, plain copy.
    assert [(line["logger"], line["message"]) for line in lines][:2] == [
        ("django-q", "q line"),
        ("django.request", "dev line"),
    ]
    # Python's warnings too (they are not log lines unless routed through logging).
    (warning,) = lines[2:]
    assert warning["logger"] == "py.warnings" and "UserWarning: careful" in warning["message"]


# --- gunicorn -------------------------------------------------------------------------------


@pytest.mark.e2e
def test_gunicorn_writes_json_lines_with_the_request_id_and_no_token(start_web_json):
    web = start_web_json
    token = token_for(uuid.uuid4())
    page = requests.get(
        f"{web.url}/unsubscribe/{token}",
        headers={**VIA_PROXY, "X-Request-ID": "lb-42"},
        timeout=30,
        allow_redirects=False,
    )
    assert page.status_code == 503 and page.headers["X-Request-ID"] == "lb-42"
    web.stop()

    access = [json.loads(line) for line in web.access_log.read_text().splitlines()]
    (hit,) = [line for line in access if "/unsubscribe/" in line["message"]]
    assert hit["logger"] == "gunicorn.access" and hit["request_id"] == "lb-42"
    assert "/unsubscribe/[redacted]" in hit["message"]

    errors = [json.loads(line) for line in web.error_log.read_text().splitlines()]
    (django_line,) = [
        line
        for line in errors
        if line["logger"] == "django.request" and "/unsubscribe/" in line["message"]
    ]
    assert django_line["message"] == "Service Unavailable: /unsubscribe/[redacted]"
    assert django_line["request_id"] == "lb-42"
    assert any(line["logger"] == "gunicorn.error" for line in errors)
    assert token not in web.access_log.read_text() + web.error_log.read_text()


@pytest.fixture
def start_web_json(tmp_path):
    from tests.test_production_settings import Web

    down = f"postgres://nobody@127.0.0.1:{free_port()}/lifecycle"  # nothing listens there
    env = clean_env(
        tmp_path,
        HOME=str(tmp_path),
        LOG_FORMAT="json",
        DATABASE_URL=down,
        **PRODUCTION_ENV,
    )
    web = Web(tmp_path, "json", env)
    yield web
    web.stop()
