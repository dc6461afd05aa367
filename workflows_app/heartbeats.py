"""Heartbeats: each worker (`manage.py qcluster`) and clock process keeps one ProcessHeartbeat
row fresh, so the System page can tell a live process from one that was killed.

A process writes its row at most every HEARTBEAT_SECONDS, from the loop it already runs (the
clock's loop, the qcluster parent's wait loop), and deletes it when it stops cleanly. A killed
process leaves its row behind, going stale: late, then dead, then pruned after a day by the
clock's sweep. A heartbeat that can not be written (the database is down) is logged and the
process carries on: the heartbeat reports on the work, it must never stop it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from workflows_app.models import ProcessHeartbeat

log = logging.getLogger(__name__)

PRUNE_AFTER = timedelta(days=1)


class Heartbeat:
    """This process's heartbeat. Call `beat_if_due()` from its loop (a clock read when not due)
    and `stop()` on a clean stop."""

    def __init__(self, kind: str, *, name: str = "", interval: int | None = None):
        self.kind = kind
        self.name = name
        self.interval = settings.HEARTBEAT_SECONDS if interval is None else interval
        self.key = uuid.uuid4().hex
        self.host = socket.gethostname()[:255]
        self.pid = os.getpid()
        self.started_at = timezone.now()
        self._next = 0.0  # monotonic time of the next heartbeat

    def beat_if_due(self) -> bool:
        """Writes the heartbeat when HEARTBEAT_SECONDS have passed since the last attempt.
        Returns whether it wrote one."""
        if time.monotonic() < self._next:
            return False
        # Counted from the attempt, so a database that is down is asked once an interval.
        self._next = time.monotonic() + self.interval
        return self.beat()

    def beat(self, *, now: datetime | None = None) -> bool:
        """Inserts or refreshes this process's row (recreated if pruned or deleted meanwhile).
        False, logged, when the database can not be written."""
        row = ProcessHeartbeat(
            key=self.key,
            kind=self.kind,
            host=self.host,
            pid=self.pid,
            name=self.name,
            started_at=self.started_at,
            last_seen=now or timezone.now(),
            interval_seconds=self.interval,
        )
        try:
            ProcessHeartbeat.objects.bulk_create(
                [row], update_conflicts=True, unique_fields=["key"], update_fields=["last_seen"]
            )
        except Exception as exc:  # noqa: BLE001 - whatever the database says, the process goes on
            log.warning(
                "could not record the %s heartbeat (%s); trying again later", self.kind, exc
            )
            close_old_connections()  # a broken connection is replaced on the next attempt
            return False
        return True

    def stop(self) -> None:
        """Deletes this process's row: a clean stop is not a death."""
        try:
            ProcessHeartbeat.objects.filter(key=self.key).delete()
        except Exception as exc:  # noqa: BLE001 - the row goes stale like a killed process's
            log.warning("could not remove the %s heartbeat on stopping (%s)", self.kind, exc)
            close_old_connections()


def heartbeats_prune(*, now: datetime | None = None) -> int:
    """Deletes the rows of processes silent for more than a day (killed, never restarted under
    the same identity). Returns how many."""
    cutoff = (now or timezone.now()) - PRUNE_AFTER
    deleted, _ = ProcessHeartbeat.objects.filter(last_seen__lt=cutoff).delete()
    return deleted
