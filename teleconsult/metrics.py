"""Prometheus metrics of the process, served at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["BYTES_STORED", "INSTANCES_STORED", "STORE_REFUSED", "STORE_SECONDS"]

INSTANCES_STORED = Counter(
    "teleconsult_instances_stored_total",
    "Instances accepted by the store, by outcome (stored, duplicate, replaced).",
    ["outcome"],
)
BYTES_STORED = Counter("teleconsult_bytes_stored_total", "Bytes of new instance files written.")
STORE_REFUSED = Counter(
    "teleconsult_instances_refused_total", "Instances the store refused, by error code.", ["code"]
)
STORE_SECONDS = Histogram(
    "teleconsult_store_seconds",
    "Time to store one instance durably (parse, file, index).",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
