"""Train on the cores other programs leave free, not on all of them.

PyTorch's OpenMP threads spin while they wait for each other. When another program keeps a
core busy, a thread on that core is descheduled and its partners spin until it comes back:
on 2 cores, one busy loop beside `crnn train` cut its rate 4x (587 -> 148 samples/s), two
loops stopped it (docs/performance.md). `OMP_WAIT_POLICY=PASSIVE` avoids that but costs a
fifth of the speed on an idle machine. Instead, the trainer measures every few seconds how
much CPU the rest of the machine uses (/proc/stat minus this process's own time) and runs
with one thread per core that is left, between 1 and the maximum it was given.
"""

from __future__ import annotations

import math
import os
import time

CHECK_EVERY = 5.0  # seconds between measurements
# Another program counts as holding a core from this much of one, averaged over a window.
BUSY_SHARE = 0.5


def _niced() -> bool:
    try:
        return os.getpriority(os.PRIO_PROCESS, 0) > 0
    except (AttributeError, OSError):
        return False


def _busy_seconds() -> float | None:
    """CPU seconds processes have spent busy since boot (Linux), or None elsewhere.

    Time of niced processes (the `nice` column) is left out unless this process is niced itself:
    a `nice -n 19` job gets ~1.5% of a core against a nice-0 trainer, so it holds no core from
    it, and halving the threads for it would hand it the core instead.
    """
    try:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = busy_ticks(f.readline(), count_niced=_niced())
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def busy_ticks(cpu_line: str, count_niced: bool) -> int:
    """Busy clock ticks in /proc/stat's `cpu` line: user nice system idle iowait irq softirq steal."""
    fields = [int(v) for v in cpu_line.split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle - (0 if count_niced else fields[1])


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


def threads_for(cores: int, others: float, most: int) -> int:
    """Threads to run when other programs use `others` cores of `cores`."""
    free = cores - math.floor(others + (1 - BUSY_SHARE))  # a program using >= half a core holds one
    return max(1, min(most, free))


class CpuShare:
    """Call `check()` between steps; it returns a new thread count when the free cores changed."""

    def __init__(self, most: int, cores: int | None = None, every: float = CHECK_EVERY):
        self.most, self.cores, self.every = most, cores or os.cpu_count() or 1, every
        self.current = most
        self._mark = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float | None, float]:
        return time.monotonic(), _busy_seconds(), _own_seconds()

    def others(self) -> float | None:
        """Cores used by other programs since the last measurement (None where /proc/stat is missing)."""
        now = self._sample()
        (t0, busy0, own0), (t1, busy1, own1) = self._mark, now
        self._mark = now
        if busy0 is None or busy1 is None or t1 <= t0:
            return None
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)

    def check(self) -> int | None:
        if time.monotonic() - self._mark[0] < self.every:
            return None
        others = self.others()
        if others is None:
            return None
        wanted = threads_for(self.cores, others, self.most)
        if wanted == self.current:
            return None
        self.current = wanted
        return wanted
