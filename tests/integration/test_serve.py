"""What a new user does: `teleconsult serve`, storescu, find the study by its Chinese name."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import require_tool
from tests.factories import make_image, write_part10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        assert process.poll() is None, "teleconsult serve exited early"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("teleconsult serve did not become healthy in time")


def test_serve_store_find(tmp_path: Path) -> None:
    storescu = require_tool("storescu")
    http_port, dicom_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "TELECONSULT_DATA_DIR": str(tmp_path / "data"),
        "TELECONSULT_HTTP_PORT": str(http_port),
        "TELECONSULT_DICOM_PORT": str(dicom_port),
        "TELECONSULT_DICOM_PEERS": json.dumps(
            [{"ae_title": "TOWNUS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"}]
        ),
    }
    teleconsult = [sys.executable, "-m", "teleconsult"]
    server = subprocess.Popen([*teleconsult, "serve"], env=env, stderr=subprocess.PIPE)
    try:
        _wait_healthy(f"http://127.0.0.1:{http_port}/healthz", server, time.monotonic() + 30)
        image = write_part10(
            make_image(charset="GB18030", patient_name="Wang^XiaoMing=王^小明"), tmp_path / "us.dcm"
        )
        sent = subprocess.run(
            [storescu, "-aet", "TOWNUS", "-aec", "TELECONSULT", "127.0.0.1", str(dicom_port), str(image)],
            env={**env, "TCP_NODELAY": "1"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr

        found = subprocess.run(
            [*teleconsult, "study", "find", "--patient-name", "王*", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        (study,) = json.loads(found.stdout)
        assert study["patient_name"] == "Wang^XiaoMing=王^小明"
        assert study["source_organisation"] == "TOWN01"

        metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
        assert 'teleconsult_instances_stored_total{outcome="stored"} 1.0' in metrics
        assert 'teleconsult_dicom_associations_total{outcome="accepted"} 1.0' in metrics
        assert 'teleconsult_events_total{type="instance.stored"} 1.0' in metrics
        # the association is counted open until its connection closes, in whichever process took it
        deadline = time.monotonic() + 10
        while "teleconsult_dicom_associations_active 0.0" not in metrics and time.monotonic() < deadline:
            time.sleep(0.1)
            metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
        assert "teleconsult_dicom_associations_active 0.0" in metrics
        ready = httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    log = stderr.decode(errors="replace")
    assert server.returncode == 0, log[-2000:]
    assert "stopped" in log
