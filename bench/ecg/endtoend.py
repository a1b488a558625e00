"""Part (c): from an ECG file landing in ``teleconsult serve``'s drop folder to ``alert.critical``.

``teleconsult serve`` runs as a child process on a fresh data directory
(bench/notify/serve.py: TOWN01 under COUNTY, one county specialist signed
in on ``/api/events``). Files are dropped one after another in the inbox's
``TOWN01`` folder as a cart should write them (``NAME.part``, then a
rename: the clock starts at the rename) and each is timed until its
``alert.critical`` arrives. The inbox runs with its default settings (a
look every 2 s, files settled for 2 s unless a file event says they are
complete, as the rename does): what a county gets out of the box.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bench.ecg.synthetic import inferior_stemi, synthesise, to_csv
from bench.notify.serve import SPECIALIST, teleconsult_serve

__all__ = ["INBOX_SETTINGS", "EndToEnd", "run_end_to_end"]

INBOX_SETTINGS: dict[str, str] = {}  # the defaults; set values are printed with the figures
_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class EndToEnd:
    latencies_ms: list[float]
    missing: int
    consults: int  # critical consults the alerts named


class _Alerts:
    def __init__(self, http_port: int, token: str) -> None:
        self.arrivals: queue.Queue[tuple[float, dict[str, object]]] = queue.Queue()
        self._ws = connect(f"ws://127.0.0.1:{http_port}/api/events", open_timeout=30)
        self._ws.send(json.dumps({"type": "auth", "token": token}))
        if json.loads(self._ws.recv(timeout=30)) != {"type": "ready"}:
            raise RuntimeError("the events socket did not answer ready")
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                text = self._ws.recv()
            except ConnectionClosed:
                return
            now = time.perf_counter()
            message = json.loads(text)
            if message.get("type") == "alert.critical":
                self.arrivals.put((now, message["data"]))

    def close(self) -> None:
        self._ws.close()
        self._thread.join(timeout=10)


def run_end_to_end(work_dir: Path, files: int) -> EndToEnd:
    ecgs = [
        to_csv(
            synthesise(st_offsets=inferior_stemi(0.25), noise_mv=0.01, wander_mv=0.1, seed=index),
            patient_id=f"E2E{index:05d}",
        )
        for index in range(files)
    ]
    latencies, missing, consults = [], 0, set()
    with teleconsult_serve(work_dir, extra_env=INBOX_SETTINGS) as served:
        folder = work_dir / "data" / "inbox" / "ecg" / "TOWN01"
        folder.mkdir(parents=True, exist_ok=True)
        alerts = _Alerts(served.http_port, served.token(SPECIALIST))
        try:
            time.sleep(3.0)  # let the analyser finish importing neurokit2 before the first file
            for index, content in enumerate(ecgs):
                part = folder / f"ecg-{index:05d}.csv.part"
                part.write_bytes(content)
                dropped = time.perf_counter()
                part.rename(folder / f"ecg-{index:05d}.csv")
                try:
                    arrived, data = alerts.arrivals.get(timeout=_TIMEOUT)
                except queue.Empty:
                    missing += 1
                    continue
                latencies.append((arrived - dropped) * 1000)
                if data.get("consult_id"):
                    consults.add(str(data["consult_id"]))
        finally:
            alerts.close()
    return EndToEnd(latencies, missing, len(consults))
