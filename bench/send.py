"""Send benchmark: emails per second through the real worker and clock, against a provider
stand-in that takes 0, 50 and 200 ms a call: batches sent by concurrent threads, one email per
call, and one at a time.

    .venv/bin/python bench/send.py [--contacts 2000] [--baseline-contacts 300]
                                   [--latencies 0,50,200] [--modes 16x50,16x1,1x1] [--workers 2]
                                   [--max-seconds 900] [--db-name NAME] [--strict] [--quick]
    make bench-send

What one run does:
1. Creates its own database on the PostgreSQL server of DATABASE_URL (or, when DATABASE_URL is
   unset, on a throwaway server started with scripts/pg-throwaway.sh), migrates it, and drops it
   (and stops the throwaway server) at the end, whatever happens.
2. Starts bench/provider.py, a local stand-in for Postmark's API, and configures the product
   for it as a deployment would, through the environment only (EMAIL_PROVIDER=postmark,
   ANYMAIL_POSTMARK_API_URL, ANYMAIL_POSTMARK_SERVER_TOKEN): the real anymail backend, the real
   ledger, a real HTTP call per email.
3. Creates a transactional order-confirmation template (a realistic HTML email: header, the
   order's lines in a Liquid loop, a button, footer) and a one-step workflow that sends it.
4. For every latency in --latencies and every mode in --modes, in the same run. A mode is
   ENGINE_CONCURRENCY x EMAIL_BATCH_SIZE; the default compares the product's settings (16
   threads, up to 50 emails per provider call: Postmark's batch API), the same threads with
   one email per call, and 1x1, one email at a time per worker: the baseline. For each: sets
   the stand-in's latency, inserts fresh contacts (--contacts; --baseline-contacts for 1x1,
   which is slow by design) and as many RUNNING executions due now (what /v1/track leaves
   behind), starts `manage.py qcluster` (Q_WORKERS=--workers) and `manage.py clock` with that
   mode, waits for every run to end, and stops them.
   Sends/s = (messages - 1) / (time of the last acceptance at the provider - time of the
   first).
5. Checks every run: each contact got exactly one message at the provider (none missing, no
   duplicate, no stray address) and has exactly one ledger row (templates_app Message), `sent`,
   carrying the provider's MessageID for it; every execution COMPLETED.

It prints a table: latency, mode, sends/s, end-to-end sends/s (from the insert), the
most calls the provider had open at once, CPU per send (worker processes, PostgreSQL backends),
the load of anything else on the machine meanwhile, duplicates/missing, and the goal of issue
11: >= 200 sends/s at 200 ms with 2 workers on 2 cores (for the product's settings, the first
mode), and how many times the one-at-a-time rate each other run reached. The exit status is 0
unless the bench itself fails (a check above, a process dying, a run not finishing in
--max-seconds); --strict makes a missed goal exit 1.

Sizes: --quick is --contacts 500 --baseline-contacts 100. Each run starts and stops the
processes (about 10 s); the one-at-a-time baselines take contacts x latency / workers (300 at
200 ms on 2 workers: 30 s); the concurrent runs what their rate allows.

Each worker process opens up to ENGINE_CONCURRENCY more PostgreSQL connections: the bench
refuses to start when workers x (concurrency + 2) + 20 is more than the server allows
(scripts/pg-throwaway.sh allows 200).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.benchdb import (  # noqa: E402 - run as a script from any folder
    PYTHON,
    ROOT,
    BenchDatabase,
    migrate_and_setup_django,
)
from bench.procstat import (  # noqa: E402
    CLK_TCK,
    cpu_model,
    log,
    machine_jiffies,
    pid_cpu,
    session_cpu,
    start_manage,
    wait_for_backends,
)
from bench.provider import ProviderStandIn  # noqa: E402

GOAL_SENDS = 200.0  # issue 11: sends/s with a 200 ms provider, 2 workers on 2 cores
GOAL_LATENCY_MS = 200
DEFAULTS = {"contacts": 2000, "baseline_contacts": 300}
QUICK = {"contacts": 500, "baseline_contacts": 100}

TEMPLATE_NAME = "Order confirmation"
TEMPLATE_SUBJECT = "Your order {{ orderId }} is confirmed"
TEMPLATE_HTML = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Order {{ orderId }}</title>
  <style>
    body { margin: 0; padding: 0; background: #f4f5f7; font-family: -apple-system, Segoe UI,
           Roboto, Helvetica, Arial, sans-serif; color: #1f2933; }
    .wrap { max-width: 600px; margin: 0 auto; padding: 24px; }
    .card { background: #ffffff; border-radius: 8px; padding: 32px; }
    h1 { font-size: 22px; margin: 0 0 16px; }
    table.lines { width: 100%; border-collapse: collapse; margin: 24px 0; }
    table.lines td { padding: 8px 0; border-bottom: 1px solid #e4e7eb; font-size: 14px; }
    td.qty, td.price { text-align: right; white-space: nowrap; }
    .total td { font-weight: bold; border-bottom: none; }
    .button { display: inline-block; background: #3b5bdb; color: #ffffff !important;
              padding: 12px 20px; border-radius: 6px; text-decoration: none; }
    .footer { font-size: 12px; color: #7b8794; text-align: center; padding: 16px; }
  </style>
</head>
<body>
  <div class="wrap">
    <div class="card">
      <h1>Thanks for your order, {{ firstName ?? there }}!</h1>
      <p>We have received order <strong>{{ orderId }}</strong> placed on {{ orderedOn }} and
         are getting it ready. You will get another email with the tracking number as soon as
         it ships{% if plan == "pro" %} (express shipping is included in your Pro
         plan){% endif %}.</p>
      <table class="lines" role="presentation">
        {% for line in items %}
        <tr>
          <td>{{ line.name }}</td>
          <td class="qty">&times; {{ line.qty }}</td>
          <td class="price">{{ line.price }} {{ currency }}</td>
        </tr>
        {% endfor %}
        <tr class="total">
          <td>Total</td><td></td><td class="price">{{ total }} {{ currency }}</td>
        </tr>
      </table>
      <p>Shipping to:<br>{{ data.company ?? firstName }}<br>{{ address.street }}<br>
         {{ address.postcode }} {{ address.city }}</p>
      <p><a class="button" href="https://shop.example.com/orders/{{ orderId }}">View your
         order</a></p>
      <p>Questions? Reply to this email or write to support@example.com; we answer within a
         working day.</p>
    </div>
    <div class="footer">
      Example Shop Ltd, 1 Market Street, Springfield &middot; You receive this email because
      you placed an order with us ({{ email }}).
    </div>
  </div>
</body>
</html>
"""


