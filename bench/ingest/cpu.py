"""Who used the CPUs during a measurement: the receiver, the senders, or someone else.

The benchmark often runs on a small shared machine (2 cores, tests and other
benchmarks next to it). A throughput figure taken while another process ate
a core says little, so every measurement records the receiver's CPU, the
storescu processes' CPU and the rest of the machine's ("other"), and a run
can wait for the machine to be quiet before it starts.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuSnapshot", "CpuUsage", "machine_busy", "snapshot", "usage", "wait_until_quiet"]

_TICKS = os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (iowait counts as idle)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    total = sum(fields)
    return (total - fields[3] - fields[4]) / _TICKS, total / _TICKS


def _stat_fields(pid: str | int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _process_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, its threads and its live descendants.

    Descendants count because teleconsult with ``TELECONSULT_DICOM_WORKERS`` > 1
    receives in worker processes as well as in the one the benchmark started.
    """
    parents: dict[int, int] = {}
    seconds: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is None:
            continue
        parents[int(entry.name)] = int(fields[1])
        seconds[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _TICKS
    if pid not in seconds:
        return 0.0
    tree = {pid}
    grown = True
    while grown:
        grown = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grown = True
    return sum(seconds[member] for member in tree)


def _rusage_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    machine: float
    receiver: float
    children: float
    own: float


@dataclass(frozen=True, slots=True)
class CpuUsage:
    """CPU seconds spent during one measurement, by whom."""

    receiver: float
    senders: float
    other: float


def snapshot(receiver_pid: int) -> CpuSnapshot:
    """Counters to diff: storescu processes count once waited for (RUSAGE_CHILDREN)."""
    return CpuSnapshot(
        machine=_machine_busy_seconds()[0],
        receiver=_process_seconds(receiver_pid),
        children=_rusage_seconds(resource.RUSAGE_CHILDREN),
        own=_rusage_seconds(resource.RUSAGE_SELF),
    )


def usage(before: CpuSnapshot, after: CpuSnapshot) -> CpuUsage:
    receiver = after.receiver - before.receiver
    senders = after.children - before.children
    own = after.own - before.own
    other = (after.machine - before.machine) - receiver - senders - own
    return CpuUsage(receiver=receiver, senders=senders, other=max(0.0, other))


def machine_busy(seconds: float) -> float:
    """Busy share of all CPUs over ``seconds`` (0.0 idle .. 1.0 every CPU busy)."""
    busy_before, total_before = _machine_busy_seconds()
    time.sleep(seconds)
    busy_after, total_after = _machine_busy_seconds()
    total = total_after - total_before
    return (busy_after - busy_before) / total if total > 0 else 0.0


def wait_until_quiet(threshold: float, timeout: float, sample: float = 0.5) -> float:
    """Sample until the machine's busy share is at most ``threshold`` or ``timeout`` passes.

    Returns the last busy share seen, so the caller can record a start on a
    busy machine instead of hiding it.
    """
    deadline = time.monotonic() + timeout
    busy = machine_busy(sample)
    while busy > threshold and time.monotonic() < deadline:
        busy = machine_busy(sample)
    return busy
