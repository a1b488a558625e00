"""An association's DUL polling: short while it works alone, pynetdicom's own otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicom_gateway import reactor_pacing
from tests.conftest import RunningGateway
from tests.factories import US_IMAGE, make_image

OWN_INTERVAL = 0.001  # pynetdicom 3's default


def _server_duls(gateway: RunningGateway) -> list[object]:
    return [assoc.dul for assoc in gateway.server.active_associations]


def _associate(gateway: RunningGateway):  # type: ignore[no-untyped-def]
    ae = AE(ae_title="TOWNUS")
    ae.add_requested_context(Verification)
    ae.add_requested_context(US_IMAGE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title=gateway.settings.ae_title)
    assert assoc.is_established
    return assoc


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


@pytest.fixture
def quick_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reactor_pacing, "IDLE_AFTER", 0.3)


def test_a_lone_busy_association_is_polled_quickly_until_it_falls_quiet(
    quick_expiry: None, start: Callable[..., RunningGateway]
) -> None:
    gateway = start()
    assoc = _associate(gateway)
    try:
        (dul,) = _server_duls(gateway)
        assert dul._run_loop_delay == OWN_INTERVAL  # nothing received yet
        assert assoc.send_c_echo().Status == 0x0000
        _wait_for(lambda: dul._run_loop_delay == reactor_pacing.ACTIVE_POLL_INTERVAL)
        # Quiet for longer than IDLE_AFTER: back to pynetdicom's interval.
        _wait_for(lambda: dul._run_loop_delay == OWN_INTERVAL, timeout=3.0)
        assert assoc.send_c_echo().Status == 0x0000
        _wait_for(lambda: dul._run_loop_delay == reactor_pacing.ACTIVE_POLL_INTERVAL)
    finally:
        assoc.release()


def test_two_busy_associations_both_keep_pynetdicoms_interval(start: Callable[..., RunningGateway]) -> None:
    gateway = start()
    first, second = _associate(gateway), _associate(gateway)
    fast = reactor_pacing.ACTIVE_POLL_INTERVAL
    try:
        assert first.send_c_echo().Status == 0x0000
        _wait_for(lambda: sorted(d._run_loop_delay for d in _server_duls(gateway)) == [fast, OWN_INTERVAL])
        assert second.send_c_echo().Status == 0x0000
        _wait_for(lambda: [d._run_loop_delay for d in _server_duls(gateway)] == [OWN_INTERVAL, OWN_INTERVAL])
        second.release()
        # The first is alone again: it gets the short interval back.
        _wait_for(lambda: [d._run_loop_delay for d in _server_duls(gateway)] == [fast])
    finally:
        first.release()
        if second.is_established:
            second.release()


def test_a_large_data_set_leaves_its_association_at_pynetdicoms_interval(
    start: Callable[..., RunningGateway],
) -> None:
    gateway = start()
    assoc = _associate(gateway)
    fast = reactor_pacing.ACTIVE_POLL_INTERVAL
    try:
        (dul,) = _server_duls(gateway)
        assert assoc.send_c_store(make_image(rows=64, columns=64)).Status == 0x0000
        _wait_for(lambda: dul._run_loop_delay == fast)
        # 1024 x 1024 pixels: over LARGE_DATA_SET
        assert assoc.send_c_store(make_image(rows=1024, columns=1024, seed=1)).Status == 0x0000
        assert dul._run_loop_delay == OWN_INTERVAL
        assert assoc.send_c_echo().Status == 0x0000
        _wait_for(lambda: dul._run_loop_delay == fast)
    finally:
        assoc.release()
