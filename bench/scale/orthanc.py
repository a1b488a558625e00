"""Orthanc as a C-STORE receiver: the reference teleconsult's gateway must keep up with.

Many county hospitals already run Orthanc (Debian package ``orthanc``); a gateway
that ingests slower than it would be a step back. Each measurement gets a fresh
Orthanc whose storage area and default SQLite index live in the run directory,
configured only by a JSON file written here, so nothing from ``/etc/orthanc``
leaks in. Storage fsync (``SyncStorageArea``) stays on, as shipped and as
teleconsult does.

Orthanc 1.10 cannot bind its ports to one address: both listen on every
interface. HTTP refuses remote clients (``RemoteAccessAllowed``); on the DICOM
port only the calling AE ``BENCH`` from 127.0.0.1 may store, the same rule
teleconsult applies to its one declared peer, so neither receiver takes
anything from outside the machine during a run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ingest.receivers import CALLING_AE_TITLE, BenchError, Endpoint, free_port, log_tail, stop_process

__all__ = [
    "ORTHANC_AE_TITLE",
    "ORTHANC_BINARY",
    "ORTHANC_DEFAULT_MAX_PDU",
    "OrthancSession",
    "orthanc_session",
]

ORTHANC_BINARY = "/usr/sbin/Orthanc"
ORTHANC_AE_TITLE = "ORTHANC"
# Orthanc 1.10's shipped MaximumPduLength; teleconsult's gateway offers 262,144.
ORTHANC_DEFAULT_MAX_PDU = 16384
_HOST = "127.0.0.1"
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 60.0
_POLL_INTERVAL = 0.02
_HTTP_TIMEOUT = 30.0


def _config(run_dir: Path, dicom_port: int, http_port: int, max_pdu: int) -> dict[str, Any]:
    """Orthanc's defaults, spelt out where they matter to ingest, plus what a loopback run needs."""
    return {
        "Name": "bench-scale",
        "StorageDirectory": str(run_dir / "storage"),
        "IndexDirectory": str(run_dir / "index"),  # the default SQLite index
        "Plugins": [],
        "StorageCompression": False,
        "SyncStorageArea": True,  # fsync every stored file, like teleconsult
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "WebDavEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": ORTHANC_AE_TITLE,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        # Every uncompressed and compressed syntax (Orthanc's default): the corpus uses Explicit VR LE.
        "AcceptedTransferSyntaxes": ["1.2.840.10008.1.*"],
        "UnknownSopClassAccepted": False,  # the corpus's four SOP classes are all standard storage
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": {CALLING_AE_TITLE: [CALLING_AE_TITLE, _HOST, 104]},
        "DicomThreadsCount": 4,  # the default: one thread per association of the 4-association runs
        "MaximumPduLength": max_pdu,
        "DicomScpTimeout": 60,
        "SaveJobs": False,
    }


@dataclass
class OrthancSession:
    """A running Orthanc: where to send, its version, and the instances it holds.

    Shaped like ``bench.ingest.receivers.Session`` so one measurement loop
    drives both receivers. Orthanc is counted through its REST API, which needs
    it running, so ``stop`` counts first and ``stored_count`` returns that.
    """

    endpoint: Endpoint
    process: subprocess.Popen[bytes]
    log_path: Path
    http_url: str
    version: str = ""
    _stored: int | None = None
    _count_error: str | None = None

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.http_url + path, timeout=_HTTP_TIMEOUT) as response:
            return json.load(response)

    def stop(self) -> None:
        """Count the stored instances while Orthanc still answers, then SIGTERM (SIGKILL after 60 s)."""
        if self.process.poll() is None and self._stored is None and self._count_error is None:
            try:
                self._stored = int(self.get_json("/statistics")["CountInstances"])
            except (OSError, ValueError, KeyError) as exc:
                self._count_error = f"{type(exc).__name__}: {exc}"
        stop_process(self.process, _STOP_TIMEOUT)

    def stored_count(self) -> int:
        """Instances Orthanc's index held just before it was stopped."""
        if self._stored is None:
            reason = self._count_error or f"Orthanc exited (status {self.process.returncode}) first"
            raise BenchError(f"could not count Orthanc's instances: {reason}\n{log_tail(self.log_path)}")
        return self._stored


def _wait_for_dicom(session: OrthancSession) -> None:
    """Poll until the DICOM port accepts; Orthanc opens it after the index and HTTP server."""
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if session.process.poll() is not None:
            raise BenchError(
                f"Orthanc exited with {session.process.returncode} at start:\n{log_tail(session.log_path)}"
            )
        try:
            with socket.create_connection((_HOST, session.endpoint.port), timeout=1.0):
                return
        except OSError:
            time.sleep(_POLL_INTERVAL)
    port = session.endpoint.port
    raise BenchError(f"Orthanc did not listen on {_HOST}:{port} within {_START_TIMEOUT:.0f} s")


def _read_version(session: OrthancSession) -> str:
    """``/system`` as one line: the figures only compare with the same Orthanc.

    Polled: Orthanc opens its DICOM port a moment before its HTTP server.
    """
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        try:
            system = session.get_json("/system")
            break
        except (OSError, ValueError) as exc:
            if session.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"Orthanc's REST API at {session.http_url} did not answer: {exc}") from exc
            time.sleep(_POLL_INTERVAL)
    return (
        f"Orthanc {system.get('Version', '?')} (REST API {system.get('ApiVersion', '?')}, "
        f"database schema {system.get('DatabaseVersion', '?')})"
    )


def _check_binary() -> None:
    if not Path(ORTHANC_BINARY).is_file():
        raise BenchError(f"{ORTHANC_BINARY} not found: install the Debian package orthanc")


@contextmanager
def orthanc_session(run_dir: Path, max_pdu: int = ORTHANC_DEFAULT_MAX_PDU) -> Iterator[OrthancSession]:
    """A fresh Orthanc in the empty directory ``run_dir``, stopped and its data removed afterwards.

    ``TCP_NODELAY=1`` is in its environment: Orthanc's DICOM side is DCMTK,
    which otherwise leaves Nagle on and makes every small C-STORE response
    wait ~40 ms for a delayed ACK. The log stays in ``run_dir``.
    """
    _check_binary()
    run_dir.mkdir(parents=True)
    dicom_port, http_port = free_port(), free_port()
    config_path = run_dir / "orthanc.json"
    config_path.write_text(json.dumps(_config(run_dir, dicom_port, http_port, max_pdu), indent=2))
    log_path = run_dir / "server.log"
    env = {**os.environ, "TCP_NODELAY": "1"}
    try:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [ORTHANC_BINARY, str(config_path)], env=env, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT
            )
        session = OrthancSession(
            Endpoint(_HOST, dicom_port, ORTHANC_AE_TITLE), process, log_path, f"http://{_HOST}:{http_port}"
        )
        try:
            _wait_for_dicom(session)
            session.version = _read_version(session)
            yield session
        finally:
            session.stop()
    finally:
        for data in (run_dir / "storage", run_dir / "index"):
            shutil.rmtree(data, ignore_errors=True)
