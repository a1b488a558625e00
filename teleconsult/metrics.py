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
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.registry import Collector

__all__ = [
    "ASSOCIATIONS",
    "ASSOCIATIONS_ACTIVE",
    "BYTES_STORED",
    "CONTENT_TYPE_LATEST",
    "EVENTS",
    "FORWARDS",
    "INSTANCES_STORED",
    "STORE_REFUSED",
    "STORE_SECONDS",
    "enable_multiprocess",
    "exposition",
]

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _create() -> dict[str, Counter | Gauge | Histogram]:
    return {
        "INSTANCES_STORED": Counter(
            "teleconsult_instances_stored_total",
            "Instances accepted by the store, by outcome (stored, duplicate, replaced).",
            ["outcome"],
        ),
        "BYTES_STORED": Counter("teleconsult_bytes_stored_total", "Bytes of new instance files written."),
        "STORE_REFUSED": Counter(
            "teleconsult_instances_refused_total", "Instances the store refused, by error.", ["code"]
        ),
        "STORE_SECONDS": Histogram(
            "teleconsult_store_seconds",
            "Time to store one instance durably (parse, file, index).",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        ),
        "ASSOCIATIONS": Counter(
            "teleconsult_dicom_associations_total",
            "DICOM associations requested of the gateway, by outcome (accepted, rejected, aborted).",
            ["outcome"],
        ),
        # summed over the gateway processes, counting only the ones alive
        "ASSOCIATIONS_ACTIVE": Gauge(
            "teleconsult_dicom_associations_active",
            "DICOM associations open now.",
            multiprocess_mode="livesum",
        ),
        "FORWARDS": Counter(
            "teleconsult_forward_attempts_total",
            "C-STORE attempts of the forwarding queue, by outcome (sent, failed).",
            ["outcome"],
        ),
        "EVENTS": Counter(
            "teleconsult_events_total",
            "Events published (instance.stored, study.stored, alert.critical ...), by type.",
            ["type"],
        ),
    }


INSTANCES_STORED: Counter
BYTES_STORED: Counter
STORE_REFUSED: Counter
STORE_SECONDS: Histogram
ASSOCIATIONS: Counter
ASSOCIATIONS_ACTIVE: Gauge
FORWARDS: Counter
EVENTS: Counter
_current: dict[str, Counter | Gauge | Histogram] = {}


def _install(created: dict[str, Counter | Gauge | Histogram]) -> None:
    _current.clear()
    _current.update(created)
    globals().update(created)


_install(_create())


def enable_multiprocess(directory: Path) -> None:
    """Count in ``directory`` from now on, in this process and in processes it starts later.

    Call it before anything is counted; the directory must be empty (a new
    one per ``serve``), or counts of an earlier run would be added.
    """
    os.environ[_MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.get_value_class()
    for metric in _current.values():
        REGISTRY.unregister(metric)
    _install(_create())


def exposition(*collectors: Collector) -> bytes:
    """The text exposition of every process's metrics, and of ``collectors`` read now."""
    if os.environ.get(_MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        for collector in collectors:
            registry.register(collector)
        return bytes(generate_latest(registry))
    text = bytes(generate_latest(prometheus_client.REGISTRY))
    if collectors:
        extra = CollectorRegistry()
        for collector in collectors:
            extra.register(collector)
        text += bytes(generate_latest(extra))
    return text
