"""The three receivers of the ingest matrix behind one context manager.

Orthanc is the reference; teleconsult runs twice, with one gateway process
(what a single process can do) and with N (what scaling out on one machine
adds), so the table shows both the per-process cost and the scale-out gain.
Each is started afresh on an empty directory for every measurement.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from bench.ingest.receivers import TELECONSULT, Endpoint, receiver_session
from bench.scale.orthanc import orthanc_session

__all__ = [
    "ORTHANC",
    "RECEIVERS",
    "TELECONSULT_N",
    "TELECONSULT_ONE",
    "Receiver",
    "gateway_processes",
    "receiver",
]

ORTHANC = "orthanc"
TELECONSULT_ONE = "teleconsult-1"
TELECONSULT_N = "teleconsult-N"
RECEIVERS = (ORTHANC, TELECONSULT_ONE, TELECONSULT_N)


class Receiver(Protocol):
    """What a measurement needs of a running receiver, whichever it is."""

    @property
    def endpoint(self) -> Endpoint: ...

    @property
    def process(self) -> subprocess.Popen[bytes]: ...

    def stop(self) -> None: ...

    def stored_count(self) -> int: ...


def gateway_processes(name: str, workers: int) -> int:
    """teleconsult's gateway processes for receiver ``name`` (0 for Orthanc, which has threads)."""
    return {ORTHANC: 0, TELECONSULT_ONE: 1, TELECONSULT_N: workers}[name]


@contextmanager
def receiver(
    name: str, run_dir: Path, *, database_url: str | None, workers: int, orthanc_max_pdu: int
) -> Iterator[Receiver]:
    """Receiver ``name`` running in the empty directory ``run_dir``, always stopped on exit."""
    if name == ORTHANC:
        with orthanc_session(run_dir, orthanc_max_pdu) as orthanc:
            yield orthanc
    elif name in (TELECONSULT_ONE, TELECONSULT_N):
        processes = gateway_processes(name, workers)
        with receiver_session(TELECONSULT, run_dir, database_url, processes) as teleconsult:
            yield teleconsult
    else:
        raise ValueError(f"unknown receiver {name!r}; choose from {', '.join(RECEIVERS)}")
