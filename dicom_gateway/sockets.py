"""Socket options for every association, accepted or requested."""

from __future__ import annotations

import logging
import socket
import sys
from typing import TYPE_CHECKING

from pynetdicom import AE
from pynetdicom.transport import AddressInformation, AssociationSocket, RequestHandler

if TYPE_CHECKING:
    from ssl import SSLContext

    from pynetdicom.association import Association
    from pynetdicom.events import Event

__all__ = ["AcceptorRequestHandler", "RequestorAE", "set_no_delay"]

# The smallest PDU limit an accepted association gets, whatever TELECONSULT_DICOM_MAX_PDU says:
# an A-ASSOCIATE-RQ with 128 presentation contexts of several transfer syntaxes each is ~100 KB.
_MIN_PDU_LIMIT = 1 << 20

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


class _AcceptedSocket(AssociationSocket):
    """An accepted association's socket that refuses to buffer a PDU larger than ``pdu_limit``.

    pynetdicom reads a PDU's 4-byte length and then that many bytes into one
    buffer before it decodes anything: a peer announcing 4 GiB and sending
    them would grow the process by as much. A PDU longer than the limit is
    read as a closed connection instead (pynetdicom's Evt17: the association
    ends, its thread with it).
    """

    pdu_limit = 0  # bytes after the 6-byte PDU header; 0: no limit

    def recv(self, nr_bytes: int) -> bytearray:
        if self.pdu_limit and nr_bytes > self.pdu_limit:
            logger.warning(
                "peer %s announced a PDU of %d bytes, more than the %d accepted: connection closed",
                self.assoc.requestor.address,
                nr_bytes,
                self.pdu_limit,
            )
            return bytearray()
        return super().recv(nr_bytes)


class AcceptorRequestHandler(RequestHandler):
    """pynetdicom's handler of an accepted connection, whose reads can neither block nor grow forever.

    The connection's socket gets the network timeout: pynetdicom checks its
    timers (ARTIM, network timeout) between reads, so a peer that sends half a
    PDU and then nothing would otherwise hold the association's thread (and a
    place under the association limit) for as long as it keeps the connection
    open. And its PDUs are limited to ``maximum_pdu_size`` (at least 1 MiB;
    none when that is 0, unlimited).
    """

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        timeout = self.ae.network_timeout
        if timeout is not None and isinstance(self.request, socket.socket):
            self.request.settimeout(timeout)
        sock = assoc.dul.socket
        if sock is not None and type(sock) is AssociationSocket:
            # made by pynetdicom's handler a moment ago, before the association started
            sock.__class__ = _AcceptedSocket
            limit = self.ae.maximum_pdu_size
            sock.pdu_limit = max(limit, _MIN_PDU_LIMIT) if limit else 0
        return assoc
