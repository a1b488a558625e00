"""A quiet machine before each query kind, and who else used the CPUs while it was measured.

The benchmark runs on a small shared machine (2 cores; tests and other
benchmarks next to it). Latencies taken while another process eats a core say
little, so before each kind of query the run waits (up to a limit) until the
machine is quiet, and it records the CPU time of the rest of the machine
("other": everything but this process, the teleconsult gateway and Orthanc)
while that kind was measured. Both servers are asked alternately, so a busy
neighbour slows both; the ratio suffers less than the absolute figures.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NOISY_OTHER_CORES", "CpuWindow", "Noise", "machine_busy", "wait_until_quiet"]

_TICKS = os.sysconf("SC_CLK_TCK")
# Other processes using more than this many cores make a measurement NOISY.
NOISY_OTHER_CORES = 0.25


def _machine_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (iowait counts as idle)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    total = sum(fields)
    return (total - fields[3] - fields[4]) / _TICKS, total / _TICKS


def _process_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_busy(seconds: float) -> float:
    """Busy share of all CPUs over ``seconds`` (0.0 idle .. 1.0 every CPU busy)."""
    busy_before, total_before = _machine_seconds()
    time.sleep(seconds)
    busy_after, total_after = _machine_seconds()
    total = total_after - total_before
    return (busy_after - busy_before) / total if total > 0 else 0.0


def wait_until_quiet(threshold: float, timeout: float, sample: float = 0.5) -> tuple[float, float]:
    """Sample until at most ``threshold`` of the CPUs are busy or ``timeout`` passes.

    Returns (busy share last seen, seconds waited), so a start on a busy
    machine is recorded instead of hidden.
    """
    started = time.monotonic()
    busy = machine_busy(sample)
    while busy > threshold and time.monotonic() - started < timeout:
        busy = machine_busy(sample)
    return busy, time.monotonic() - started


@dataclass(frozen=True, slots=True)
class Noise:
    """The machine while one kind of query was measured."""

    busy_at_start: float  # share of all CPUs busy when the measurement started
    waited: float  # seconds spent waiting for a quiet machine
    other_cores: float  # cores used by every other process, on average

    @property
    def noisy(self) -> bool:
        return self.other_cores > NOISY_OTHER_CORES


class CpuWindow:
    """CPU seconds of the machine and of the benchmark's own processes over one measurement.

    ``own_pids`` is called at the start and at the end (Orthanc may be
    restarted in between); this process counts with its threads.
    """

    def __init__(self, own_pids: Callable[[], Sequence[int]]) -> None:
        self.own_pids = own_pids
        self.started = time.monotonic()
        self.machine = _machine_seconds()[0]
        self.own = self._own_seconds()

    def _own_seconds(self) -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime + sum(_process_seconds(pid) for pid in self.own_pids())

    def other_cores(self) -> float:
        """Average cores used by other processes since the window opened."""
        wall = time.monotonic() - self.started
        other = (_machine_seconds()[0] - self.machine) - (self._own_seconds() - self.own)
        return max(0.0, other) / wall if wall > 0 else 0.0
