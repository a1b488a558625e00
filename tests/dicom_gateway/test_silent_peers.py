"""TCP probes and port scans do not hold places under the association limit."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.conftest import RunningGateway

LIMIT = 2


def _probe(port: int, payload: bytes = b"") -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if payload:
            sock.sendall(payload)


def _accept_backlog(port: int) -> int:
    """Connections waiting in the listening socket's accept queue (Linux: rx_queue of the LISTEN row)."""
    waiting = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            waiting += int(queues.split(":")[1], 16)
    return waiting


def _wait_for_no_association(gateway: RunningGateway, seconds: float) -> float:
    """Until no association is held and no probe waits to be accepted (a busy machine accepts late)."""
    started = time.monotonic()
    quiet = 0
    while quiet < 3:
        busy = len(gateway.server.ae.active_associations) + _accept_backlog(gateway.port)
        quiet = 0 if busy else quiet + 1
        assert time.monotonic() - started < seconds, f"{busy} association(s) of closed probes still held"
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="connect-and-close"),
        pytest.param(b"\x99\x00\x00\x00\x00\x02ab", id="not-a-pdu"),
        pytest.param(b"\x01\x00\x00\x00\x00\x44", id="half-a-request"),
    ],
)
def test_probes_end_their_associations_at_once_and_a_device_gets_in(
    start: Callable[..., RunningGateway], payload: bytes
) -> None:
    gateway = start(dicom_max_associations=LIMIT, dicom_acse_timeout=30.0)
    for _ in range(LIMIT * 3):
        _probe(gateway.port, payload)
    # pynetdicom would keep each one for the ACSE timeout (30 s here)
    assert _wait_for_no_association(gateway, 5.0) < 5.0

    ae = AE(ae_title="TOWNUS")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title=gateway.settings.ae_title)
    try:
        assert assoc.is_established, "a device was refused after the probes"
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


def test_an_association_that_asked_still_runs_its_course(start: Callable[..., RunningGateway]) -> None:
    """The wake-up is for acceptors with no request: an association released normally is not disturbed."""
    gateway = start(dicom_max_associations=LIMIT)
    ae = AE(ae_title="TOWNUS")
    ae.add_requested_context(Verification)
    for _ in range(LIMIT * 2):
        assoc = ae.associate("127.0.0.1", gateway.port, ae_title=gateway.settings.ae_title)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        assert assoc.is_released
    _wait_for_no_association(gateway, 5.0)
