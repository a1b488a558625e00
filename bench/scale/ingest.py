"""The ingest matrix: every class x 1 and 4 associations x the three receivers.

Measured the way ``bench.ingest`` measures (its corpus, its storescu sender
and its CPU accounting), so figures from both benchmarks compare. The order
of the receivers rotates from one (class, associations, run) to the next:
the first receiver after a class of large files pays for the disk still
writing them back, and that should not always be the same one.
"""

from __future__ import annotations

import statistics
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.ingest.corpus import Corpus
from bench.ingest.cpu import CpuUsage, snapshot, usage, wait_until_quiet
from bench.ingest.send import send_corpus
from bench.scale.receivers import ORTHANC, RECEIVERS, TELECONSULT_N, gateway_processes, receiver

__all__ = [
    "ASSOCIATIONS",
    "MEGABYTE",
    "NOISY_OTHER_CORES",
    "TARGET_ASSOCIATIONS",
    "TARGET_RATIO",
    "IngestPlan",
    "Measurement",
    "Row",
    "rows",
    "run_matrix",
]

ASSOCIATIONS = (1, 4)
# teleconsult with N gateway processes must ingest at least as fast as Orthanc at 4 associations.
TARGET_RATIO = 1.0
TARGET_ASSOCIATIONS = 4
MEGABYTE = 1_000_000
# As bench.ingest: a measurement during which the rest of the machine used more
# than this many cores on average says more about the neighbours than the receiver.
NOISY_OTHER_CORES = 0.25


@dataclass(frozen=True, slots=True)
class IngestPlan:
    """How every measurement of one run is made."""

    repeats: int
    work_dir: Path
    database_url: str | None  # teleconsult's index; Orthanc always has its own SQLite
    workers: int  # teleconsult-N's gateway processes
    quiet_threshold: float
    quiet_timeout: float
    orthanc_max_pdu: int


@dataclass(frozen=True, slots=True)
class Measurement:
    """One send of one corpus to one fresh receiver."""

    class_name: str
    associations: int
    receiver: str
    gateway_processes: int
    repeat: int
    sent: int
    stored: int
    seconds: float | None
    storescu_processes: int
    error: str | None
    busy_before: float
    cpu: CpuUsage | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.stored == self.sent

    def cores(self, seconds: float) -> float:
        """CPU seconds as average cores over the measurement's wall time."""
        return seconds / self.seconds if self.seconds else 0.0

    @property
    def noisy(self) -> bool:
        return self.cpu is not None and self.cores(self.cpu.other) > NOISY_OTHER_CORES


def _measure(corpus: Corpus, associations: int, name: str, repeat: int, plan: IngestPlan) -> Measurement:
    """Start a fresh receiver, wait for a quiet machine, send, stop it and count what it stored."""
    seconds: float | None = None
    processes = stored = 0
    error: str | None = None
    busy = 0.0
    cpu: CpuUsage | None = None
    run_dir = plan.work_dir / "ingest" / f"{corpus.name}-{associations}-{name}-{repeat}"
    try:
        with receiver(
            name,
            run_dir,
            database_url=plan.database_url,
            workers=plan.workers,
            orthanc_max_pdu=plan.orthanc_max_pdu,
        ) as session:
            if plan.quiet_timeout > 0:
                busy = wait_until_quiet(plan.quiet_threshold, plan.quiet_timeout)
            before = snapshot(session.process.pid)
            result = send_corpus(corpus, associations, session.endpoint, run_dir)
            cpu = usage(before, snapshot(session.process.pid))
            seconds, processes = result.seconds, result.processes
            session.stop()
            stored = session.stored_count()
    except Exception as exc:  # a failed measurement is reported, the others still run
        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}"
    return Measurement(
        corpus.name,
        associations,
        name,
        gateway_processes(name, plan.workers),
        repeat,
        corpus.count,
        stored,
        seconds,
        processes,
        error,
        busy,
        cpu,
    )


def run_matrix(
    corpora: Sequence[Corpus], plan: IngestPlan, report: Callable[[Measurement, Corpus], None]
) -> list[Measurement]:
    """Every (class, associations, run), the receivers one after another in a rotating order."""
    measurements = []
    turn = 0
    for corpus in corpora:
        for associations in ASSOCIATIONS:
            for repeat in range(plan.repeats):
                order = RECEIVERS[turn % len(RECEIVERS) :] + RECEIVERS[: turn % len(RECEIVERS)]
                turn += 1
                for name in order:
                    measurement = _measure(corpus, associations, name, repeat, plan)
                    report(measurement, corpus)
                    measurements.append(measurement)
    return measurements


@dataclass(frozen=True, slots=True)
class Row:
    """The median result of one class and association count, for every receiver."""

    class_name: str
    associations: int
    instances: int
    total_bytes: int
    seconds: dict[str, float | None] = field(default_factory=dict)  # receiver -> median wall time
    noisy: int = 0
    measurements: int = 0

    def rate(self, name: str) -> tuple[float, float] | None:
        """(instances/s, MB/s) of receiver ``name``, or None if any of its runs failed."""
        seconds = self.seconds.get(name)
        if seconds is None or seconds <= 0:
            return None
        return self.instances / seconds, self.total_bytes / MEGABYTE / seconds

    def ratio(self, name: str) -> float | None:
        """Receiver ``name``'s rate over Orthanc's: the same for instances/s and MB/s (same corpus)."""
        orthanc, other = self.seconds.get(ORTHANC), self.seconds.get(name)
        if orthanc is None or other is None or other <= 0:
            return None
        return orthanc / other

    @property
    def judged(self) -> bool:
        """Whether the target applies to this row (the 4-association rows)."""
        return self.associations == TARGET_ASSOCIATIONS

    @property
    def target_met(self) -> bool | None:
        """True/False on the judged rows, None elsewhere or when a receiver failed."""
        ratio = self.ratio(TELECONSULT_N)
        if not self.judged or ratio is None:
            return None
        return ratio >= TARGET_RATIO


def _median_seconds(measurements: Sequence[Measurement]) -> float | None:
    """The median wall time, or None if any run failed: a partial result is not a result."""
    if not measurements or not all(m.ok for m in measurements):
        return None
    return statistics.median(m.seconds for m in measurements if m.seconds is not None)


def rows(corpora: Sequence[Corpus], measurements: Sequence[Measurement]) -> list[Row]:
    result = []
    for corpus in corpora:
        for associations in ASSOCIATIONS:
            mine = [m for m in measurements if (m.class_name, m.associations) == (corpus.name, associations)]
            seconds = {name: _median_seconds([m for m in mine if m.receiver == name]) for name in RECEIVERS}
            result.append(
                Row(
                    corpus.name,
                    associations,
                    corpus.count,
                    corpus.total_bytes,
                    seconds,
                    noisy=sum(1 for m in mine if m.noisy),
                    measurements=len(mine),
                )
            )
    return result
