"""Handing a task to the worker cluster, on either of django-q2's brokers (Q_BROKER_URL).

On the database broker a task is a row written in the caller's transaction: it commits, or
rolls back, with the work it names (the clock's claim, a contact job), so neither exists
without the other.

Redis is outside the transaction. A task pushed there before the commit can reach a worker
before the rows it names are visible: the worker finds nothing to do, and the work waits for a
sweep (a claimed run for its lease, a contact job for CONTACT_JOB_STALL_SECONDS). So on Redis
the push waits for the commit. What that gives up, and what Redis gives up anyway (it holds no
acknowledgement: a task taken by a worker that dies is gone), is recovered by the sweeps that
exist for lost tasks: a claimed run whose lease expires is made due again, a stalled job and an
API send left queued are enqueued again. Nothing is done twice: every consumer of a task checks
the state it acts on (version-checked runs, the ledger, the job's committed progress).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django_q.brokers import Broker, get_broker
from django_q.models import OrmQ
from django_q.tasks import async_task

_broker: Broker | None = None


def broker_is_database() -> bool:
    return bool(settings.Q_CLUSTER.get("orm"))


def enqueue(func: str, *args: Any, **kwargs: Any) -> None:
    """`async_task(func, *args, **kwargs)`: in the caller's transaction on the database
    broker, once it commits on Redis (at once outside a transaction). A push that fails after
    the commit is logged, not raised: the committed work is the sweeps' to recover."""
    if broker_is_database():
        async_task(func, *args, **kwargs)
    else:
        transaction.on_commit(partial(async_task, func, *args, **kwargs), robust=True)


def broker() -> Broker:
    """This process's broker (one connection pool per process, made on first use)."""
    global _broker
    if _broker is None:
        _broker = get_broker()
    return _broker


def queue_depth() -> int:
    """Tasks enqueued and not yet finished by a worker. On the database broker this counts the
    tasks a worker holds too (they stay in the table until acknowledged), which is what the
    clock's back-pressure wants: a claimed run is not finished until its task is. On Redis a
    task a worker has taken is no longer counted."""
    if broker_is_database():
        return OrmQ.objects.count()
    return int(broker().queue_size() or 0)
