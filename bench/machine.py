"""What else the machine is doing while a comparison runs (bench/compare.py).

Linux only: reads /proc.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

_HZ = os.sysconf("SC_CLK_TCK")


def _busy_ticks() -> int:
    """CPU ticks spent not idle, all cores, since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values) - values[3] - values[4]  # less idle and iowait


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in task.read_text().split():
                found += [int(child), *_descendants(int(child))]
    return found


def _own_ticks() -> float:
    """CPU ticks of this process, its finished children (wrk) and its live
    descendants (the servers and their workers)."""
    times = os.times()
    total = (times.user + times.system + times.children_user + times.children_system) * _HZ
    for pid in _descendants(os.getpid()):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(n) for n in fields[11:15])  # utime, stime, cutime, cstime
    return total


class CpuWatch:
    """Cores used by other processes than this benchmark's, between two calls.

    The load average cannot tell: after the first round it counts this
    benchmark's own server and wrk (≈ 1.5-2 on 2 cores)."""

    def __init__(self) -> None:
        self._mark = (time.monotonic(), _busy_ticks(), _own_ticks())

    def others_cores(self) -> float:
        began, busy, own = self._mark
        self._mark = (time.monotonic(), _busy_ticks(), _own_ticks())
        elapsed = self._mark[0] - began
        others = (self._mark[1] - busy) - (self._mark[2] - own)
        return round(max(0.0, others / _HZ / elapsed), 2) if elapsed > 0 else 0.0


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its live
    descendants so far: a server's supervisor and workers. Read twice around
    a measurement, it gives the server's own CPU per request, which other
    processes on the machine change far less than its throughput."""
    total = 0
    for each in (pid, *_descendants(pid)):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _HZ
