"""`teleconsult serve` behind a TLS-terminating reverse proxy on the same host (docs/security.md).

The proxy speaks HTTPS to browsers and plain HTTP to teleconsult on
127.0.0.1, adding X-Forwarded-Proto/-For and passing Host on. uvicorn
trusts those headers from 127.0.0.1 (its FORWARDED_ALLOW_IPS default), so
the URLs teleconsult writes are the https ones the client used, and the
audit trail records the client's address rather than the proxy's.
"""

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

from teleconsult.audit import AuditLog
from teleconsult.config import Settings
from teleconsult.storage.store import InstanceStore
from tests.conftest import require_tool
from tests.factories import make_image, write_part10

PROXIED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7", "Host": "tele.county.example"}


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


def test_forwarded_headers_from_a_local_proxy_give_https_urls_and_the_client_address(tmp_path: Path) -> None:
    storescu = require_tool("storescu")
    http_port, dicom_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "TELECONSULT_DATA_DIR": str(tmp_path / "data"),
        "TELECONSULT_HTTP_PORT": str(http_port),
        "TELECONSULT_DICOM_PORT": str(dicom_port),
        "TELECONSULT_DICOM_WORKERS": "1",
        "TELECONSULT_DICOM_PEERS": json.dumps(
            [{"ae_title": "TOWNUS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"}]
        ),
    }
    teleconsult = [sys.executable, "-m", "teleconsult"]
    for command in (
        ["org", "add", "TOWN01", "--name", "Township 1"],
        [
            "user",
            "add",
            "li",
            "--password",
            "a-long-password",
            "--role",
            "township_doctor",
            "--org",
            "TOWN01",
        ],
    ):
        subprocess.run([*teleconsult, *command], env=env, capture_output=True, timeout=60, check=True)
    log_path = tmp_path / "serve.log"
    log = log_path.open("wb")
    server = subprocess.Popen([*teleconsult, "serve"], env=env, stderr=log)
    base = f"http://127.0.0.1:{http_port}"
    try:
        _wait_healthy(f"{base}/healthz", server, time.monotonic() + 30)
        image = write_part10(make_image(), tmp_path / "us.dcm")
        sent = subprocess.run(
            [storescu, "-aet", "TOWNUS", "-aec", "TELECONSULT", "127.0.0.1", str(dicom_port), str(image)],
            env={**env, "TCP_NODELAY": "1"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr

        refused = httpx.post(
            f"{base}/api/auth/token", data={"username": "li", "password": "wrong-password"}, headers=PROXIED
        )
        assert refused.status_code == 401
        token = httpx.post(
            f"{base}/api/auth/token", data={"username": "li", "password": "a-long-password"}, headers=PROXIED
        ).json()["access_token"]
        studies = httpx.get(
            f"{base}/dicomweb/studies",
            headers={**PROXIED, "Authorization": f"Bearer {token}", "Accept": "application/dicom+json"},
        )
        assert studies.status_code == 200, studies.text
        (study,) = studies.json()
        (url,) = study["00081190"]["Value"]
        assert url.startswith("https://tele.county.example/dicomweb/studies/"), url
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            raise AssertionError(f"serve did not stop on SIGTERM:\n{log_path.read_text()[-3000:]}") from None
        finally:
            log.close()

    store = InstanceStore(Settings(data_dir=tmp_path / "data", database_auto_migrate=False))
    try:
        rows = AuditLog(store.index.engine).query(actor="li", limit=100)
    finally:
        store.close()
    assert rows, "the sign-ins were audited"
    assert {row["source_address"] for row in rows} == {"203.0.113.7"}
