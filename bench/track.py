"""Load test: POST /v1/track against a bare DRF reference endpoint, on gunicorn and PostgreSQL.

    .venv/bin/python bench/track.py [--seconds 20] [--concurrency 16] [--warmup 3]
                                    [--gunicorn "--workers 4 ..."] [--db-name NAME]
    make bench-track

What one run does:
1. Creates its own database on the PostgreSQL server of DATABASE_URL (or, when DATABASE_URL is
   unset, on a throwaway server started with scripts/pg-throwaway.sh), migrates it, and drops it
   (and stops the throwaway server) at the end, whatever happens.
2. Sets up a realistic mix: 3 enabled workflows triggered by the events the load sends
   (user.signup -> Onboarding, order.completed -> Receipts with re-entry, user.activated ->
   Activation follow-up), one disabled workflow, 20,000 known contacts with one past event each,
   5,000 Onboarding executions WAITING for user.activated and 5,000 finished ones.
3. Serves the app with gunicorn on 127.0.0.1 (DEBUG=false, a random SECRET_KEY, persistent
   database connections: CONN_MAX_AGE=600 with health checks) and the reference endpoint
   bench/reference.py enabled (BENCH_REFERENCE_ENDPOINT=true). Both endpoints run on the same
   server, with the same gunicorn configuration and the same public API key.
4. Loads each endpoint from a second process, `wrk` (C, epoll, one thread; apt-get install wrk)
   with a Lua script, for a fixed time at --concurrency keep-alive connections, after a
   warm-up that is not counted. The body mix, the same for both endpoints: 30% new contacts
   (user.signup, with a persistent:false value), 70% known contacts (order.completed 35%,
   user.activated 30% - a quarter of them resume a WAITING execution at first - and
   page.viewed 35%, which triggers nothing).
5. Then loads rejected requests on /v1/track: bad keys (wrong key, missing header, wrong
   scheme -> 401) and bad bodies with a valid key (invalid JSON, invalid email, missing event,
   data not an object -> 400), checking the status codes and that the row counts (contacts,
   events, executions, idempotency keys, plus the newest contact update and the executions'
   version sum) are unchanged.

It prints, per phase: requests/s, p50/p90/p99/max latency, errors (socket errors and
unexpected statuses), and CPU seconds per request spent by gunicorn, by the PostgreSQL backends
(when the server is on this machine) and by wrk itself. On a 2-core machine wrk competes with
the server for CPU: its share is printed, so the cost it steals is visible. Finally the ratio
track/reference of throughputs and whether the target holds: ratio >= 1.0 and /v1/track p99
under 50 ms (issue 2). The exit status is 0 unless the bench itself fails; --strict makes a
missed target exit 1.

The gunicorn configuration (default `--workers 4`, sync workers, see
DEFAULT_GUNICORN for why) can be changed with --gunicorn; it is always the same for both
endpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.benchdb import (  # noqa: E402 - run as a script from any folder
    ROOT,
    BenchDatabase,
    free_port,
    migrate_and_setup_django,
)

GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"

# On the quiet 2-core machine, 4 sync workers beat gthread 2x4 for both endpoints: /v1/track
# 795 req/s with p99 36 ms against 748 req/s with p99 54 ms (the reference: 428 against 353).
# Threads of one process share the GIL, which shows in the tail. The ratio was ~2 under every
# configuration tried (sync 4; gthread 2x4, 2x8, 3x2, 4x2, 4x4). Production runs the same
# (Procfile), behind a buffering proxy as gunicorn recommends for sync workers.
DEFAULT_GUNICORN = "--workers 4"

KNOWN_CONTACTS = 20_000
WAITING_EXECUTIONS = 5_000
FINISHED_EXECUTIONS = 5_000
TARGET_RATIO = 1.0
TARGET_P99_MS = 50.0

THIRD_WORKFLOW = {
    "name": "Activation follow-up",
    "description": "Thanks the contact once they activate.",
    "trigger_event": "user.activated",
    "allow_reentry": False,
    "enabled": True,
    "steps": [
        {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "days"}},
        {"key": "tag", "type": "update_contact", "config": {"set": {"stage": "activated"}}},
    ],
    "transitions": [{"from": "trigger", "to": "pause"}, {"from": "pause", "to": "tag"}],
}
DISABLED_WORKFLOW = {
    "name": "Pricing page (disabled)",
    "description": "",
    "trigger_event": "page.viewed",
    "allow_reentry": True,
    "enabled": False,
    "steps": [{"key": "tag", "type": "update_contact", "config": {"set": {"saw": "pricing"}}}],
    "transitions": [{"from": "trigger", "to": "tag"}],
}

# --- wrk scripts ---------------------------------------------------------------------------------

LUA_COMMON = r"""
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
counter = 0
codes = {}
function init(args)
  math.randomseed(os.time() * 1000 + tid * 7919 + math.floor(os.clock() * 1e6))
