"""The measurements: QIDO-RS latency per query kind, WADO-RS throughput against reading the file."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from bench.query.queries import Query
from bench.query.servers import BenchError

__all__ = [
    "LatencyRow",
    "Throughput",
    "make_dr",
    "measure_qido",
    "measure_raw_read",
    "measure_wado",
    "qido_url",
]

MEGABYTE = 1_000_000
_DICOM = 'multipart/related; type="application/dicom"'


@dataclass(frozen=True, slots=True)
class LatencyRow:
    kind: str
    label: str
    runs: int
    median_matches: float
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True, slots=True)
class Throughput:
    name: str
    megabytes: float
    runs: int
    median_seconds: float

    @property
    def megabytes_per_second(self) -> float:
        return self.megabytes / self.median_seconds


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def qido_url(query: Query) -> str:
    """The QIDO-RS request a viewer makes for one query of the mix (values percent-encoded)."""
    if query.kind.level == "SERIES":
        return f"/dicomweb/studies/{query.keys['StudyInstanceUID']}/series"
    return "/dicomweb/studies?" + urlencode(query.keys)


def measure_qido(client: httpx.Client, queries: dict[str, list[Query]], warmup: int) -> list[LatencyRow]:
    """Each query once (after ``warmup`` unmeasured ones per kind); every answer's count is checked."""
    rows = []
    for kind, drawn in queries.items():
        for query in drawn[:warmup]:
            client.get(qido_url(query)).raise_for_status()
        times, matches = [], []
        for query in drawn:
            started = time.perf_counter()
            response = client.get(qido_url(query))
            body = response.content
            times.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            count = len(response.json()) if body else 0
            if count != query.expected:
                raise BenchError(
                    f"{qido_url(query)} returned {count} matches, the corpus has {query.expected}"
                )
            matches.append(count)
        rows.append(
            LatencyRow(
                kind,
                drawn[0].kind.label,
                len(drawn),
                statistics.median(matches),
                percentile(times, 0.5),
                percentile(times, 0.95),
            )
        )
    return rows


def make_dr(rows: int = 2048, columns: int = 2048) -> Dataset:
    """An 8 MB digital radiograph (16-bit, synthetic noise), ready for ``store_instance``."""
    from pydicom.dataset import FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.PatientID = "BENCH-DR"
    ds.PatientName = "Bench^DR"
    ds.StudyDate = "19990101"  # outside every corpus year: the query mix never finds it
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.random.default_rng(1).integers(0, 4096, (rows, columns), dtype="<u2").tobytes()
    return ds


def measure_wado(client: httpx.Client, url: str, expected_bytes: int, runs: int) -> Throughput:
    """Median time to receive the whole multipart response of one instance (streamed, not parsed)."""
    seconds = []
    for run in range(runs + 1):
        started = time.perf_counter()
        received = 0
        with client.stream("GET", url, headers={"Accept": _DICOM}) as response:
            response.raise_for_status()
            for chunk in response.iter_raw(1 << 20):
                received += len(chunk)
        elapsed = time.perf_counter() - started
        if received < expected_bytes:
            raise BenchError(f"WADO-RS sent {received} bytes, the file has {expected_bytes}")
        if run:  # the first run only warms up
            seconds.append(elapsed)
    return Throughput(
        "WADO-RS retrieve instance (HTTP, multipart)", received / MEGABYTE, runs, statistics.median(seconds)
    )


def measure_raw_read(path: Path, runs: int, *, cold: bool) -> Throughput:
    """Median time to read the stored file in 1 MiB blocks.

    Warm: from the page cache, as WADO-RS reads it in this benchmark. Cold:
    the file's pages are dropped first (``posix_fadvise(DONTNEED)`` after an
    ``fsync``), so the read goes to the disk.
    """
    seconds = []
    size = path.stat().st_size
    for run in range(runs + 1):
        if cold:
            with open(path, "rb") as f:
                os.fsync(f.fileno())
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        started = time.perf_counter()
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass
        if run:
            seconds.append(time.perf_counter() - started)
    name = f"read the same file from disk ({'cold' if cold else 'page cache'})"
    return Throughput(name, size / MEGABYTE, runs, statistics.median(seconds))
