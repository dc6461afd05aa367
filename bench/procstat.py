"""What the benchmarks measure CPU with (from /proc), and their log lines."""

from __future__ import annotations

import os
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def session_cpu(session: int) -> float:
    """User+system CPU seconds of every live process in `session` (plus their reaped children)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:
            total += sum(int(v) for v in fields[11:15])
    return total / CLK_TCK


def pid_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "CPU model unknown"


def start_manage(command: str, env: dict[str, str], logfile: Path, root: Path, python: Path):
    """`manage.py <command>` in its own session (so its CPU and its children's can be read by
    session, and a stop reaches them all), its output appended to `logfile`."""
    import subprocess

    with open(logfile, "ab") as out:
        return subprocess.Popen(
            [str(python), "manage.py", command],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def wait_for_backends(sql, count: int, check_alive, timeout: float = 60) -> None:
    """Until `count` other connections to this database are open (the processes just started
    have Django up), checking meanwhile that none of them died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_alive()
        backends = sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )[0][0]
        if backends >= count:
            time.sleep(2)  # the workers import Django after the sentinel starts them
            return
        time.sleep(0.5)
