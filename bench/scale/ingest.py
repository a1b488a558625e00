"""The ingest matrix: every class x 1 and 4 associations x the three receivers.

Measured the way ``bench.ingest`` measures (its corpus, its storescu sender
and its CPU accounting), so figures from both benchmarks compare. The order
of the receivers rotates from one (class, associations, run) to the next:
the first receiver after a class of large files pays for the disk still
writing them back, and that should not always be the same one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench.ingest.corpus import Corpus
from bench.ingest.measurement import MEGABYTE, NOISY_OTHER_CORES, Measurement, measure, median_seconds
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


def _measure(corpus: Corpus, associations: int, name: str, repeat: int, plan: IngestPlan) -> Measurement:
    return measure(
        corpus,
        associations,
        name,
        repeat,
        session=partial(
            receiver,
            name,
            database_url=plan.database_url,
            workers=plan.workers,
            orthanc_max_pdu=plan.orthanc_max_pdu,
        ),
        run_dir=plan.work_dir / "ingest" / f"{corpus.name}-{associations}-{name}-{repeat}",
        quiet_threshold=plan.quiet_threshold,
        quiet_timeout=plan.quiet_timeout,
        gateway_processes=gateway_processes(name, plan.workers),
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


def rows(corpora: Sequence[Corpus], measurements: Sequence[Measurement]) -> list[Row]:
    result = []
    for corpus in corpora:
        for associations in ASSOCIATIONS:
            mine = [m for m in measurements if (m.class_name, m.associations) == (corpus.name, associations)]
            seconds = {name: median_seconds([m for m in mine if m.receiver == name]) for name in RECEIVERS}
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
