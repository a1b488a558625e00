"""Study stored through replica A → ``study.stored`` on a specialist's WebSocket on replica B.

The sending and the timing are ``bench.notify``'s (one small study per
association, the C-STORE response and the event both on this process's
``perf_counter``); only the path differs: the event has to leave A through
the broker and come back in through B, which is what a specialist behind a
load balancer sees whenever the device and the browser land on different
replicas.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.notify.measure import Listener, Sent, percentile, send_studies
from bench.notify.serve import CALLING_AE_TITLE
from bench.scale.replicas import ReplicaPair

__all__ = ["TARGET_P95_MS", "LatencyResult", "Spread", "measure_cross_replica"]

TARGET_P95_MS = 250.0
_ARRIVAL_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Spread:
    """p50, p95 and max of one set of latencies, in milliseconds (NaN when empty)."""

    count: int
    p50_ms: float
    p95_ms: float
    max_ms: float

    @classmethod
    def of(cls, values_ms: list[float]) -> Spread:
        return cls(
            len(values_ms),
            percentile(values_ms, 50),
            percentile(values_ms, 95),
            max(values_ms) if values_ms else float("nan"),
        )


@dataclass(frozen=True, slots=True)
class LatencyResult:
    studies: int
    announced: int
    failed_stores: int
    other_events: int
    after_response: Spread  # the target's measure
    after_request: Spread  # including transfer, parse, fsync and index on A
    early: int  # events heard before their C-STORE response was read
    target_ms: float
    gateway_processes: int

    @property
    def complete(self) -> bool:
        """Every study stored and announced: anything less is a failure, not a slow result."""
        return self.studies > 0 and self.failed_stores == 0 and self.announced == self.studies

    @property
    def target_met(self) -> bool:
        return self.after_response.count > 0 and self.after_response.p95_ms < self.target_ms


def _latencies_ms(sent: list[Sent], listener: Listener, since: str) -> list[float]:
    """Milliseconds from each study's C-STORE request or response (``since``) to its event."""
    return [
        (listener.arrivals[s.study_instance_uid] - getattr(s, since)) * 1000
        for s in sent
        if s.study_instance_uid in listener.arrivals
    ]


def measure_cross_replica(
    pair: ReplicaPair, studies: int, *, pause: float = 0.0, target_ms: float = TARGET_P95_MS
) -> LatencyResult:
    """Send ``studies`` one-instance studies to A while a county specialist listens on B."""
    listener = Listener(pair.b.http_port, pair.specialist_token())
    try:
        sent = send_studies(pair.a.dicom_port, studies, CALLING_AE_TITLE, pause)
        listener.wait_for({s.study_instance_uid for s in sent}, _ARRIVAL_TIMEOUT)
    finally:
        listener.close()
    after_response = _latencies_ms(sent, listener, "responded")
    return LatencyResult(
        studies=len(sent),
        announced=len(after_response),
        failed_stores=sum(1 for s in sent if s.status != 0),
        other_events=listener.other,
        after_response=Spread.of(after_response),
        after_request=Spread.of(_latencies_ms(sent, listener, "requested")),
        early=sum(1 for value in after_response if value < 0),
        target_ms=target_ms,
        gateway_processes=pair.a.workers,
    )
