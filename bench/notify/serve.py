"""``teleconsult serve`` as a child process on free loopback ports, with a community to sign in to.

The organisations and users are made with the CLI before the first start,
as an installation would be set up; the gateway runs with the default
number of processes unless told otherwise, so studies arrive through the
main process and through gateway workers (and their relay).
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["CALLING_AE_TITLE", "PASSWORD", "SPECIALIST", "Served", "free_port", "teleconsult_serve"]

CALLING_AE_TITLE = "BENCHSCU"
SPECIALIST = "bench-specialist"
PASSWORD = "bench-password-not-secret"
_SERVING = re.compile(r"gateway worker \d+ serving")
_ASSOCIATION = re.compile(rf" (\d+) INFO +dicom_gateway\.ae: association requested by {CALLING_AE_TITLE}")
_START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    http_port: int
    dicom_port: int
    workers: int
    _lines: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def log(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def association_pids(self) -> list[int]:
        """The process that took each association of the benchmark's AE, in order."""
        return [int(pid) for pid in _ASSOCIATION.findall(self.log())]

    def token(self, username: str) -> str:
        response = httpx.post(
            f"http://127.0.0.1:{self.http_port}/api/auth/token",
            data={"username": username, "password": PASSWORD},
            timeout=30,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            with self._lock:
                self._lines.append(raw.decode(errors="replace"))


def _environment(
    data_dir: Path, http_port: int, dicom_port: int, workers: int | None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("TELECONSULT_")}
    env.update(
        {
            "TELECONSULT_DATA_DIR": str(data_dir),
            "TELECONSULT_HTTP_PORT": str(http_port),
            "TELECONSULT_DICOM_PORT": str(dicom_port),
            "TELECONSULT_DICOM_PEERS": json.dumps(
                [{"ae_title": CALLING_AE_TITLE, "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"}]
            ),
        }
    )
    if workers is not None:
        env["TELECONSULT_DICOM_WORKERS"] = str(workers)
    env.update(extra or {})
    return env


def _cli(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "teleconsult", *args], env=env, check=True, timeout=120, capture_output=True
    )


def _wait_ready(served: Served) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    url = f"http://127.0.0.1:{served.http_port}/healthz"
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise RuntimeError(f"teleconsult serve exited:\n{served.log()[-3000:]}")
        try:
            healthy = httpx.get(url, timeout=1).status_code == 200
        except httpx.TransportError:
            healthy = False
        if healthy and len(_SERVING.findall(served.log())) >= served.workers:
            return
        time.sleep(0.1)
    raise RuntimeError(f"teleconsult serve was not ready in {_START_TIMEOUT:.0f} s:\n{served.log()[-3000:]}")


@contextmanager
def teleconsult_serve(
    work_dir: Path, *, workers: int | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[Served]:
    """A fresh installation (TOWN01 under COUNTY, one county specialist) served until the block ends.

    ``extra_env``: more TELECONSULT_* settings for this installation (bench/ecg sets the inbox's timers).
    """
    http_port, dicom_port = free_port(), free_port()
    env = _environment(work_dir / "data", http_port, dicom_port, workers, extra_env)
    _cli(env, "org", "add", "COUNTY", "--name", "County Hospital")
    _cli(env, "org", "add", "TOWN01", "--name", "Township Health Centre 1", "--parent", "COUNTY")
    _cli(env, "user", "add", SPECIALIST, "--password", PASSWORD, "--role", "specialist", "--org", "COUNTY")
    processes = workers or len(os.sched_getaffinity(0))
    process = subprocess.Popen(
        [sys.executable, "-m", "teleconsult", "serve"], env=env, stderr=subprocess.PIPE, cwd=work_dir
    )
    served = Served(process, http_port, dicom_port, workers=processes - 1)
    reader = threading.Thread(target=served._read, name="serve-log", daemon=True)
    reader.start()
    try:
        _wait_ready(served)
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=10)