@dataclass(frozen=True)
class Mode:
    """How the workers send: ENGINE_CONCURRENCY threads, EMAIL_BATCH_SIZE emails per call."""

    concurrency: int
    batch: int

    @classmethod
    def parse(cls, text: str) -> Mode:
        threads, _, batch = text.strip().partition("x")
        mode = cls(int(threads), int(batch or 1))
        if mode.concurrency < 1 or mode.batch < 1:
            raise ValueError(f"{text!r}: both numbers must be at least 1")
        return mode

    @property
    def one_at_a_time(self) -> bool:
        return self.concurrency == 1 and self.batch == 1

    def __str__(self) -> str:
        return f"{self.concurrency}x{self.batch}"


@dataclass
class Result:
    latency_ms: int
    mode: Mode
    contacts: int
    sends_per_s: float
    end_to_end_per_s: float
    peak_in_flight: int
    worker_cpu_ms: float
    postgres_cpu_ms: float
    other_load: float  # cores busy with something else than this bench meanwhile
    duplicates: int
    missing: int

    goal_applies: bool = False  # the product's settings at the goal's latency


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-send-"))
        self.db = BenchDatabase(args.db_name or f"bench_send_{os.getpid()}", log)
        self.provider = ProviderStandIn()
        self.procs: dict[str, subprocess.Popen] = {}
        self.results: list[Result] = []
        self.workflow_id = 0
        self.failed_checks = 0
        self.secret_key = secrets.token_urlsafe(50)

    # -- database and Django ----------------------------------------------------------------------
    def app_env(self, mode: Mode | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.db.url,
            # As in production: DEBUG off (Django keeps no query log), a secret key of our own.
            DEBUG="false",
            SECRET_KEY=self.secret_key,
            Q_WORKERS=str(self.args.workers),
            Q_SYNC="false",
            LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING"),
            PYTHONUNBUFFERED="1",
            # Only so that `migrate` does not warn that provider events are refused: the bench
            # sends none.
            ANYMAIL_WEBHOOK_SECRET="bench:" + secrets.token_hex(16),
            **self.provider.env(),
        )
        if mode is not None:
            env["ENGINE_CONCURRENCY"] = str(mode.concurrency)
            env["EMAIL_BATCH_SIZE"] = str(mode.batch)
        return env

    def sql(self, statement: str, params: dict | None = None) -> list[tuple]:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(statement, params or {})
            return cursor.fetchall() if cursor.description else []

    def check_connections(self) -> None:
        """Each worker process holds its own connection plus one per concurrent send."""
        allowed = int(self.sql("SHOW max_connections")[0][0])
        most = max(mode.concurrency for mode in self.modes())
        needed = self.args.workers * (most + 2) + 20
        if needed > allowed:
            raise SystemExit(
                f"--workers {self.args.workers} with ENGINE_CONCURRENCY {most} may open about "
                f"{needed} PostgreSQL connections; the server allows {allowed}"
            )

    def create_workflow(self) -> None:
        from templates_app.models import Template
        from templates_app.services import template_create
        from workflows_app.services import workflow_create

        template_create(
            name=TEMPLATE_NAME,
            subject=TEMPLATE_SUBJECT,
            html=TEMPLATE_HTML,
            type=Template.TRANSACTIONAL,
            from_email="Example Shop <orders@shop.example.com>",
            reply_to="support@shop.example.com",
        )
        workflow = workflow_create(
            name="Order confirmation",
            trigger_event="order.completed",
            enabled=True,
            graph={
                "steps": [
                    {"key": "confirm", "type": "send_email", "config": {"template": TEMPLATE_NAME}}
                ],
                "transitions": [{"from": "trigger", "to": "confirm"}],
            },
        )
        self.workflow_id = workflow.pk

    def insert_contacts(self, prefix: str, count: int) -> None:
        from django.utils import timezone

        from contacts_app.models import Contact

        now = timezone.now()
        Contact.objects.bulk_create(
            [
                Contact(
                    email=f"{prefix}{i}@bench.example",
                    subscribed=True,
                    data={
                        "firstName": f"Ann {i}",
                        "plan": "pro" if i % 3 == 0 else "free",
                        "company": f"Company {i % 97}",
                    },
                    created_at=now,
                    updated_at=now,
                )
                for i in range(count)
            ],
            batch_size=1000,
        )

    def insert_runs(self, prefix: str) -> float:
        """RUNNING executions due now for the contacts of `prefix`, each with its order as the
        trigger's data; returns time.monotonic() of the commit."""
        from django.db import transaction
        from django.utils import timezone

        from contacts_app.models import Contact
        from workflows_app.models import Execution

        contacts = list(
            Contact.objects.filter(email__startswith=prefix).values_list("pk", flat=True)
        )
        now = timezone.now()
        runs = [
            Execution(
                workflow_id=self.workflow_id,
                contact_id=contact,
                status=Execution.RUNNING,
                context={
                    "orderId": f"A-{i:06d}",
                    "orderedOn": now.date().isoformat(),
                    "currency": "EUR",
                    "items": [
                        {"name": "Linen shirt", "qty": 1, "price": "49.00"},
                        {"name": "Canvas tote", "qty": 2, "price": "18.50"},
                        {"name": "Gift wrap", "qty": 1, "price": "3.00"},
                    ],
                    "total": "89.00",
                    "address": {"street": f"{i} Elm Street", "postcode": "10115", "city": "Berlin"},
                },
                wake_at=now,
                once=True,
                started_at=now,
                updated_at=now,
            )
            for i, contact in enumerate(contacts)
        ]
        with transaction.atomic():
            Execution.objects.bulk_create(runs, batch_size=1000)
        return time.monotonic()

    # -- processes --------------------------------------------------------------------------------
    def start_processes(self, mode: Mode) -> None:
        env = self.app_env(mode)
        for name in ("qcluster", "clock"):
            logfile = self.tmp / f"{name}-{mode}.log"
            self.procs[name] = start_manage(name, env, logfile, ROOT, PYTHON)
        # Ready once the cluster and the clock have a database connection open.
        wait_for_backends(self.sql, 2, self.check_alive)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                logs = sorted(self.tmp.glob(f"{name}-*.log"), key=lambda p: p.stat().st_mtime)
                tail = logs[-1].read_text(errors="replace")[-3000:] if logs else ""
                raise SystemExit(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop_processes(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.procs.clear()

    def cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds so far: the worker cluster, the clock, this process (the provider
        stand-in and the polling), and the machine's busy and total time per core."""
        busy, total = machine_jiffies()
        cores = os.cpu_count() or 1
        return {
            "worker": session_cpu(self.procs["qcluster"].pid),
            "clock": session_cpu(self.procs["clock"].pid),
            "bench": pid_cpu(os.getpid()),
            "busy": busy / CLK_TCK / cores,
            "total": total / CLK_TCK / cores,
            "wall": time.monotonic(),
        }

    def backends_cpu(self) -> dict[int, float]:
        """CPU seconds of each PostgreSQL backend on this database but ours (0 when the server
        is not on this machine)."""
        pids = self.sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return {pid: pid_cpu(pid) for (pid,) in pids}

    # -- one measurement --------------------------------------------------------------------------
    def measure(self, number: int, latency_ms: int, mode: Mode) -> Result:
        from workflows_app.models import Execution

        count = self.args.baseline_contacts if mode.one_at_a_time else self.args.contacts
        prefix = f"r{number}-"
        log(
            f"run {number}: provider latency {latency_ms} ms, ENGINE_CONCURRENCY="
            f"{mode.concurrency}, EMAIL_BATCH_SIZE={mode.batch}, {count:,} contacts"
        )
        self.insert_contacts(prefix, count)
        self.provider.reset(latency=latency_ms / 1000)
        self.start_processes(mode)
        cpu_before = self.cpu_snapshot()
        backends_before = self.backends_cpu()
        inserted = self.insert_runs(prefix)
        runs = Execution.objects.filter(
            workflow_id=self.workflow_id, contact__email__startswith=prefix
        )
        last_report = time.monotonic()
        while True:
            self.check_alive()
            time.sleep(0.5)
            if not runs.filter(status__in=Execution.ACTIVE).exists():
                break
            now = time.monotonic()
            if now - inserted > self.args.max_seconds:
                raise SystemExit(
                    f"run {number} gave up after {self.args.max_seconds:.0f} s with "
                    f"{len(self.provider.accepted()):,} of {count:,} sent; logs in {self.tmp}"
                )
            if now - last_report >= 10:
                sent = len(self.provider.accepted())
                log(f"    {sent:,}/{count:,} sent, {sent / (now - inserted):,.0f}/s so far")
                last_report = now
        cpu = {k: v - cpu_before[k] for k, v in self.cpu_snapshot().items()}
        # Per backend: a connection opened meanwhile counts whole, one closed is not seen.
        cpu["postgres"] = sum(
            used - backends_before.get(pid, 0.0) for pid, used in self.backends_cpu().items()
        )
        self.stop_processes()
        accepted = sorted(self.provider.accepted(), key=lambda a: a.at)
        duplicates, missing = self.check(prefix, count, accepted)
        span = accepted[-1].at - accepted[0].at if len(accepted) > 1 else 0.0
        result = Result(
            latency_ms=latency_ms,
            mode=mode,
            goal_applies=latency_ms == GOAL_LATENCY_MS and mode == self.modes()[0],
            contacts=count,
            sends_per_s=(len(accepted) - 1) / span if span else float("nan"),
            end_to_end_per_s=len(accepted) / (accepted[-1].at - inserted) if accepted else 0.0,
            peak_in_flight=self.provider.peak_in_flight,
            worker_cpu_ms=cpu["worker"] / max(len(accepted), 1) * 1000,
            postgres_cpu_ms=cpu["postgres"] / max(len(accepted), 1) * 1000,
            other_load=max(
                0.0,
                cpu["busy"] / max(cpu["total"], 1e-9) * (os.cpu_count() or 1)
                - (cpu["worker"] + cpu["clock"] + cpu["postgres"] + cpu["bench"])
                / max(cpu["wall"], 1e-9),
            ),
            duplicates=duplicates,
            missing=missing,
        )
        log(
            f"    {len(accepted):,} sent in {span:.1f} s: {result.sends_per_s:,.1f} sends/s "
            f"(end to end {result.end_to_end_per_s:,.1f}/s), at most {result.peak_in_flight} "
            f"calls at once; CPU per send: worker {result.worker_cpu_ms:.1f} ms, PostgreSQL "
            f"{result.postgres_cpu_ms:.1f} ms; other load on the machine "
            f"{result.other_load:.2f} cores; {self.provider.calls:,} calls on "
            f"{self.provider.connections:,} connections"
        )
        return result

    def check(self, prefix: str, count: int, accepted: list) -> tuple[int, int]:
        """(duplicates, missing) at the provider; any problem with the ledger or the runs, or
        a duplicate or missing message, is printed and ends the bench after the table."""
        from django.db.models import Count

        from contacts_app.models import Contact
        from templates_app.models import Message
        from workflows_app.models import Execution

        expected = set(
            Contact.objects.filter(email__startswith=prefix).values_list("email", flat=True)
        )
        by_to = Counter(parseaddr(a.to)[1] for a in accepted)
        keys = Counter(a.idempotency_key for a in accepted)
        duplicates = sum(n - 1 for n in by_to.values() if n > 1)
        missing = len(expected - set(by_to))
        problems = []
        if duplicates or missing:
            problems.append(f"provider: {duplicates} duplicate(s), {missing} missing")
        if stray := set(by_to) - expected:
            problems.append(f"provider: {len(stray)} message(s) to addresses of no contact")
        if any(n > 1 for n in keys.values()) or "" in keys:
            problems.append("provider: an idempotency key missing or seen twice in the metadata")
        provider_ids = {parseaddr(a.to)[1]: a.message_id for a in accepted}
        rows = list(
            Message.objects.filter(contact__email__startswith=prefix).values_list(
                "to_email", "status", "provider_message_id"
            )
        )
        per_contact = Counter(to for to, _, _ in rows)
        if (
            len(rows) != count
            or set(per_contact) != expected
            or max(per_contact.values(), default=0) > 1
        ):
            problems.append(f"ledger: {len(rows)} rows for {count} contacts")
        not_sent = Counter(status for _, status, _ in rows if status != Message.SENT)
        if not_sent:
            problems.append(f"ledger: rows not sent: {dict(not_sent)}")
        mismatched = sum(1 for to, _, pid in rows if provider_ids.get(to) != pid)
        if mismatched:
            problems.append(f"ledger: {mismatched} row(s) without the provider's MessageID")
        statuses = dict(
            Execution.objects.filter(
                workflow_id=self.workflow_id, contact__email__startswith=prefix
            )
            .values("status")
            .annotate(n=Count("pk"))
            .values_list("status", "n")
        )
        if statuses != {Execution.COMPLETED: count}:
            problems.append(f"executions: {statuses}")
        for problem in problems:
            log(f"    CHECK FAILED {problem}")
        self.failed_checks += len(problems)
        return duplicates, missing

    # -- the whole run ----------------------------------------------------------------------------
    def modes(self) -> list[Mode]:
        return list(dict.fromkeys(Mode.parse(v) for v in self.args.modes.split(",") if v.strip()))

    def latencies(self) -> list[int]:
        return [int(v) for v in self.args.latencies.split(",") if v.strip()]

    def run(self) -> int:
        self.provider.start()
        log(f"provider stand-in (Postmark's API) at {self.provider.url}")
        self.db.create()
        migrate_and_setup_django(self.app_env())
        self.check_connections()
        self.create_workflow()
        number = 0
        for latency in self.latencies():
            for mode in self.modes():
                number += 1
                self.results.append(self.measure(number, latency, mode))
        return self.report()

    def report(self) -> int:
        print()
        print(
            "latency  threads x batch  contacts  sends/s  end-to-end  at once  "
            "CPU/send worker+PG  other load  dup  missing   goal"
        )
        baseline = {r.latency_ms: r.sends_per_s for r in self.results if r.mode.one_at_a_time}
        missed = False
        for r in self.results:
            goal = ""
            if r.goal_applies:
                ok = r.sends_per_s >= GOAL_SENDS
                missed |= not ok
                goal = f">= {GOAL_SENDS:,.0f}/s {'OK' if ok else 'MISSED'}"
            if not r.mode.one_at_a_time and baseline.get(r.latency_ms):
                goal += f"  ({r.sends_per_s / baseline[r.latency_ms]:.1f}x one at a time)"
            print(
                f"{r.latency_ms:>4} ms  {str(r.mode):>15}  {r.contacts:>8,}  "
                f"{r.sends_per_s:>7,.1f}  {r.end_to_end_per_s:>10,.1f}  {r.peak_in_flight:>7}  "
                f"{r.worker_cpu_ms:>8.1f} + {r.postgres_cpu_ms:>4.1f} ms  "
                f"{r.other_load:>6.2f} cpu  {r.duplicates:>3}  {r.missing:>7}   {goal}"
            )
        print(
            f"machine: {os.cpu_count()} CPUs ({cpu_model()}); Q_WORKERS={self.args.workers}, one "
            "clock. threads x batch: ENGINE_CONCURRENCY x EMAIL_BATCH_SIZE (emails per provider "
            "call). sends/s: from the first to the last message the provider accepted; "
            "end-to-end: from the insert of the runs; at once: the most calls the provider had "
            "open at one time; other load: cores busy with something else meanwhile."
        )
        if self.failed_checks:
            raise SystemExit(f"{self.failed_checks} check(s) failed: see CHECK FAILED above")
        return 1 if missed and self.args.strict else 0

    def cleanup(self) -> None:
        self.stop_processes()
        self.db.drop()
        self.provider.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, help=f"per run but 1x1 ({DEFAULTS['contacts']:,})")
    parser.add_argument(
        "--baseline-contacts",
        type=int,
        help=f"per 1x1 run, one at a time ({DEFAULTS['baseline_contacts']:,})",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: " + str(QUICK))
    parser.add_argument("--latencies", default="0,50,200", help="provider ms per call, a list")
    threads = os.environ.get("ENGINE_CONCURRENCY") or 16
    batch = os.environ.get("EMAIL_BATCH_SIZE") or 50
    parser.add_argument(
        "--modes",
        default=f"{threads}x{batch},{threads}x1,1x1",
        help="ENGINE_CONCURRENCY x EMAIL_BATCH_SIZE, a list; the first is the goal's (default: "
        "the settings, the same threads one email per call, and one at a time)",
    )
    parser.add_argument("--workers", type=int, default=int(os.environ.get("Q_WORKERS") or 2))
    parser.add_argument("--max-seconds", type=float, default=900, help="per run")
    parser.add_argument("--db-name", default="")
    parser.add_argument("--keep-logs", action="store_true", help="keep the process logs")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()
    for name, default in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, QUICK[name] if args.quick else default)
        if getattr(args, name) < 2:
            parser.error(f"--{name.replace('_', '-')} must be at least 2 (a rate needs two sends)")
    try:
        if not [Mode.parse(v) for v in args.modes.split(",") if v.strip()]:
            parser.error("--modes: give at least one, e.g. 16x50")
    except ValueError as exc:
        parser.error(f"--modes: {exc} (write THREADSxBATCH, e.g. 16x50)")
    bench = Bench(args)
    try:
        return bench.run()
    finally:
        if args.keep_logs:
            kept = Path(tempfile.mkdtemp(prefix="bench-send-logs-"))
            for path in bench.tmp.glob("*.log"):
                shutil.copy(path, kept)
            log(f"process logs kept in {kept}")
        bench.cleanup()
        shutil.rmtree(bench.tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
