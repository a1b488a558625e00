"""Peers that send half a PDU, or announce a huge one: the gateway ends them, in bounded time and memory.

Regression tests for two faults the PDU fuzzer of ``bench/reliability``
found (docs/reliability.md, "Bugs found"): pynetdicom reads a PDU with
blocking ``recv`` calls on a socket without a timeout, so half a PDU held
the association's thread until the peer let go; and it buffers a whole PDU
of whatever length the peer announces before decoding it.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

from bench.reliability.pdu_fuzz import associate_rq
from tests.conftest import RunningGateway

_TIMEOUT = 2.0


def _connect(gateway: RunningGateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed the connection (whatever it sent first), or None."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        sock.settimeout(max(0.01, seconds - (time.monotonic() - started)))
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except TimeoutError:
            return None
        except ConnectionResetError:
            return time.monotonic() - started
    return None


def _associate(sock: socket.socket) -> None:
    sock.sendall(associate_rq())
    header = sock.recv(6, socket.MSG_WAITALL)
    pdu_type, _, length = struct.unpack(">BBI", header)
    assert pdu_type == 0x02, "A-ASSOCIATE-AC"
    sock.recv(length, socket.MSG_WAITALL)


def test_half_an_associate_rq_is_ended_by_the_network_timeout(start: Callable[..., RunningGateway]) -> None:
    gateway = start(dicom_network_timeout=_TIMEOUT, dicom_acse_timeout=_TIMEOUT)
    with _connect(gateway) as sock:
        sock.sendall(associate_rq()[:40])  # the header promises more than this
        assert _closed_within(sock, _TIMEOUT + 5) is not None


def test_half_a_p_data_on_an_association_is_ended_by_the_network_timeout(
    start: Callable[..., RunningGateway],
) -> None:
    gateway = start(dicom_network_timeout=_TIMEOUT, dicom_acse_timeout=_TIMEOUT)
    with _connect(gateway) as sock:
        _associate(sock)
        sock.sendall(b"\x04\x00\x00\x00")  # four of a P-DATA-TF header's six bytes
        assert _closed_within(sock, _TIMEOUT + 5) is not None


def test_a_pdu_longer_than_the_limit_is_not_buffered(start: Callable[..., RunningGateway]) -> None:
    gateway = start(dicom_network_timeout=30, dicom_max_pdu=16384)
    with _connect(gateway) as sock:
        _associate(sock)
        sock.sendall(struct.pack(">BBI", 0x04, 0, 0xFFFFFFFF))
        sent = 0
        try:
            for _ in range(256):  # 64 MiB, unless the server closes first
                sock.sendall(bytes(1 << 18))
                sent += 1 << 18
        except (BrokenPipeError, ConnectionResetError):
            pass
        else:
            assert _closed_within(sock, 5) is not None, f"{sent >> 20} MiB taken into one PDU"
    # the 1 MiB floor of the limit, plus what the kernel's socket buffers held
    assert sent < 32 << 20
