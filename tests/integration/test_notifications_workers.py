"""`teleconsult serve` with gateway workers: a study stored by any process reaches the specialist's socket.

Each storescu process opens its own association, and the kernel hands it to
one of the gateway processes (the main one or a worker); a worker publishes
on its own bus, so only the relay to the main process, which holds the
WebSockets, gets its studies to the specialist. A worker that is killed and
replaced relays too. A township user of another organisation hears none of
it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from tests.conftest import require_tool
from tests.factories import make_image, write_part10

_SERVING = re.compile(r" (\d+) INFO +dicom_gateway\.workers: gateway worker \d+ serving")
_ASSOCIATION = re.compile(r" (\d+) INFO +dicom_gateway\.ae: association requested by TOWNUS")
PASSWORD = "correct-horse-battery"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Log:
    """The server's stderr, read by a thread so the pipe never fills."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        self._stream = process.stderr
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._stream:
            with self._lock:
                self._lines.append(raw.decode(errors="replace"))

    def text(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def pids(self, pattern: re.Pattern[str], count: int, timeout: float = 60) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [int(pid) for pid in pattern.findall(self.text())]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{pattern.pattern!r} seen fewer than {count} times:\n{self.text()[-3000:]}")

    def close(self) -> None:
        self._thread.join(timeout=30)
        self._stream.close()


def _cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "teleconsult", *args], env=env, check=True, timeout=60)


def _token(http_port: int, user: str) -> str:
    response = httpx.post(
        f"http://127.0.0.1:{http_port}/api/auth/token",
        data={"username": user, "password": PASSWORD},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _wait_healthy(http_port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, "teleconsult serve exited early"
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("teleconsult serve did not become healthy")


def _send_all(storescu: str, port: int, paths: list[Path]) -> None:
    """One storescu (one association) per file, all at once."""
    processes = [
        subprocess.Popen(
            [storescu, "-aet", "TOWNUS", "-aec", "TELECONSULT", "127.0.0.1", str(port), str(path)],
            env={**os.environ, "TCP_NODELAY": "1"},
            stderr=subprocess.PIPE,
        )
        for path in paths
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr.decode(errors="replace")


class _Studies:
    """study.stored events of one socket, by study UID."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: dict[str, dict[str, Any]] = {}

    def wait_for(self, uids: set[str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not uids <= set(self.seen):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"missing study.stored for {sorted(uids - set(self.seen))}"
            message = json.loads(self.ws.recv(timeout=remaining))
            assert message["type"] == "study.stored", message
            self.seen[message["data"]["study_instance_uid"]] = message


def _open(http_port: int, user: str) -> ClientConnection:
    ws = connect(f"ws://127.0.0.1:{http_port}/api/events", open_timeout=10, legacy=True)
    ws.send(json.dumps({"type": "auth", "token": _token(http_port, user)}))
    assert json.loads(ws.recv(timeout=10)) == {"type": "ready"}
    return ws


def test_studies_stored_by_gateway_workers_reach_the_specialists_socket(tmp_path: Path) -> None:
    storescu = require_tool("storescu")
    dicom_port, http_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "TELECONSULT_DATA_DIR": str(tmp_path / "data"),
        "TELECONSULT_DICOM_PORT": str(dicom_port),
        "TELECONSULT_HTTP_PORT": str(http_port),
        "TELECONSULT_DICOM_WORKERS": "3",
        "TELECONSULT_DICOM_PEERS": json.dumps(
            [{"ae_title": "TOWNUS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"}]
        ),
    }
    _cli(env, "org", "add", "COUNTY", "--name", "County Hospital")
    _cli(env, "org", "add", "TOWN01", "--name", "Township 1", "--parent", "COUNTY")
    _cli(env, "org", "add", "TOWN02", "--name", "Township 2", "--parent", "COUNTY")
    _cli(env, "user", "add", "specialist", "--password", PASSWORD, "--role", "specialist", "--org", "COUNTY")
    _cli(env, "user", "add", "sono2", "--password", PASSWORD, "--role", "sonographer", "--org", "TOWN02")

    server = subprocess.Popen([sys.executable, "-m", "teleconsult", "serve"], env=env, stderr=subprocess.PIPE)
    log = _Log(server)
    batch = 0

    def send_batch(size: int = 12) -> set[str]:
        nonlocal batch
        images = [make_image(seed=batch * 100 + i) for i in range(size)]
        paths = [write_part10(ds, tmp_path / f"b{batch}-{i}.dcm") for i, ds in enumerate(images)]
        batch += 1
        _send_all(storescu, dicom_port, paths)
        return {str(ds.StudyInstanceUID) for ds in images}

    specialist = other_township = None
    try:
        workers = set(log.pids(_SERVING, 2))
        assert server.pid not in workers
        _wait_healthy(http_port, server)
        specialist, other_township = _open(http_port, "specialist"), _open(http_port, "sono2")
        studies = _Studies(specialist)

        # Send until a worker (not the main process) has handled associations.
        sent: set[str] = set()
        while not workers & set(log.pids(_ASSOCIATION, 0)):
            assert batch < 5, f"no association reached a worker:\n{log.text()[-3000:]}"
            sent |= send_batch()
        studies.wait_for(sent)
        assert set(studies.seen) == sent
        assert all(m["data"]["source_organisation"] == "TOWN01" for m in studies.seen.values())

        # A killed worker is replaced, and what its replacement stores is relayed as well.
        victim = next(iter(workers))
        os.kill(victim, signal.SIGKILL)
        replacement = set(log.pids(_SERVING, 3, timeout=60)) - workers
        assert len(replacement) == 1
        before = len(log.pids(_ASSOCIATION, 0))
        while not replacement & set(log.pids(_ASSOCIATION, 0)[before:]):
            assert batch < 12, f"no association reached the new worker:\n{log.text()[-3000:]}"
            sent |= send_batch()
        studies.wait_for(sent)
        assert set(studies.seen) == sent

        # TOWN02 heard nothing of TOWN01's studies: its next message is the answer to its ping.
        other_township.send(json.dumps({"type": "ping"}))
        assert json.loads(other_township.recv(timeout=10)) == {"type": "pong"}
    finally:
        for ws in (specialist, other_township):
            if ws is not None:
                ws.close()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    assert server.returncode == 0, log.text()[-3000:]
