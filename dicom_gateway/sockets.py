"""Socket options for every association, accepted or requested."""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pynetdicom.events import Event

__all__ = ["set_no_delay"]

logger = logging.getLogger(__name__)


def set_no_delay(event: Event) -> None:
    """EVT_CONN_OPEN handler: turn Nagle off.

    pynetdicom leaves it on, and each small PDU round trip then waits ~40 ms
    for the peer's delayed ACK.
    """
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            logger.debug("could not set TCP_NODELAY", exc_info=True)
