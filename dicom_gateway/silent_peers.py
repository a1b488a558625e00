"""Connections that close before asking for an association end theirs at once.

A TCP health check of a layer-4 load balancer, a monitoring probe or a port
scan connects and closes without sending an A-ASSOCIATE-RQ (or sends
something that is not one). pynetdicom's state machine handles that (AA-5,
or AA-1 then AR-5), but puts nothing on the queue its association thread
waits on for the request, so the thread waited out the whole ACSE timeout
(30 s): a probe every few seconds kept places under
``TELECONSULT_DICOM_MAX_ASSOCIATIONS`` taken, refusing real devices
("Local Limit Exceeded"), and a stopping gateway waited for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pynetdicom.events import Event

__all__ = ["end_unrequested"]

# Sta2: waiting for the A-ASSOCIATE-RQ; Sta13: waiting for the close after an A-ABORT sent
# for a PDU that was not one.
_BEFORE_REQUEST = frozenset({"Sta2", "Sta13"})


def end_unrequested(event: Event) -> None:
    """EVT_CONN_CLOSE handler: wake an acceptor still waiting for its request, as its timeout would.

    An empty item on the queue takes pynetdicom's own path for a request that
    never came (the association killed, its socket shut down). Nothing is put
    once a request has been received: that association ends its own way.
    """
    assoc = event.assoc
    if not assoc.is_acceptor or assoc.requestor.primitive is not None:
        return
    if assoc.dul.state_machine.current_state in _BEFORE_REQUEST:
        assoc.dul.to_user_queue.put(None)
