#!/usr/bin/env bash
# The whole test suite, in two runs; extra arguments go to pytest in both. Both must pass.
# 1. SQLite, what `make run` runs on (DATABASE_URL unset, a throwaway SQLITE_PATH): the tests
#    marked `sqlite` (make run's commands and processes on a fresh file) and the engine, step,
#    /v1/track and graph-lock tests that hold on both databases (ALSO_ON_SQLITE in
#    tests/conftest.py).
# 2. PostgreSQL, the whole suite. Uses DATABASE_URL when set; otherwise starts a throwaway
#    PostgreSQL of its own (as the 'postgres' user when run as root) and removes it afterwards.
# The PostgreSQL run's summary closes the output; a failed SQLite run's summary follows it.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBUG=${DEBUG:-true}
SQLITE_DIR=$(mktemp -d /tmp/lifecycle-sqlite.XXXXXX)
PGDIR=
cleanup() {
  if [ -n "$PGDIR" ]; then scripts/pg-throwaway.sh stop "$PGDIR"; rm -rf "$PGDIR"; fi
  rm -rf "$SQLITE_DIR"
}
trap cleanup EXIT

sqlite_status=0
env -u DATABASE_URL TEST_SQLITE_PASS=1 SQLITE_PATH="$SQLITE_DIR/db.sqlite3" PYTHONUNBUFFERED=1 \
  .venv/bin/python -m pytest "$@" 2>&1 | tee "$SQLITE_DIR/output" || sqlite_status=$?
if [ "$sqlite_status" -eq 2 ]; then
  exit 2  # interrupted (Ctrl-C): stop here
fi

if [ -z "${DATABASE_URL:-}" ]; then
  PGDIR=$(mktemp -d /tmp/lifecycle-pg.XXXXXX)
  PORT=${TEST_PG_PORT:-$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
  DATABASE_URL=$(scripts/pg-throwaway.sh start "$PGDIR" "$PORT")
  export DATABASE_URL
  echo "Started a throwaway PostgreSQL at $DATABASE_URL"
fi
pg_status=0
.venv/bin/python -m pytest "$@" || pg_status=$?

if [ "$sqlite_status" -ne 0 ] && [ "$sqlite_status" -ne 5 ]; then
  echo "The SQLite run above (what make run runs on) failed with exit code $sqlite_status:"
  tail -n 1 "$SQLITE_DIR/output"
  exit "$sqlite_status"
fi
# 5 is "no tests ran": fine for one run when the other ran what was asked for.
if [ "$pg_status" -eq 5 ] && [ "$sqlite_status" -eq 0 ]; then
  exit 0
fi
exit "$pg_status"
