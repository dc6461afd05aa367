"""Production settings and the web process: `check --deploy` is clean with the documented
production environment, settings typos stop the start-up, /healthz and the unsubscribe pages
answer 503 while the database is down, unsubscribe tokens never reach gunicorn's logs, and two
gunicorns on one host do not share a control socket. Real subprocesses throughout."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from django.core import signing
from django.db import connection

from contacts_app.models import Contact
from contacts_app.services import UNSUBSCRIBE_SALT, contact_upsert

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(ROOT / ".venv" / "bin" / "gunicorn")
SECRET_KEY = secrets.token_urlsafe(50)

# README, "Running in production": the settings a deployment behind a TLS proxy sets.
PRODUCTION_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": SECRET_KEY,
    "PUBLIC_URL": "https://lifecycle.example.com",
    "ALLOWED_HOSTS": "lifecycle.example.com,127.0.0.1",
    "SECURE_PROXY_SSL_HEADER_ENABLED": "true",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
}
# What the proxy in front adds; the app redirects plain HTTP otherwise.
VIA_PROXY = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"}


def clean_env(tmp_path: Path, **env: str) -> dict[str, str]:
    """This process's environment without the settings under test; SQLite in tmp_path unless
    DATABASE_URL is given."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if k not in PRODUCTION_ENV
        # DJANGO_ALLOW_ASYNC_UNSAFE: set by the browser tests' conftest for Playwright's loop,
        # never in a deployment (check --deploy says so).
        and k
        not in ("DATABASE_URL", "EMAIL_PROVIDER", "XDG_RUNTIME_DIR", "DJANGO_ALLOW_ASYNC_UNSAFE")
        and not k.startswith(("SECURE_", "AXES_", "GUNICORN_"))
    }
    return {**keep, "SQLITE_PATH": str(tmp_path / "db.sqlite3"), **env}


def run_manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def import_settings(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """What every process does first (manage.py, gunicorn, qcluster): read the settings."""
    return subprocess.run(
        [sys.executable, "-c", "import config.settings"],
        cwd=ROOT,
        env=clean_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- Settings at start-up ---------------------------------------------------------------------


def test_check_deploy_is_clean_with_the_documented_production_settings(tmp_path):
    result = run_manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_warns_without_them(tmp_path):
    result = run_manage(tmp_path, "check", "--deploy", DEBUG="false", SECRET_KEY=SECRET_KEY)
    assert "security.W004" in result.stderr  # HSTS
    assert "security.W008" in result.stderr  # SSL redirect


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "ture"),
        ("SECURE_SSL_REDIRECT", "enabled"),
        ("SECURE_HSTS_PRELOAD", "yes please"),
        ("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "2"),
    ],
)
def test_a_boolean_setting_with_a_typo_stops_the_start_up(tmp_path, name, value):
    env = {"DEBUG": "true", name: value}
    result = import_settings(tmp_path, **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"{name} must be one of 1, true, yes, on, 0, false, no, off" in result.stderr
    assert repr(value) in result.stderr


@pytest.mark.parametrize("value", ["TRUE", " yes ", "On", "0", "off", ""])
def test_boolean_settings_accept_the_usual_words(tmp_path, value):
    assert import_settings(tmp_path, DEBUG="true", SECURE_SSL_REDIRECT=value).returncode == 0


def test_an_unknown_email_provider_stops_the_start_up_listing_the_valid_ones(tmp_path):
    result = import_settings(tmp_path, DEBUG="true", EMAIL_PROVIDER="postmarc")
    assert result.returncode != 0
    assert "EMAIL_PROVIDER 'postmarc' is not a provider" in result.stderr
    for valid in ("console", "smtp", "locmem", "resend", "postmark", "amazon_ses", "sendgrid"):
        assert valid in result.stderr
    assert "base_requests" not in result.stderr


@pytest.mark.parametrize("provider", ["console", "smtp", "locmem", "resend", "postmark", "test"])
def test_the_valid_email_providers_start(tmp_path, provider):
    result = import_settings(tmp_path, DEBUG="true", EMAIL_PROVIDER=provider)
    assert result.returncode == 0, result.stderr


# --- /healthz in process ----------------------------------------------------------------------


@pytest.mark.django_db
def test_healthz_answers_200_when_the_database_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "database": "ok", "migrations": "ok"}


