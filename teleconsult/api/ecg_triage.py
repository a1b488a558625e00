"""The ECG analyser in the HTTP process: made once per app, run by the ECG measurements router's lifespan.

It runs where the report outputs run, in the process that serves HTTP:
``teleconsult serve`` has one such process, gateway worker processes relay
their ``instance.stored`` events to it, and ``--no-dicom`` replicas each
run one (the unique key of the measurement row keeps them from analysing
an ECG twice). The analyser takes the app's consult service, so its
consults and those of the REST API share one clock and one set of
deadlines. ``TELECONSULT_ECG_TRIAGE_ENABLED=false`` leaves it off.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from device_adapters.ecg.triage import EcgTriage
from teleconsult.api.consulting import consult_service

__all__ = ["ecg_triage", "triage_lifespan"]

_lock = threading.Lock()


def ecg_triage(app: FastAPI) -> EcgTriage:
    """The app's ECG analyser, made on first use."""
    triage: EcgTriage | None = getattr(app.state, "ecg_triage", None)
    if triage is None:
        consults = consult_service(app)
        with _lock:
            triage = getattr(app.state, "ecg_triage", None)
            if triage is None:
                triage = EcgTriage(app.state.store, consults, app.state.settings)
                app.state.ecg_triage = triage
    return triage


@asynccontextmanager
async def triage_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Analyse ECGs stored while the app runs, and those stored while it did not."""
    if not app.state.settings.ecg_triage_enabled:
        yield
        return
    triage = ecg_triage(app)
    unsubscribe = triage.subscribe(app.state.store.bus)
    # ECGs stored through other replicas' gateways (TELECONSULT_BROKER_URL); the measurement
    # row's unique key keeps two replicas from analysing one ECG twice
    unsubscribe_remote = triage.subscribe(app.state.store.remote_bus)
    triage.start()
    try:
        yield
    finally:
        unsubscribe_remote()
        unsubscribe()
        await asyncio.to_thread(triage.stop)
