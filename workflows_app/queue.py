"""The task queue as the engine sees it: how many tasks wait for a worker, on either broker
(django-q2's database broker by default, Redis when Q_BROKER_URL is set)."""

from __future__ import annotations

from django.conf import settings
from django_q.brokers import Broker, get_broker
from django_q.models import OrmQ

_broker: Broker | None = None


def broker() -> Broker:
    """This process's broker (one connection pool per process, made on first use)."""
    global _broker
    if _broker is None:
        _broker = get_broker()
    return _broker


def queue_depth() -> int:
    """Tasks enqueued and not yet finished by a worker. On the database broker this counts the
    tasks a worker holds too (they stay in the table until acknowledged), which is what the
    clock's back-pressure wants: a claimed run is not finished until its task is."""
    if settings.Q_CLUSTER.get("orm"):
        return OrmQ.objects.count()
    return int(broker().queue_size() or 0)
