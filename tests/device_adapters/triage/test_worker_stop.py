"""Stopping the ECG analyser is prompt, whenever stop() comes."""

from __future__ import annotations

import time

from device_adapters.ecg.triage.worker import EcgTriage
from teleconsult.config import Settings
from teleconsult.consults import ConsultService
from teleconsult.storage.store import InstanceStore


def test_a_stop_between_the_loops_check_and_its_wait_is_not_slept_through(
    store: InstanceStore, consults: ConsultService, app_settings: Settings
) -> None:
    """The window a SIGTERM can fall in: the thread has checked for a stop, not yet waited."""
    triage = EcgTriage(store, consults, app_settings, scan_seconds=3600)

    def scan_then_stop() -> int:
        # Runs on the analyser's thread after its loop checked for a stop: what
        # stop() does from another thread, short of joining.
        triage._stopping.set()
        with triage._cond:
            triage._cond.notify_all()
        return 0

    triage.scan = scan_then_stop  # type: ignore[method-assign]
    triage.start()
    thread = triage._thread
    assert thread is not None
    started = time.monotonic()
    thread.join(20)
    assert not thread.is_alive(), "the analyser slept through a stop until its next scan"
    assert time.monotonic() - started < 20
    triage.stop()
