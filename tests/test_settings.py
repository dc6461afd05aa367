"""Settings safety: production refuses the development secret key."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_settings(**env):
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_to_start_with_the_development_secret_key():
    result = load_settings(DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY is the development key" in result.stderr


def test_production_starts_with_its_own_secret_key_and_development_with_none():
    assert load_settings(DEBUG="false", SECRET_KEY="a-long-random-production-key").returncode == 0
    assert load_settings(DEBUG="true").returncode == 0


def test_an_email_batch_size_outside_what_providers_take_stops_the_start_up():
    for wrong in ("0", "501"):
        result = load_settings(DEBUG="true", EMAIL_BATCH_SIZE=wrong)
        assert result.returncode != 0
        assert "EMAIL_BATCH_SIZE must be 1 to 500" in result.stderr
    assert load_settings(DEBUG="true", EMAIL_BATCH_SIZE="500").returncode == 0
