"""Association counts for ``/metrics``: requested (by outcome) and open now.

Bound as notification handlers of the gateway's server (``ae.start_gateway``),
so they see the associations peers request of us, not the ones we request
(forwarding, C-MOVE sub-operations), which the forwarder counts by outcome.
An association is counted as open from its acceptance to the closing of
its connection, whichever way it ends (release, abort, timeout).
"""

from __future__ import annotations

from typing import Any

from pynetdicom import evt
from pynetdicom.events import Event

from teleconsult import metrics

__all__ = ["association_metric_handlers"]

_COUNTED = "_teleconsult_counted_open"


def _accepted(event: Event) -> None:
    metrics.ASSOCIATIONS.labels("accepted").inc()
    metrics.ASSOCIATIONS_ACTIVE.inc()
    setattr(event.assoc, _COUNTED, True)


def _rejected(event: Event) -> None:
    metrics.ASSOCIATIONS.labels("rejected").inc()


def _aborted(event: Event) -> None:
    metrics.ASSOCIATIONS.labels("aborted").inc()


def _closed(event: Event) -> None:
    if getattr(event.assoc, _COUNTED, False):
        setattr(event.assoc, _COUNTED, False)
        metrics.ASSOCIATIONS_ACTIVE.dec()


def association_metric_handlers() -> list[tuple[Any, Any]]:
    return [
        (evt.EVT_ACCEPTED, _accepted),
        (evt.EVT_REJECTED, _rejected),
        (evt.EVT_ABORTED, _aborted),
        (evt.EVT_CONN_CLOSE, _closed),
    ]
