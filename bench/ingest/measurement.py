"""One timed send of a corpus to a fresh receiver: how it is made, judged and printed.

bench/ingest (teleconsult against a bare receiver) and bench/scale (against
Orthanc, with 1 and N gateway processes) measure alike, so their figures
can be read side by side.
"""

from __future__ import annotations

import statistics
import traceback
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Protocol

from bench.ingest.corpus import Corpus
from bench.ingest.cpu import CpuUsage, snapshot, usage, wait_until_quiet
from bench.ingest.receivers import Endpoint
from bench.ingest.send import send_corpus

__all__ = [
    "MEGABYTE",
    "NOISY_OTHER_CORES",
    "Measurement",
    "Running",
    "measure",
    "median_seconds",
    "progress_line",
]

MEGABYTE = 1_000_000
# A measurement during which the rest of the machine used more than this many
# cores on average says more about the neighbours than about the receiver.
NOISY_OTHER_CORES = 0.25


class Running(Protocol):
    """A started receiver (bench/ingest's sessions, bench/scale's Orthanc)."""

    endpoint: Endpoint
    process: Popen[bytes]

    def stop(self) -> None: ...

    def stored_count(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Measurement:
    """One send of one corpus to one fresh receiver."""

    class_name: str
    associations: int
    receiver: str
    repeat: int
    sent: int
    stored: int
    seconds: float | None
    storescu_processes: int
    error: str | None
    busy_before: float
    cpu: CpuUsage | None
    gateway_processes: int | None = None  # teleconsult's; None for another receiver

    @property
    def ok(self) -> bool:
        return self.error is None and self.stored == self.sent

    def cores(self, seconds: float) -> float:
        """CPU seconds as average cores over the measurement's wall time."""
        return seconds / self.seconds if self.seconds else 0.0

    @property
    def noisy(self) -> bool:
        return self.cpu is not None and self.cores(self.cpu.other) > NOISY_OTHER_CORES


def measure(
    corpus: Corpus,
    associations: int,
    receiver: str,
    repeat: int,
    *,
    session: Callable[[Path], AbstractContextManager[Running]],
    run_dir: Path,
    quiet_threshold: float,
    quiet_timeout: float,
    gateway_processes: int | None = None,
) -> Measurement:
    """Start a fresh receiver, wait for a quiet machine, send, stop it and count what it stored."""
    seconds: float | None = None
    processes = stored = 0
    error: str | None = None
    busy = 0.0
    cpu: CpuUsage | None = None
    try:
        with session(run_dir) as running:
            if quiet_timeout > 0:
                busy = wait_until_quiet(quiet_threshold, quiet_timeout)
            before = snapshot(running.process.pid)
            result = send_corpus(corpus, associations, running.endpoint, run_dir)
            cpu = usage(before, snapshot(running.process.pid))
            seconds, processes = result.seconds, result.processes
            running.stop()
            stored = running.stored_count()
    except Exception as exc:  # a failed measurement is reported, the others still run
        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}"
    return Measurement(
        corpus.name,
        associations,
        receiver,
        repeat,
        corpus.count,
        stored,
        seconds,
        processes,
        error,
        busy,
        cpu,
        gateway_processes,
    )


def median_seconds(measurements: Sequence[Measurement]) -> float | None:
    """The median wall time, or None if any run failed: a partial result is not a result."""
    if not measurements or not all(m.ok for m in measurements):
        return None
    return statistics.median(m.seconds for m in measurements if m.seconds is not None)


def progress_line(measurement: Measurement, corpus: Corpus, receiver_label: str) -> str:
    head = (
        f"{measurement.class_name:5} assoc={measurement.associations} {receiver_label:15} "
        f"run {measurement.repeat + 1}: "
    )
    if measurement.error is not None:
        return head + f"FAIL {measurement.error.splitlines()[0]}"
    assert measurement.seconds is not None
    assert measurement.cpu is not None
    rate = corpus.count / measurement.seconds
    megabytes = corpus.total_bytes / MEGABYTE / measurement.seconds
    status = "ok" if measurement.ok else f"FAIL: stored {measurement.stored} of {measurement.sent}"
    cpu = measurement.cpu
    return head + (
        f"{corpus.count} in {measurement.seconds:.2f} s ({rate:.1f} inst/s, {megabytes:.1f} MB/s, "
        f"{measurement.storescu_processes} storescu; cores: receiver {measurement.cores(cpu.receiver):.2f}, "
        f"storescu {measurement.cores(cpu.senders):.2f}, other {measurement.cores(cpu.other):.2f}"
        f"{' NOISY' if measurement.noisy else ''}) {status}"
    )
