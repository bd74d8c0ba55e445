"""The trainer's thread count follows the cores other programs leave free."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from crnn_core import cpushare
from crnn_core.cpushare import CpuShare, threads_for


@pytest.mark.parametrize("cores, others, most, expected", [
    (2, 0.0, 2, 2), (2, 0.3, 2, 2), (2, 0.6, 2, 1), (2, 1.0, 2, 1), (2, 2.0, 2, 1),
    (8, 2.7, 8, 5), (8, 0.0, 4, 4), (16, 15.9, 16, 1),
])
def test_threads_for_the_free_cores(cores, others, most, expected):
    assert threads_for(cores, others, most) == expected


def test_a_busy_neighbour_is_measured_and_only_changes_are_reported(monkeypatch):
    share = CpuShare(most=2, cores=2, every=0.0)
    ticks = iter(range(100))
    busy = iter([100.0, 101.0, 102.0, 102.05, 102.1])  # per 1 s window, others: 1.0, 1.0, ~0, ~0 cores
    monkeypatch.setattr(cpushare.time, "monotonic", lambda: next(ticks) * 0.5)  # two reads a check
    monkeypatch.setattr(cpushare, "_busy_seconds", lambda: next(busy))
    monkeypatch.setattr(cpushare, "_own_seconds", lambda: 0.0)
    share._mark = share._sample()
    assert share.check() == 1  # a neighbour took a core
    assert share.check() is None  # still so: nothing to change
    assert share.check() == 2  # it stopped
    assert share.check() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat")
def test_a_real_busy_loop_is_seen_as_another_program():
    share = CpuShare(most=2, cores=2, every=0.0)
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        share.others()  # start a window with the loop running
        time.sleep(1.0)
        assert share.others() >= 0.5
    finally:
        loop.kill()


def test_niced_time_counts_only_for_a_niced_trainer():
    line = "cpu  1000 300 200 5000 100 10 20 5 0 0"
    assert cpushare.busy_ticks(line, count_niced=True) == 1000 + 300 + 200 + 10 + 20 + 5
    assert cpushare.busy_ticks(line, count_niced=False) == 1000 + 200 + 10 + 20 + 5


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat")
@pytest.mark.skipif(sys.platform.startswith("linux") and os.getpriority(os.PRIO_PROCESS, 0) > 0,
                    reason="the test runs niced itself, so niced programs count")
def test_a_niced_busy_loop_holds_no_core_from_a_nice_0_trainer():
    share = CpuShare(most=2, cores=2, every=0.0)
    time.sleep(1.0)
    before = share.others()  # whatever else the machine runs
    loop = subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        share.others()
        time.sleep(1.0)
        assert share.others() - before < 0.5
    finally:
        loop.kill()
