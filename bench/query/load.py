"""Load the same encoded corpus into teleconsult and into Orthanc, timing each.

teleconsult is loaded through its one write path, ``InstanceStore.store_instance``,
in-process: the same checks, fsyncs and index transaction as a C-STORE,
without the network. Orthanc is loaded by DCMTK ``storescu`` over DICOM or by
its REST ``POST /instances``, whichever ``--orthanc-load`` says (the README
gives the times of both). Each loader checks that every instance arrived.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian

from bench.query.corpus import Corpus
from bench.query.datasets import EncodedInstance, part10_bytes, write_part10_files
from bench.query.servers import (
    CALLING_AE_TITLE,
    PEER_ORGANISATION,
    SOURCE_ORGANISATION,
    BenchError,
    OrthancServer,
    teleconsult_settings,
)

__all__ = ["LoadResult", "load_orthanc_rest", "load_orthanc_storescu", "load_teleconsult"]

try:  # the organisation tree that scopes queries (absent from older trees of the code)
    from teleconsult.storage.identity import IdentityStore
except ImportError:  # pragma: no cover
    IdentityStore = None


@dataclass(frozen=True, slots=True)
class LoadResult:
    """How long a load took and what the server then held."""

    method: str
    seconds: float
    instances: int
    studies: int
    series: int

    @property
    def rate(self) -> float:
        return self.instances / self.seconds if self.seconds > 0 else 0.0


def _chunks(items: Sequence[EncodedInstance], count: int) -> list[Sequence[EncodedInstance]]:
    """``count`` interleaved slices: each worker gets whole studies in order, as a device would send."""
    by_worker: list[list[EncodedInstance]] = [[] for _ in range(count)]
    for item in items:
        by_worker[item.study_index % count].append(item)
    return by_worker


def _check_counts(server: str, corpus: Corpus, instances: int, studies: int, series: int) -> None:
    expected = (corpus.instance_count, len(corpus.studies), corpus.series_count)
    if (instances, studies, series) != expected:
        raise BenchError(
            f"{server} holds {instances} instances, {studies} studies, {series} series after loading; "
            f"the corpus has {expected[0]}, {expected[1]}, {expected[2]}"
        )


def _add_organisations(engine: Any) -> None:
    """TOWN01 under COUNTY, as ``teleconsult org add`` would: without it the county peer sees nothing."""
    if IdentityStore is None:
        return
    identity = IdentityStore(engine)
    identity.add_organisation(PEER_ORGANISATION, "County hospital")
    identity.add_organisation(SOURCE_ORGANISATION, "Township health centre 01", PEER_ORGANISATION)


def load_teleconsult(
    corpus: Corpus,
    instances: Sequence[EncodedInstance],
    data_dir: Path,
    database_url: str | None,
    threads: int,
) -> LoadResult:
    """``store_instance`` from ``threads`` threads (fsync waits overlap; parsing holds the GIL)."""
    from teleconsult.domain.studies import StoreOutcome
    from teleconsult.storage.store import InstanceStore

    store = InstanceStore(teleconsult_settings(data_dir, database_url))
    store.open()
    try:

        def work(chunk: Sequence[EncodedInstance]) -> int:
            stored = 0
            for item in chunk:
                result = store.store_instance(
                    item.data_set,
                    ExplicitVRLittleEndian,
                    calling_ae_title=CALLING_AE_TITLE,
                    source_organisation=SOURCE_ORGANISATION,
                )
                stored += result.outcome is StoreOutcome.STORED
            return stored

        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            stored = sum(pool.map(work, _chunks(instances, threads)))
        seconds = time.perf_counter() - started
        counts = store.index.counts()
        _add_organisations(store.index.engine)
    finally:
        store.close()
    if stored != len(instances):
        raise BenchError(f"teleconsult stored {stored} new instances of {len(instances)}")
    _check_counts("teleconsult", corpus, counts["instances"], counts["studies"], counts["series"])
    return LoadResult(
        f"InstanceStore.store_instance, {threads} threads",
        seconds,
        counts["instances"],
        counts["studies"],
        counts["series"],
    )


def _orthanc_counts(orthanc: OrthancServer, corpus: Corpus, method: str, seconds: float) -> LoadResult:
    statistics = orthanc.get_json("/statistics")
    result = LoadResult(
        method,
        seconds,
        int(statistics["CountInstances"]),
        int(statistics["CountStudies"]),
        int(statistics["CountSeries"]),
    )
    _check_counts("Orthanc", corpus, result.instances, result.studies, result.series)
    return result


def load_orthanc_rest(
    orthanc: OrthancServer, corpus: Corpus, instances: Sequence[EncodedInstance], threads: int
) -> LoadResult:
    """``POST /instances`` of each Part 10 file, one keep-alive HTTP connection per thread."""
    host, port = orthanc.http_url.removeprefix("http://").split(":")
    failures: list[str] = []
    lock = threading.Lock()

    def work(chunk: Sequence[EncodedInstance]) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        try:
            for item in chunk:
                conn.request(
                    "POST",
                    "/instances",
                    body=part10_bytes(item),
                    headers={"Content-Type": "application/dicom"},
                )
                response = conn.getresponse()
                body = response.read()
                if response.status != 200 or json.loads(body).get("Status") != "Success":
                    with lock:
                        failures.append(f"{item.sop_instance_uid}: HTTP {response.status} {body[:200]!r}")
        finally:
            conn.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, _chunks(instances, threads)))
    seconds = time.perf_counter() - started
    if failures:
        raise BenchError(f"Orthanc refused {len(failures)} instances, first: {failures[0]}")
    return _orthanc_counts(orthanc, corpus, f"REST POST /instances, {threads} connections", seconds)


def _storescu(orthanc: OrthancServer, directory: Path, log_path: Path) -> subprocess.Popen[bytes]:
    command = [
        "storescu",
        "-aet",
        CALLING_AE_TITLE,
        "-aec",
        orthanc.endpoint.ae_title,
        "--scan-directories",
        "--recurse",
        "--no-halt",
        orthanc.endpoint.host,
        str(orthanc.endpoint.port),
        str(directory),
    ]
    env: dict[str, Any] = {**os.environ, "TCP_NODELAY": "1"}
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def load_orthanc_storescu(
    orthanc: OrthancServer,
    corpus: Corpus,
    instances: list[EncodedInstance],
    files_dir: Path,
    processes: int,
) -> LoadResult:
    """DCMTK ``storescu`` (TCP_NODELAY=1), one process and association per directory of whole studies.

    Writing the Part 10 files is not timed; sending them is.
    """
    group_dirs = write_part10_files(instances, files_dir, processes)
    started = time.perf_counter()
    senders = [_storescu(orthanc, d, files_dir / f"storescu-{i}.log") for i, d in enumerate(group_dirs)]
    codes = [sender.wait() for sender in senders]
    seconds = time.perf_counter() - started
    if any(codes):
        log = (files_dir / f"storescu-{codes.index(next(c for c in codes if c))}.log").read_text()[-2000:]
        raise BenchError(f"storescu exited with {codes}:\n{log}")
    return _orthanc_counts(orthanc, corpus, f"DCMTK storescu, {processes} processes", seconds)