# --- gunicorn ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Web:
    """One gunicorn started as the Procfile does (with config/gunicorn.conf.py), its access log
    and error output in files."""

    def __init__(self, tmp_path: Path, name: str, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.access_log = tmp_path / f"{name}.access.log"
        self.error_log = tmp_path / f"{name}.error.log"
        with open(self.error_log, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    GUNICORN,
                    "-c",
                    "config/gunicorn.conf.py",
                    "config.wsgi",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    "1",
                    "--access-logfile",
                    str(self.access_log),
                ],
                cwd=ROOT,
                env=env,
                stdout=err,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "gunicorn exited:\n" + self.error_log.read_text()
            with contextlib.suppress(requests.RequestException):
                requests.get(f"{self.url}/healthz", timeout=5)
                return
            time.sleep(0.2)
        raise AssertionError("gunicorn did not answer:\n" + self.error_log.read_text())

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(
            self.url + path, headers=VIA_PROXY, timeout=30, allow_redirects=False, **kwargs
        )

    def post(self, path: str, **kwargs) -> requests.Response:
        headers = {**VIA_PROXY, **kwargs.pop("headers", {})}
        return requests.post(
            self.url + path, headers=headers, timeout=30, allow_redirects=False, **kwargs
        )

    def stop(self) -> None:
        """SIGTERM, so the logs are flushed and closed."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def start_web(tmp_path):
    started: list[Web] = []

    def start(name: str, **env: str) -> Web:
        web = Web(tmp_path, name, clean_env(tmp_path, HOME=str(tmp_path), **env))
        started.append(web)
        return web

    yield start
    for web in started:
        web.stop()


def token_for(contact_id) -> str:
    """An unsubscribe token as the app signs it, with the production key of the process."""
    return signing.dumps(str(contact_id), salt=UNSUBSCRIBE_SALT, compress=True, key=SECRET_KEY)


def test_database_url() -> str:
    s = connection.settings_dict
    auth = quote(s["USER"] or "", safe="")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"], safe="")
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}{port}/{s['NAME']}"


test_database_url.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.mark.e2e
def test_while_the_database_is_down_health_and_unsubscribe_answer_503(start_web, tmp_path):
    down = f"postgres://nobody@127.0.0.1:{free_port()}/lifecycle"  # nothing listens there
    web = start_web("down", **PRODUCTION_ENV, DATABASE_URL=down)
    health = web.get("/healthz")
    assert health.status_code == 503
    assert health.json() == {"ok": False, "database": "unavailable"}

    token = token_for(uuid.uuid4())
    page = web.get(f"/unsubscribe/{token}")
    assert page.status_code == 503 and page.headers["Retry-After"] == "60"
    assert "try again in a minute" in page.text
    clicked = web.post(f"/unsubscribe/{token}", data={"action": "unsubscribe"})
    assert clicked.status_code == 503 and "try again in a minute" in clicked.text

    web.stop()
    access = web.access_log.read_text()
    assert access.count("/unsubscribe/[redacted]") == 2
    errors = web.error_log.read_text()
    assert "Service Unavailable: /unsubscribe/[redacted]" in errors  # Django's request log
    assert token not in access and token not in errors


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_unsubscribe_tokens_never_reach_the_logs_and_instances_keep_their_own_sockets(
    start_web, tmp_path
):
    contact, _ = contact_upsert(email="ann@example.com")
    own_socket = tmp_path / "b.ctl"
    a = start_web("a", **PRODUCTION_ENV, DATABASE_URL=test_database_url())
    b = start_web(
        "b",
        **PRODUCTION_ENV,
        DATABASE_URL=test_database_url(),
        GUNICORN_CONTROL_SOCKET=str(own_socket),
    )
    assert a.get("/healthz").json() == {"ok": True, "database": "ok", "migrations": "ok"}
    assert b.get("/healthz").status_code == 200
    # HTTPS only: plain HTTP is redirected, HTTPS (as the proxy reports it) gets HSTS.
    plain = requests.get(f"{a.url}/admin/login/", timeout=30, allow_redirects=False)
    assert plain.status_code == 301
    assert plain.headers["Location"] == f"https://127.0.0.1:{a.port}/admin/login/"
    login = a.get("/admin/login/")
    assert login.status_code == 200
    assert login.headers["Strict-Transport-Security"] == (
        "max-age=31536000; includeSubDomains; preload"
    )

    token = token_for(contact.pk)
    page = a.get(f"/unsubscribe/{token}")
    assert page.status_code == 200 and "ann@example.com" in page.text
    # The page's own form posts back to it, so the browser sends the page as its Referer.
    done = a.post(
        f"/unsubscribe/{token}",
        data={"action": "unsubscribe"},
        headers={"Referer": f"https://lifecycle.example.com/unsubscribe/{token}"},
    )
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert Contact.objects.get(pk=contact.pk).subscribed is False
    assert b.get(f"/unsubscribe/{token}-tampered").status_code == 400

    # gunicorn's control socket: none at the per-user default path that every instance would
    # share; b has the one it was given, and a stopping leaves it alone.
    deadline = time.monotonic() + 10
    while not own_socket.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert own_socket.is_socket()
    a.stop()
    assert own_socket.is_socket()
    assert not (tmp_path / ".gunicorn").exists()
    b.stop()

    for web in (a, b):
        access = web.access_log.read_text()
        assert "/unsubscribe/[redacted]" in access
        assert token not in access and token not in web.error_log.read_text()
    assert '"https://lifecycle.example.com/unsubscribe/[redacted]"' in a.access_log.read_text()