end
local function count_response(status, headers, body)
  local k = tostring(status)
  codes[k] = (codes[k] or 0) + 1
end
%(response_hook)s
function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    local c = t:get("codes")
    if c then
      for k, v in pairs(c) do merged[k] = (merged[k] or 0) + v end
    end
  end
  local parts = {}
  for k, v in pairs(merged) do table.insert(parts, string.format('"%%s":%%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50":%%d,"p90":%%d,"p99":%%d,"max":%%d,"codes":{%%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    table.concat(parts, ",")))
end
"""

LUA_MIX = r"""
local PATH = "%(path)s"
local HEADERS = {["Authorization"] = "Bearer %(key)s", ["Content-Type"] = "application/json",
                 ["Host"] = "127.0.0.1"}
local KNOWN = %(known)d
local NEW_FRACTION = %(new_fraction)f
local PHASE = "%(phase)s"
function request()
  counter = counter + 1
  local email, event, data
  if math.random() < NEW_FRACTION then
    email = string.format("new-%%s-%%d-%%d-%%d@bench.example", PHASE, tid, counter,
                          math.random(0, 999999))
    event = "user.signup"
    data = string.format(
      '{"firstName":"Ann","plan":"%%s","source":{"value":"ads","persistent":false}}',
      (counter %% 3 == 0) and "pro" or "free")
  else
    email = string.format("known-%%d@bench.example", math.random(0, KNOWN - 1))
    local r = math.random()
    if r < 0.35 then
      event = "order.completed"
      data = string.format('{"order_id":"%%s-%%d-%%d","total":%%d.50,"currency":"EUR"}',
                           PHASE, tid, counter, counter %% 200)
    elseif r < 0.65 then
      event = "user.activated"
      data = '{}'
    else
      event = "page.viewed"
      data = '{"path":"/pricing","ref":{"value":"newsletter","persistent":false}}'
    end
  end
  local body = string.format('{"event":"%%s","email":"%%s","data":%%s}', event, email, data)
  return wrk.format("POST", PATH, HEADERS, body)
end
"""

LUA_BAD_KEY = r"""
local GOOD = '{"event":"user.signup","email":"someone@bench.example","data":{"plan":"pro"}}'
local variants = {
  {["Authorization"] = "Bearer pk_thisKeyDoesNotExist0000000000000000000000000",
   ["Content-Type"] = "application/json", ["Host"] = "127.0.0.1"},
  {["Authorization"] = "Bearer sk_thisKeyDoesNotExistEither00000000000000000000",
   ["Content-Type"] = "application/json", ["Host"] = "127.0.0.1"},
  {["Content-Type"] = "application/json", ["Host"] = "127.0.0.1"},
  {["Authorization"] = "Basic dXNlcjpwYXNz", ["Content-Type"] = "application/json",
   ["Host"] = "127.0.0.1"},
}
function request()
  counter = counter + 1
  return wrk.format("POST", "/v1/track", variants[(counter %% #variants) + 1], GOOD)
end
response = count_response
"""

LUA_BAD_BODY = r"""
local HEADERS = {["Authorization"] = "Bearer %(key)s", ["Content-Type"] = "application/json",
                 ["Host"] = "127.0.0.1"}
local bodies = {
  '{"event":"user.signup","email":"ann@bench.example"',
  '{"event":"user.signup","email":"not-an-email","data":{"plan":"pro"}}',
  '{"email":"ann@bench.example","data":{"plan":"pro"}}',
  '{"event":"user.signup","email":"ann@bench.example","data":["not","an","object"]}',
  '{"event":"","email":"","data":7}',
}
function request()
  counter = counter + 1
  return wrk.format("POST", "/v1/track", HEADERS, bodies[(counter %% #bodies) + 1])
end
response = count_response
"""


def lua(body: str, *, count_codes: bool, **values) -> str:
    hook = "" if count_codes else "-- statuses not counted: non-2xx arrive in summary.errors.status"
    return (LUA_COMMON % {"response_hook": hook}) + (body % values)


# --- processes and measurements ------------------------------------------------------------------


def log(message: str) -> None:
    print(message, flush=True)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User+system CPU of one process, 0 when it is not visible from here."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class Phase:
    name: str
    requests: int = 0
    seconds: float = 0.0
    socket_errors: int = 0
    bad_status: int = 0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    codes: dict[str, int] = field(default_factory=dict)
    cpu_app: float = 0.0
    cpu_db: float | None = None
    cpu_wrk: float = 0.0
    machine_busy_pct: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def per_request_ms(self, cpu: float | None) -> str:
        if cpu is None or not self.requests:
            return "n/a"
        return f"{cpu * 1000 / self.requests:.2f}"


def combine(phases: list[Phase]) -> Phase:
    """Sums the rounds of one endpoint. wrk gives no raw histogram, so p50/p90 are the rounds'
    request-weighted means and p99/max the worst round's (conservative)."""
    total = sum(p.requests for p in phases) or 1
    return Phase(
        name=phases[0].name,
        requests=sum(p.requests for p in phases),
        seconds=sum(p.seconds for p in phases),
        socket_errors=sum(p.socket_errors for p in phases),
        bad_status=sum(p.bad_status for p in phases),
        p50_ms=sum(p.p50_ms * p.requests for p in phases) / total,
        p90_ms=sum(p.p90_ms * p.requests for p in phases) / total,
        p99_ms=max(p.p99_ms for p in phases),
        max_ms=max(p.max_ms for p in phases),
        cpu_app=sum(p.cpu_app for p in phases),
        cpu_db=None
        if any(p.cpu_db is None for p in phases)
        else sum(p.cpu_db or 0 for p in phases),
        cpu_wrk=sum(p.cpu_wrk for p in phases),
        machine_busy_pct=sum(p.machine_busy_pct * p.seconds for p in phases)
        / (sum(p.seconds for p in phases) or 1),
    )


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-track-"))
        self.db = BenchDatabase(args.db_name or f"bench_track_{os.getpid()}", log)
        self.db_url = ""
        self.gunicorn: subprocess.Popen | None = None
        self.port = free_port()
        self.key = ""

    # -- database ---------------------------------------------------------------------------------
    def start_database(self) -> None:
        self.db.create()
        self.db_url = self.db.url

    def drop_database(self) -> None:
        self.db.drop()

    # -- the app ----------------------------------------------------------------------------------
    def app_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.db_url,
            DEBUG="false",
            SECRET_KEY=secrets.token_urlsafe(50),
            ALLOWED_HOSTS="127.0.0.1,localhost",
            CONN_MAX_AGE="600",
            BENCH_REFERENCE_ENDPOINT="true",
            LOG_LEVEL="WARNING",
            EMAIL_PROVIDER="locmem",
        )
        return env

    def migrate_and_seed(self) -> None:
        migrate_and_setup_django(self.app_env())
        from django.db import connection
        from django.utils import timezone

        from contacts_app.models import ApiKey, Contact, Event
        from contacts_app.services import apikey_create
        from workflows_app.files import document_import
        from workflows_app.models import Execution, Step, Workflow

        started = time.monotonic()
        document = json.loads((ROOT / "demo" / "workflows.json").read_text())
        document["workflows"] += [THIRD_WORKFLOW, DISABLED_WORKFLOW]
        document_import(document)
        # Public keys are rate-limited by default; a limit far above the load keeps the per-call
        # cost of counting (one more statement) in the figures without refusing anything.
        _, self.key = apikey_create(
            name="bench", kind=ApiKey.PUBLIC, rate_limit_per_minute=1_000_000_000
        )

        now = timezone.now()
        plans = ["free", "pro", "team"]
        contacts = [
            Contact(
                email=f"known-{i}@bench.example",
                data={"firstName": f"Known{i}", "plan": plans[i % 3]},
                created_at=now,
                updated_at=now,
            )
            for i in range(KNOWN_CONTACTS)
        ]
        Contact.objects.bulk_create(contacts, batch_size=2000)
        Event.objects.bulk_create(
            [
                Event(contact=c, name="user.signup", data={"plan": c.data["plan"]}, created_at=now)
                for c in contacts
            ],
            batch_size=2000,
        )
        onboarding = Workflow.objects.get(trigger_event="user.signup", enabled=True)
        wait_step = Step.objects.get(workflow=onboarding, type="wait_for_event")
        later = now + timedelta(days=2)
        earlier = now - timedelta(hours=1)
        executions = [
            Execution(
                workflow=onboarding,
                contact=contacts[i],
                status=Execution.WAITING,
                current_step=wait_step,
                waiting_for="user.activated",
                wait_started_at=earlier,
                wake_at=later,
                once=True,
                context={"plan": contacts[i].data["plan"]},
                started_at=earlier,
                updated_at=earlier,
            )
            for i in range(WAITING_EXECUTIONS)
        ] + [
            Execution(
                workflow=onboarding,
                contact=contacts[i],
                status=Execution.COMPLETED,
                once=True,
                context={},
                started_at=earlier,
                updated_at=earlier,
                finished_at=earlier,
            )
            for i in range(WAITING_EXECUTIONS, WAITING_EXECUTIONS + FINISHED_EXECUTIONS)
        ]
        Execution.objects.bulk_create(executions, batch_size=2000)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        connection.close()
        log(
            f"seeded: 3 enabled workflows + 1 disabled, {KNOWN_CONTACTS} known contacts, "
            f"{WAITING_EXECUTIONS} executions WAITING for user.activated "
            f"({time.monotonic() - started:.1f}s)"
        )

    def start_gunicorn(self) -> None:
        command = [
            str(GUNICORN),
            "-c",
            "config/gunicorn.conf.py",
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--keep-alive",
            "30",
            "--backlog",
            "2048",
            *self.args.gunicorn.split(),
        ]
        log("gunicorn: " + " ".join(command[1:]))
        self.gunicorn = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.app_env(),
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "gunicorn.log", "w"),  # noqa: SIM115 - closed with the process
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.gunicorn.poll() is not None:
                raise SystemExit("gunicorn exited:\n" + (self.tmp / "gunicorn.log").read_text())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("gunicorn did not answer within 30 s")

    def stop_gunicorn(self) -> None:
        if self.gunicorn and self.gunicorn.poll() is None:
            self.gunicorn.send_signal(signal.SIGTERM)
            try:
                self.gunicorn.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.gunicorn.kill()
                self.gunicorn.wait()

    # -- load -------------------------------------------------------------------------------------
    def db_backend_pids(self) -> list[int]:
        with self.db.connect() as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.db.name,),
            ).fetchall()
        pids = []
        for (pid,) in rows:
            try:
                if Path(f"/proc/{pid}/comm").read_text().startswith("postgres"):
                    pids.append(pid)
            except OSError:
                pass
        return pids

    def run_wrk(self, name: str, script: str, path: str, seconds: int, measure: bool) -> Phase:
        script_path = self.tmp / ("".join(c if c.isalnum() else "-" for c in name) + ".lua")
        script_path.write_text(script)
        command = [
            "wrk",
            "-t",
            str(self.args.wrk_threads),
            "-c",
            str(self.args.concurrency),
            "-d",
            f"{seconds}s",
            "--timeout",
            "5s",
            "-s",
            str(script_path),
            f"http://127.0.0.1:{self.port}{path}",
        ]
        app_pids = [self.gunicorn.pid, *children(self.gunicorn.pid)] if self.gunicorn else []
        db_pids = self.db_backend_pids() if measure else []
        app_before = sum(cpu_seconds(p) for p in app_pids)
        db_before = sum(cpu_seconds(p) for p in db_pids)
        busy_before = machine_busy()
        rusage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = subprocess.run(command, capture_output=True, text=True)
        rusage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy_after = machine_busy()
        app_after = sum(cpu_seconds(p) for p in app_pids)
        db_after = sum(cpu_seconds(p) for p in db_pids)
        line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
        if result.returncode != 0 or line is None:
            raise SystemExit(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        data = json.loads(line.removeprefix("BENCH_JSON "))
        phase = Phase(
            name=name,
            requests=data["requests"],
            seconds=data["duration_us"] / 1e6,
            socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
            bad_status=data["status"],
            p50_ms=data["p50"] / 1000,
            p90_ms=data["p90"] / 1000,
            p99_ms=data["p99"] / 1000,
            max_ms=data["max"] / 1000,
            codes=data["codes"],
            cpu_app=app_after - app_before,
            cpu_db=(db_after - db_before) if db_pids else None,
            cpu_wrk=(rusage_after.ru_utime + rusage_after.ru_stime)
            - (rusage_before.ru_utime + rusage_before.ru_stime),
            machine_busy_pct=100
            * (busy_after[0] - busy_before[0])
            / max(1, busy_after[1] - busy_before[1]),
        )
        return phase

    def load(self, name: str, script: str, path: str) -> Phase:
        if self.args.warmup > 0:
            self.run_wrk(name + "-warmup", script, path, self.args.warmup, measure=False)
        phase = self.run_wrk(name, script, path, self.args.seconds, measure=True)
        self.report(phase)
        return phase

    def report(self, p: Phase) -> None:
        cores = os.cpu_count() or 1
        log(
            f"  {p.name:<22} {p.rps:8.0f} req/s  p50 {p.p50_ms:6.2f} ms  p90 {p.p90_ms:6.2f} ms  "
            f"p99 {p.p99_ms:6.2f} ms  max {p.max_ms:7.2f} ms  requests {p.requests}  "
            f"socket errors {p.socket_errors}  non-2xx {p.bad_status}"
        )
        log(
            f"  {'':<22} CPU ms/request: gunicorn {p.per_request_ms(p.cpu_app)}, "
            f"PostgreSQL {p.per_request_ms(p.cpu_db)}, wrk {p.per_request_ms(p.cpu_wrk)} "
            f"(wrk used {100 * p.cpu_wrk / p.seconds / cores:.1f}% of {cores} cores; "
            f"machine busy {p.machine_busy_pct:.0f}%)"
        )
        if p.codes:
            log(f"  {'':<22} statuses: {dict(sorted(p.codes.items()))}")

    def row_counts(self) -> dict[str, Any]:
        """Table fingerprint, read once the server has finished the requests wrk left in flight
        (wrk stops on time; the server still completes what it had accepted)."""
        previous = None
        for _ in range(50):
            current = self._row_counts()
            if current == previous:
                return current
            previous = current
            time.sleep(0.2)
        assert previous is not None
        return previous

    def _row_counts(self) -> dict[str, Any]:
        with self.db.connect() as conn:
            return {
                "contacts": conn.execute("SELECT count(*) FROM contacts_app_contact").fetchone()[0],
                "events": conn.execute("SELECT count(*) FROM contacts_app_event").fetchone()[0],
                "executions": conn.execute(
                    "SELECT count(*) FROM workflows_app_execution"
                ).fetchone()[0],
                "idempotency keys": conn.execute(
                    "SELECT count(*) FROM contacts_app_idempotencykey"
                ).fetchone()[0],
                "newest contact update": str(
                    conn.execute("SELECT max(updated_at) FROM contacts_app_contact").fetchone()[0]
                ),
                "execution versions": conn.execute(
                    "SELECT coalesce(sum(version), 0) FROM workflows_app_execution"
                ).fetchone()[0],
            }

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> int:
        a = self.args
        cores = os.cpu_count()
        log(
            f"bench/track.py: {a.seconds}s per endpoint after {a.warmup}s warm-up, "
            f"{a.concurrency} connections, wrk -t{a.wrk_threads}, {cores} cores"
        )
        self.start_database()
        self.migrate_and_seed()
        self.start_gunicorn()
        mix = {"key": self.key, "known": KNOWN_CONTACTS, "new_fraction": 0.30}

        log(
            f"\naccepted requests (same body mix for both; {a.rounds} alternating rounds of "
            f"{a.seconds // a.rounds}s each, so background load hits both alike):"
        )
        scripts = {
            "POST /v1/track": (
                lua(LUA_MIX, count_codes=False, path="/v1/track", phase="track", **mix),
                "/v1/track",
            ),
            "POST /bench/reference": (
                lua(LUA_MIX, count_codes=False, path="/bench/reference", phase="ref", **mix),
                "/bench/reference",
            ),
        }
        rounds: dict[str, list[Phase]] = {name: [] for name in scripts}
        before = self.row_counts()
        for number in range(a.rounds):
            for name, (script, path) in scripts.items():
                if number == 0 and a.warmup > 0:
                    self.run_wrk(name + "-warmup", script, path, a.warmup, measure=False)
                phase = self.run_wrk(name, script, path, a.seconds // a.rounds, measure=True)
                rounds[name].append(phase)
                log(
                    f"    round {number + 1} {name:<22} {phase.rps:6.0f} req/s  "
                    f"p50 {phase.p50_ms:6.2f} ms  p99 {phase.p99_ms:6.2f} ms"
                )
        after = self.row_counts()
        track = combine(rounds["POST /v1/track"])
        reference = combine(rounds["POST /bench/reference"])
        self.report(track)
        self.report(reference)
        log(
            f"  {'':<22} both recorded: +{after['contacts'] - before['contacts']} contacts, "
            f"+{after['events'] - before['events']} events, "
            f"+{after['executions'] - before['executions']} executions (/v1/track only); "
            f"WAITING executions left: {self.waiting_left()} of {WAITING_EXECUTIONS}"
        )

        log("\nrejected requests on /v1/track (must write nothing):")
        rejected_ok = True
        for name, script, expected in (
            ("bad key (401)", lua(LUA_BAD_KEY, count_codes=True), {"401"}),
            ("bad body (400)", lua(LUA_BAD_BODY, count_codes=True, key=self.key), {"400"}),
        ):
            before = self.row_counts()
            phase = self.load(name, script, "/v1/track")
            after = self.row_counts()
            unexpected = set(phase.codes) - expected
            unchanged = before == after
            rejected_ok &= unchanged and not unexpected and phase.socket_errors == 0
            log(
                f"  {'':<22} rows unchanged: {'yes' if unchanged else 'NO'} {after}"
                + (f"; UNEXPECTED statuses {sorted(unexpected)}" if unexpected else "")
            )

        ratio = track.rps / reference.rps if reference.rps else 0.0
        errors = track.socket_errors + track.bad_status + reference.socket_errors
        errors += reference.bad_status
        met = ratio >= TARGET_RATIO and track.p99_ms < TARGET_P99_MS and errors == 0
        log(
            f"\nratio /v1/track / reference = {track.rps:.0f} / {reference.rps:.0f} = "
            f"{ratio:.2f}   /v1/track p99 {track.p99_ms:.1f} ms (reference {reference.p99_ms:.1f}"
            f" ms)   errors {errors}"
        )
        log(
            f"target (ratio >= {TARGET_RATIO}, p99 < {TARGET_P99_MS:.0f} ms at "
            f"{a.concurrency} connections, no errors): {'MET' if met else 'MISSED'}; "
            f"rejected requests wrote nothing: {'yes' if rejected_ok else 'NO'}"
        )
        if not rejected_ok:
            return 1
        return 1 if (a.strict and not met) else 0

    def waiting_left(self) -> int:
        with self.db.connect() as conn:
            return conn.execute(
                "SELECT count(*) FROM workflows_app_execution WHERE status = 'WAITING'"
            ).fetchone()[0]

    def cleanup(self) -> None:
        self.stop_gunicorn()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if not self.args.keep_db:
            self.drop_database()
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--seconds", type=int, default=30, help="measured seconds per endpoint (default 30)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating track/reference rounds (default 3)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="uncounted seconds before each")
    parser.add_argument("--concurrency", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--gunicorn", default=DEFAULT_GUNICORN, help="extra gunicorn arguments")
    parser.add_argument("--db-name", default="", help="database name (default bench_track_PID)")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args()
    args.rounds = max(1, min(args.rounds, args.seconds))
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    if not GUNICORN.exists():
        raise SystemExit(f"{GUNICORN} not found: run `make install` first")
    bench = Bench(args)
    try:
        return bench.run()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
