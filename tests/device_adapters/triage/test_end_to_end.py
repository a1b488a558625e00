"""End to end on loopback: a STEMI ECG dropped in the inbox reaches a county specialist's socket.

A real uvicorn serves the app (its lifespan runs the analyser and the
notification hub), the drop folder is watched as ``teleconsult serve``
watches it, and the specialist is signed in over HTTP with ``/api/events``
open before the file lands. The alert must carry the measurements, and a
critical consult to the county must exist.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from bench.ecg.synthetic import inferior_stemi, synthesise, to_csv
from device_adapters.ecg.inbox import EcgInbox
from teleconsult.api.app import create_app
from teleconsult.config import Settings
from teleconsult.domain.consults import Urgency
from teleconsult.storage.consults import ConsultStore
from teleconsult.storage.store import InstanceStore
from tests.conftest import PASSWORD
from tests.uvicorn_thread import serving

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def served(app_settings: Settings, store: InstanceStore, community: object) -> Iterator[tuple[int, EcgInbox]]:
    settings = app_settings.model_copy(
        update={"ecg_inbox_settle_seconds": 0.0, "ecg_inbox_poll_seconds": 0.05}
    )
    app = create_app(settings, store)
    with serving(app) as port:
        inbox = EcgInbox(settings, store)
        inbox.start()
        try:
            yield port, inbox
        finally:
            inbox.stop()


def test_a_dropped_stemi_ecg_reaches_the_specialists_socket_as_alert_critical(
    served: tuple[int, EcgInbox], store: InstanceStore
) -> None:
    port, inbox = served
    token = httpx.post(
        f"http://127.0.0.1:{port}/api/auth/token",
        data={"username": "specialist", "password": PASSWORD},
        timeout=30,
    ).json()["access_token"]
    with connect(f"ws://127.0.0.1:{port}/api/events", open_timeout=30) as ws:
        ws.send(json.dumps({"type": "auth", "token": token}))
        assert json.loads(ws.recv(timeout=30)) == {"type": "ready"}
        folder = Path(inbox.root, "TOWN01")
        folder.mkdir(parents=True, exist_ok=True)
        ecg = synthesise(st_offsets=inferior_stemi(0.25), noise_mv=0.01, wander_mv=0.1, sex="M")
        part = folder / "cart-0001.csv.part"
        part.write_bytes(to_csv(ecg, patient_id="E2E0001", birth_date="1958-03-04"))
        part.rename(folder / "cart-0001.csv")
        deadline = time.monotonic() + 60
        alert = None
        while alert is None:
            message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message["type"] == "alert.critical":
                alert = message
    data = alert["data"]
    assert data["reason"] == (
        "ST elevation in II, III, aVF (inferior): suspected STEMI — needs physician confirmation"
    )
    assert data["measurements"]["st_j60_mv"]["aVF"] == pytest.approx(0.25, abs=0.04)
    assert data["measurements"]["heart_rate_bpm"] == pytest.approx(70, abs=1.5)
    assert data["consult_id"]
    consult = ConsultStore(store.index.engine).get(data["consult_id"])
    assert consult is not None
    assert consult.urgency is Urgency.CRITICAL
    assert consult.study_instance_uid == data["study_instance_uid"]
    assert consult.target.organisation == "COUNTY"
    assert not list(inbox.root.rglob("*.csv"))  # imported, not quarantined
