"""A real, throwaway `redis-server` for the tests of the Redis broker (Q_BROKER_URL).

On a free loopback port, in a temporary directory, with persistence off; stopped afterwards.
Without redis-server the tests skip saying why, except under CI (CI=true), where that is a
failure (`.ci/run` installs it, as it does Chromium for the browser tests).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.e2e.conftest import free_port

REDIS_SERVER = os.environ.get("REDIS_SERVER_PATH") or shutil.which("redis-server") or ""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"the Redis broker tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty Redis (database 0) for this test only."""
    if not REDIS_SERVER or not Path(REDIS_SERVER).exists():
        _unavailable("no redis-server: apt-get install redis-server (or set REDIS_SERVER_PATH)")
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    log = open(data / "redis.log", "wb")  # noqa: SIM115 - handed to the process
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data),
        ],  # fmt: skip
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"redis-server exited with {proc.returncode}: "
                    + (data / "redis.log").read_text(errors="replace")[-2000:]
                )
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise AssertionError("redis-server did not answer within 15 s") from None
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
