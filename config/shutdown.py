"""A stop request shared by every process of one worker cluster.

`manage.py qcluster` sets it when it is asked to stop (SIGTERM or SIGINT). The worker processes
then finish what is in hand and give the rest back, ready at once for a surviving or restarted
worker: runs not begun are due again (engine.executions_advance), a contact job stops after
the batch in hand and queues its continuation (contacts_app.jobs), API sends not yet sent are
queued again (templates_app.sending). Nobody waits for a lease or a sweep.

Shared memory, created when this module is first imported: the qcluster command imports it
before it forks the cluster, so all its processes see one flag. It lives here, below the apps,
because each of them reads it (their imports only go down).
"""

from __future__ import annotations

import multiprocessing

_requested = multiprocessing.RawValue("b", 0)


def requested() -> bool:
    return bool(_requested.value)


def request() -> None:
    _requested.value = 1


def reset() -> None:
    """For tests running the workers' code in one process."""
    _requested.value = 0
