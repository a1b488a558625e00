"""`teleconsult serve` with TELECONSULT_DICOM_WORKERS: several processes on one port."""

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

import httpx

from teleconsult.config import Settings
from teleconsult.storage.store import InstanceStore
from tests.conftest import require_tool
from tests.factories import make_image, write_part10

_SERVING = re.compile(r"gateway worker (\d+) serving")
_ASSOCIATION = re.compile(r" (\d+) INFO +dicom_gateway\.ae: association requested by TOWNUS")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Log:
    """The server's stderr, read by a thread so the pipe never fills."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        assert process.stderr is not None
        self._stream = process.stderr
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        """After the process exited: read to the end and close the pipe."""
        self._thread.join(timeout=30)
        self._stream.close()

    def _read(self, stream: object) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            with self._lock:
                self.lines.append(raw.decode(errors="replace"))

    def text(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def wait_for(self, pattern: re.Pattern[str], count: int, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = pattern.findall(self.text())
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"{pattern.pattern!r} seen fewer than {count} times:\n{self.text()[-3000:]}")


def _send(storescu: str, port: int, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [storescu, "-aet", "TOWNUS", "-aec", "TELECONSULT", "127.0.0.1", str(port), str(path)],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _send_all(storescu: str, port: int, paths: list[Path]) -> None:
    results: list[subprocess.CompletedProcess[str]] = []
    threads = [threading.Thread(target=lambda p=p: results.append(_send(storescu, port, p))) for p in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = [r.stderr for r in results if r.returncode != 0]
    assert len(results) == len(paths)
    assert failed == []


def test_workers_share_the_port_store_into_one_index_and_are_restarted(tmp_path: Path) -> None:
    storescu = require_tool("storescu")
    port, http_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "TELECONSULT_DATA_DIR": str(tmp_path / "data"),
        "TELECONSULT_DICOM_PORT": str(port),
        "TELECONSULT_HTTP_PORT": str(http_port),
        "TELECONSULT_DICOM_WORKERS": "3",
        "TELECONSULT_DICOM_PEERS": json.dumps(
            [{"ae_title": "TOWNUS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"}]
        ),
    }
    images = [write_part10(make_image(seed=i), tmp_path / f"img{i}.dcm") for i in range(24)]
    server = subprocess.Popen([sys.executable, "-m", "teleconsult", "serve"], env=env, stderr=subprocess.PIPE)
    log = _Log(server)
    try:
        workers = {int(pid) for pid in log.wait_for(_SERVING, 2)}
        assert server.pid not in workers
        assert len(workers) == 2

        # One association per storescu process: the kernel spreads them over the listeners.
        _send_all(storescu, port, images[:12])
        handled_by = {int(pid) for pid in log.wait_for(_ASSOCIATION, 12)}
        assert handled_by <= {server.pid, *workers}
        assert len(handled_by) >= 2, "every association went to the same process"

        # A worker that dies is replaced, and nothing sent afterwards is lost.
        victim = workers.pop()
        os.kill(victim, signal.SIGKILL)
        replacement = {int(pid) for pid in log.wait_for(_SERVING, 3)} - workers - {victim}
        assert len(replacement) == 1
        _send_all(storescu, port, images[12:])

        # /metrics adds up every gateway process, the killed one included.
        metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=10).text
        assert 'teleconsult_instances_stored_total{outcome="stored"} 24.0' in metrics
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    assert server.returncode == 0, log.text()[-3000:]
    for pid in [*workers, *replacement]:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()

    settings = Settings(data_dir=str(tmp_path / "data"), database_auto_migrate=False)
    store = InstanceStore(settings)
    try:
        assert store.index.counts()["instances"] == 24
    finally:
        store.close()
