"""Prometheus metrics of the service, served at /metrics.

When ``serve`` runs several gateway processes, the metrics of all of them
must reach the one ``/metrics`` endpoint: ``enable_multiprocess`` switches
prometheus-client to its multiprocess mode (values kept in memory-mapped
files in a directory shared by the processes) before anything is counted,
and ``exposition`` then aggregates those files. Code that counts refers to
the metrics through this module (``metrics.INSTANCES_STORED``), never by
importing the objects, because enabling multiprocess mode replaces them.
"""

from __future__ import annotations

import os
from pathlib import Path

import prometheus_client
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

__all__ = [
    "BYTES_STORED",
    "CONTENT_TYPE_LATEST",
    "INSTANCES_STORED",
    "STORE_REFUSED",
    "STORE_SECONDS",
    "enable_multiprocess",
    "exposition",
]

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _create() -> tuple[Counter, Counter, Counter, Histogram]:
    return (
        Counter(
            "teleconsult_instances_stored_total",
            "Instances accepted by the store, by outcome (stored, duplicate, replaced).",
            ["outcome"],
        ),
        Counter("teleconsult_bytes_stored_total", "Bytes of new instance files written."),
        Counter("teleconsult_instances_refused_total", "Instances the store refused, by error.", ["code"]),
        Histogram(
            "teleconsult_store_seconds",
            "Time to store one instance durably (parse, file, index).",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        ),
    )


INSTANCES_STORED, BYTES_STORED, STORE_REFUSED, STORE_SECONDS = _create()


def enable_multiprocess(directory: Path) -> None:
    """Count in ``directory`` from now on, in this process and in processes it starts later.

    Call it before anything is counted; the directory must be empty (a new
    one per ``serve``), or counts of an earlier run would be added.
    """
    global INSTANCES_STORED, BYTES_STORED, STORE_REFUSED, STORE_SECONDS
    os.environ[_MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.get_value_class()
    for metric in (INSTANCES_STORED, BYTES_STORED, STORE_REFUSED, STORE_SECONDS):
        REGISTRY.unregister(metric)
    INSTANCES_STORED, BYTES_STORED, STORE_REFUSED, STORE_SECONDS = _create()


def exposition() -> bytes:
    """The text exposition of every process's metrics."""
    if os.environ.get(_MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return bytes(generate_latest(registry))
    return bytes(generate_latest(prometheus_client.REGISTRY))
