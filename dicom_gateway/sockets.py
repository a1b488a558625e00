"""Socket options for every association, accepted or requested."""

from __future__ import annotations

import logging
import socket
import sys
from typing import TYPE_CHECKING

from pynetdicom import AE
from pynetdicom.transport import AddressInformation, AssociationSocket

if TYPE_CHECKING:
    from ssl import SSLContext

    from pynetdicom.association import Association
    from pynetdicom.events import Event

__all__ = ["RequestorAE", "set_no_delay"]

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


class _ClosingSocket(AssociationSocket):
    """An association socket that is closed even when its connect was refused.

    pynetdicom 3.0.4 calls ``shutdown()`` on a socket that never connected,
    which raises, and then skips ``close()``: every retry on a switched-off
    peer would hold a file descriptor until garbage collection.

    ``connect_error`` keeps why the connection failed (refused, timed out, a
    TLS handshake or certificate error), which pynetdicom only logs.
    """

    connect_error: OSError | None = None

    def _shutdown_socket(self) -> None:
        if not self._is_connected:
            # pynetdicom calls this from the handler of the failed connect.
            error = sys.exc_info()[1]
            if isinstance(error, OSError):
                self.connect_error = error
        sock = self.socket
        super()._shutdown_socket()
        if sock is not None:
            sock.close()  # closing twice is harmless


class RequestorAE(AE):
    """An AE for associations we open (forwarding, commitment reports) that never leaks sockets."""

    def _create_socket(
        self, assoc: Association, address: AddressInformation, tls_args: tuple[SSLContext, str] | None
    ) -> AssociationSocket:
        sock = _ClosingSocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock
