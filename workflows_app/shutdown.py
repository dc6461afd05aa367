"""A stop request shared by every process of one worker cluster.

`manage.py qcluster` sets it when it is asked to stop (SIGTERM or SIGINT). The worker processes
then finish the step they are in and hand every other run they hold back to the database, due
at once (engine.executions_advance), so a surviving or restarted worker goes on without waiting
for a lease to expire. Shared memory, created when this module is first imported: the qcluster
command imports it before it forks the cluster, so all its processes see one flag.
"""

from __future__ import annotations

import multiprocessing

_requested = multiprocessing.RawValue("b", 0)


def requested() -> bool:
    return bool(_requested.value)


def request() -> None:
    _requested.value = 1


def reset() -> None:
    """For tests running the engine in one process."""
    _requested.value = 0
