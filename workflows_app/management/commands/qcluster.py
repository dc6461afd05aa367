"""`manage.py qcluster`: django-q2's cluster, with a shutdown that never hangs.

django-q2 lets the signal that stops it kill its sentinel process outright; when SIGTERM or
SIGINT reaches the whole process group (Ctrl-C, honcho, systemd, a container runtime), the
parent then waits forever for a sentinel that is gone. Here only this parent process acts on
the signal: the sentinel and the processes it forks (workers, pusher, monitor) ignore both,
and the parent stops them in order - the same whether the signal reached the parent alone or
the whole group:

1. the shared stop request is set: each worker finishes the step it is in and hands every run
   it holds but has not begun back to the database, due at once (no lease to wait for); a
   contact job stops after the batch in hand and queues its continuation; API sends not yet
   sent are queued again;
2. the pusher stops taking tasks; tasks it already took go through the workers, which only hand
   their work back (as above), and are acknowledged;
3. workers and monitor exit, and so does this process.

So a stop takes about as long as the longest step (or contact job batch, or email) in
progress (WEBHOOK_MAX_TIMEOUT_SECONDS, EMAIL_TIMEOUT). The cluster is stopped however the
parent's loop ends, also when its stdout's reader has gone (a failed write is ignored). A
second signal while stopping is ignored; SIGKILL is the supervisor's last resort, and then the
runs come back through the lease sweep as after any crash.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from multiprocessing import Event

from django.conf import settings
from django.core.management.base import BaseCommand
from django_q import cluster as q_cluster

from workflows_app import shutdown
from workflows_app.heartbeats import Heartbeat
from workflows_app.models import ProcessHeartbeat


class _Sentinel(q_cluster.Sentinel):
    """The sentinel, deaf to TERM and INT (django-q2's dies on TERM). What it forks inherits
    that, so a signal to the process group leaves the cluster to the parent's orderly stop."""

    def __init__(self, *args):
        super().__init__(*args, start=False)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.start()


class Command(BaseCommand):
    help = "Start the worker cluster (django-q2); SIGTERM or SIGINT stops it cleanly."

    def add_arguments(self, parser):
        parser.add_argument(
            "-n", "--name", dest="cluster_name", default=None, help="Cluster (queue) name."
        )

    def handle(self, *args, cluster_name=None, **options):
        settings.SECRET_KEY  # noqa: B018 - as django-q2's own command: fail early without it
        if cluster_name:
            os.environ["Q_CLUSTER_NAME"] = cluster_name
        signals: list[int] = []

        def on_signal(signum, frame):
            signals.append(signum)  # acted on by the loop below, never inside the handler

        cluster = q_cluster.Cluster()  # installs django-q2's handlers: replaced below
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        cluster.stop_event = stop_event = Event()
        cluster.start_event = start_event = Event()
        sentinel = q_cluster.get_mp_context().Process(
            target=_Sentinel,
            name=f"Process-{uuid.uuid4().hex}",
            args=(stop_event, start_event, cluster.cluster_id, cluster.broker, cluster.timeout),
        )
        cluster.sentinel = sentinel
        sentinel.start()
        # Whatever ends the loop below - a signal, the sentinel's death, an error (the database
        # gone, a write to a stdout whose reader has gone) - the cluster is stopped before this
        # process exits: Python's exit would otherwise wait for the sentinel for ever.
        heartbeat: Heartbeat | None = None
        try:
            shutdown.say(self.stdout, f"qcluster {cluster.name} starting (pid {os.getpid()})")
            # Written from here, after the fork, so no child inherits its database connection.
            heartbeat = Heartbeat(ProcessHeartbeat.WORKER, name=cluster.name)
            announced = False
            while not signals and sentinel.is_alive():
                if not announced and start_event.is_set():
                    shutdown.say(self.stdout, f"qcluster {cluster.name} running")
                    announced = True
                if announced:
                    heartbeat.beat_if_due()
                time.sleep(0.1)
            if signals:
                name = signal.Signals(signals[0]).name
                shutdown.say(self.stdout, f"qcluster {cluster.name} stopping ({name})")
        finally:
            started = time.monotonic()
            shutdown.request()
            if sentinel.is_alive():
                stop_event.set()
                sentinel.join()
            if heartbeat is not None:
                heartbeat.stop()
        if not signals:
            shutdown.say(
                self.stderr, f"qcluster: the sentinel exited with code {sentinel.exitcode}"
            )
            raise SystemExit(1)
        shutdown.say(
            self.stdout, f"qcluster {cluster.name} stopped in {time.monotonic() - started:.1f} s"
        )
