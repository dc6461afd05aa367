"""The worker cluster's stop request (config/shutdown.py), and a write the `qcluster` and
`clock` commands can make whatever became of their output."""

from __future__ import annotations

import os
from typing import Any

from config.shutdown import request, requested, reset

__all__ = ["request", "requested", "reset", "say"]


def say(stream: Any, message: str) -> None:
    """Writes a line to a management command's stdout or stderr, and flushes it.

    A reader that has gone (the terminal closed, honcho killed, `| tee` interrupted) makes the
    write fail with BrokenPipeError. A command that let it through would skip stopping its
    cluster, and Python's exit would then wait for the cluster's processes for ever; so the
    error is ignored, and the dead stream is pointed at /dev/null (as Python's documentation
    advises for SIGPIPE) so that no later write, nor the flush at exit, fails again."""
    try:
        stream.write(message)
        stream.flush()
    except OSError:
        out = getattr(stream, "_out", stream)  # the file behind Django's OutputWrapper
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass  # not a file descriptor (a test's StringIO): nothing to point elsewhere
