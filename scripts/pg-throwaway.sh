#!/usr/bin/env bash
# Starts a throwaway PostgreSQL for the test suite and prints its DATABASE_URL.
#   scripts/pg-throwaway.sh start DIR PORT   -> prints postgres://... on stdout
#   scripts/pg-throwaway.sh stop DIR
# Runs the server as the 'postgres' system user when called as root (initdb refuses root).
set -euo pipefail
cmd=$1 dir=$2 port=${3:-55432}

find_bin() {
  local name=$1
  command -v "$name" 2>/dev/null && return
  ls /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n 1
}
PG_CTL=$(find_bin pg_ctl); INITDB=$(find_bin initdb)
if [ -z "$PG_CTL" ] || [ -z "$INITDB" ]; then
  echo "PostgreSQL server binaries not found: install the 'postgresql' package (apt-get install postgresql)." >&2
  exit 1
fi

as_owner() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && { id postgres >/dev/null 2>&1 || useradd --system --shell /usr/sbin/nologin postgres; chown postgres "$dir"; }
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_owner "$INITDB" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    if ! as_owner "$PG_CTL" -D "$dir/data" status >/dev/null 2>&1; then
      as_owner "$PG_CTL" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    fi
    echo "postgres://postgres@127.0.0.1:$port/lifecycle"
    ;;
  stop)
    [ -f "$dir/data/PG_VERSION" ] && as_owner "$PG_CTL" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
esac
