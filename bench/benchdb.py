"""What the benchmarks need: a database of their own and a Django set up on it.

The database is created on the server of DATABASE_URL, or on a throwaway PostgreSQL started
with scripts/pg-throwaway.sh when DATABASE_URL is unset, and dropped (and the server stopped)
at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
PG_THROWAWAY = ROOT / "scripts" / "pg-throwaway.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BenchDatabase:
    def __init__(self, name: str, log):
        self.name = name
        self.log = log
        self.throwaway_dir: Path | None = None
        self.server_url = ""
        self.url = ""
        self.created = False

    def create(self) -> None:
        base = os.environ.get("DATABASE_URL", "")
        if not base:
            self.throwaway_dir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
            port = free_port()
            self.log(f"DATABASE_URL unset: starting a throwaway PostgreSQL on port {port}")
            out = subprocess.run(
                [str(PG_THROWAWAY), "start", str(self.throwaway_dir), str(port)],
                check=True,
                capture_output=True,
                text=True,
            )
            base = out.stdout.strip().splitlines()[-1]
        if not base.startswith(("postgres://", "postgresql://")):
            raise SystemExit(f"DATABASE_URL must be a PostgreSQL URL, got {base!r}")
        self.server_url = base
        parts = urlsplit(base)
        self.url = urlunsplit(parts._replace(path="/" + self.name))
        with self.admin_connection() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.created = True
        self.log(f"database {self.name} created on {parts.hostname}:{parts.port or 5432}")

    def admin_connection(self):
        import psycopg

        parts = urlsplit(self.server_url)
        return psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True)

    def connect(self):
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def drop(self) -> None:
        if self.created:
            if "django" in sys.modules:
                from django.db import connections

                connections.close_all()
            with contextlib.suppress(Exception), self.admin_connection() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
                self.log(f"database {self.name} dropped")
        if self.throwaway_dir:
            subprocess.run(
                [str(PG_THROWAWAY), "stop", str(self.throwaway_dir)],
                check=False,
                capture_output=True,
            )
            shutil.rmtree(self.throwaway_dir, ignore_errors=True)


def migrate_and_setup_django(env: dict[str, str]) -> None:
    """Migrates the bench database in a subprocess, then sets Django up in this one."""
    subprocess.run(
        [str(PYTHON), "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=env, check=True
    )
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
