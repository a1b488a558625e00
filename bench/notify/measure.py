"""Sending studies over DICOM and timing their ``study.stored`` at a WebSocket.

Both clocks are this process's ``perf_counter``: the sender notes when each
C-STORE response arrived, the listener thread when each event arrived. A
study's latency is the difference; it can be slightly negative, since the
server publishes the event as the instance becomes durable, just before it
answers the C-STORE.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from dicom_gateway.sockets import set_no_delay

__all__ = ["Listener", "Sent", "percentile", "send_studies"]

_US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"


class Listener:
    """A specialist's socket: notes when each study's first ``study.stored`` arrives."""

    def __init__(self, http_port: int, token: str) -> None:
        self.arrivals: dict[str, float] = {}
        self.other = 0  # events of other types
        self._arrived = threading.Condition()
        self._ws: ClientConnection = connect(
            f"ws://127.0.0.1:{http_port}/api/events", open_timeout=30, legacy=True
        )
        self._ws.send(json.dumps({"type": "auth", "token": token}))
        ready = json.loads(self._ws.recv(timeout=30))
        if ready != {"type": "ready"}:
            raise RuntimeError(f"the events socket answered {ready!r} instead of ready")
        self._thread = threading.Thread(target=self._run, name="events-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                text = self._ws.recv()
            except ConnectionClosed:
                return
            now = time.perf_counter()
            message = json.loads(text)
            with self._arrived:
                if message.get("type") == "study.stored":
                    self.arrivals.setdefault(message["data"]["study_instance_uid"], now)
                else:
                    self.other += 1
                self._arrived.notify_all()

    def wait_for(self, uids: set[str], timeout: float) -> set[str]:
        """The UIDs still missing after at most ``timeout`` seconds."""
        with self._arrived:
            self._arrived.wait_for(lambda: uids <= self.arrivals.keys(), timeout)
            return uids - self.arrivals.keys()

    def close(self) -> None:
        self._ws.close()
        self._thread.join(timeout=10)


@dataclass(frozen=True, slots=True)
class Sent:
    study_instance_uid: str
    requested: float  # perf_counter just before the C-STORE request was sent
    responded: float  # perf_counter when the C-STORE response was received
    status: int


def _instance(index: int) -> Dataset:
    """A small synthetic ultrasound image (64x64, 8-bit), a new patient and study each."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = _US_IMAGE
    ds.SOPInstanceUID = generate_uid(prefix=None)
    ds.StudyInstanceUID = generate_uid(prefix=None)
    ds.SeriesInstanceUID = generate_uid(prefix=None)
    ds.PatientName = f"Bench^Patient{index:04d}"
    ds.PatientID = f"BENCH{index:06d}"
    ds.StudyDate, ds.StudyTime = "20261124", "090000"
    ds.AccessionNumber = f"N{index:07d}"
    ds.Modality = "US"
    ds.StudyDescription = "Notification benchmark"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.random.default_rng(index).integers(0, 255, (64, 64), dtype=np.uint8).tobytes()
    return ds


def send_studies(port: int, count: int, calling_ae_title: str, pause: float) -> list[Sent]:
    """``count`` studies of one instance each, one association per study, one after the other.

    One association per study, like a device sending each exam when it is
    done, lets the kernel hand each to any of the gateway processes.
    """
    ae = AE(ae_title=calling_ae_title)
    ae.add_requested_context(_US_IMAGE, ExplicitVRLittleEndian)
    handlers = [(evt.EVT_CONN_OPEN, set_no_delay)]
    sent = []
    for index in range(count):
        ds = _instance(index)
        assoc = ae.associate("127.0.0.1", port, ae_title="TELECONSULT", evt_handlers=handlers)
        if not assoc.is_established:
            raise RuntimeError(f"association {index} was not accepted")
        requested = time.perf_counter()
        status = assoc.send_c_store(ds)
        responded = time.perf_counter()
        assoc.release()
        code = int(getattr(status, "Status", 0xFFFF))
        sent.append(Sent(str(ds.StudyInstanceUID), requested, responded, code))
        if pause:
            time.sleep(pause)
    return sent


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(values, p)) if values else float("nan")
