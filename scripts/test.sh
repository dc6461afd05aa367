#!/usr/bin/env bash
# The whole test suite on PostgreSQL. Uses DATABASE_URL when set; otherwise starts a throwaway
# PostgreSQL of its own (as the 'postgres' user when run as root) and removes it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBUG=${DEBUG:-true}
if [ -z "${DATABASE_URL:-}" ]; then
  PGDIR=$(mktemp -d /tmp/lifecycle-pg.XXXXXX)
  PORT=${TEST_PG_PORT:-$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
  trap 'scripts/pg-throwaway.sh stop "$PGDIR"; rm -rf "$PGDIR"' EXIT
  DATABASE_URL=$(scripts/pg-throwaway.sh start "$PGDIR" "$PORT")
  export DATABASE_URL
  echo "Started a throwaway PostgreSQL at $DATABASE_URL"
fi
.venv/bin/python -m pytest "$@"
