"""``teleconsult serve`` with a consult to examine live: a sonographer to send, specialists to view.

The installation is made as an administrator would make one (the CLI,
before the first start): COUNTY with its specialists, TOWN01 with a
sonographer. The sonographer then requests a consult on a patient over the
API, as the web client does, and each live session of the benchmark is
started and ended on that consult over REST. The server runs as one
process (``TELECONSULT_DICOM_WORKERS=1``), so the CPU it uses is one
process's, and without the background work the benchmark does not need
(ECG triage and inbox, the overdue-consult check). Sessions are recorded
to a file as shipped (``TELECONSULT_LIVE_RECORDING`` on) unless the
benchmark is told not to.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.notify.serve import PASSWORD, Served, _cli, _environment, _wait_ready, free_port

__all__ = [
    "SONOGRAPHER",
    "Installation",
    "live_serve",
    "machine_busy_seconds",
    "process_cpu_seconds",
    "specialist",
    "thread_cpu_seconds",
]

SONOGRAPHER = "bench-sono"
_QUIET = {
    "TELECONSULT_ECG_TRIAGE_ENABLED": "false",
    "TELECONSULT_ECG_INBOX_POLL_SECONDS": "0",
    "TELECONSULT_CONSULT_OVERDUE_CHECK_SECONDS": "0",
    "TELECONSULT_ACCESS_TOKEN_MINUTES": "600",  # tokens signed in once must outlast a long run
}


def specialist(index: int) -> str:
    return f"bench-specialist{index}"


@dataclass
class Installation:
    """The running server and the consult every live session of the benchmark is about."""

    served: Served
    consult_id: str = ""
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.served.process.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.served.http_port}"

    def token(self, username: str) -> str:
        if username not in self._tokens:
            self._tokens[username] = self.served.token(username)
        return self._tokens[username]

    def call(self, method: str, path: str, body: Any = None, *, user: str = SONOGRAPHER) -> Any:
        response = httpx.request(
            method,
            f"{self.base}{path}",
            headers={"Authorization": f"Bearer {self.token(user)}"},
            json=body,
            timeout=30,
        )
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
        return response.json()

    def start_session(self) -> dict[str, Any]:
        """A new live session on the consult (the sonographer starts it)."""
        session: dict[str, Any] = self.call("POST", "/api/live-sessions", {"consult_id": self.consult_id})
        if session["status"] == "ended":
            raise RuntimeError(f"live session {session['id']} answered as ended")
        return session

    def end_session(self, session_id: str) -> None:
        self.call("POST", f"/api/live-sessions/{session_id}/end")

    def signal_url(self, session: dict[str, Any]) -> str:
        return f"ws://127.0.0.1:{self.served.http_port}{session['signal_path']}"


@contextmanager
def live_serve(
    work_dir: Path, *, specialists: int, recording: bool = True, settings: dict[str, str] | None = None
) -> Iterator[Installation]:
    """A fresh installation served until the block ends, with ``specialists`` county specialists.

    ``recording=False`` turns the recording of sessions off (``TELECONSULT_LIVE_RECORDING``, on by
    default); ``settings``: more ``TELECONSULT_*`` variables for the server (they win).
    """
    http_port, dicom_port = free_port(), free_port()
    extra = {**_QUIET, "TELECONSULT_LIVE_MAX_VIEWERS": str(max(8, specialists))}
    if not recording:
        extra["TELECONSULT_LIVE_RECORDING"] = "false"
    extra.update(settings or {})
    env = _environment(work_dir / "data", http_port, dicom_port, 1, extra)
    _cli(env, "org", "add", "COUNTY", "--name", "County Hospital")
    _cli(env, "org", "add", "TOWN01", "--name", "Township Health Centre 1", "--parent", "COUNTY")
    _cli(env, "user", "add", SONOGRAPHER, "--password", PASSWORD, "--role", "sonographer", "--org", "TOWN01")
    for index in range(1, specialists + 1):
        _cli(
            env,
            "user",
            "add",
            specialist(index),
            "--password",
            PASSWORD,
            "--role",
            "specialist",
            "--org",
            "COUNTY",
        )
    process = subprocess.Popen(
        [sys.executable, "-m", "teleconsult", "serve"], env=env, stderr=subprocess.PIPE, cwd=work_dir
    )
    served = Served(process, http_port, dicom_port, workers=0)
    reader = threading.Thread(target=served._read, name="serve-log", daemon=True)
    reader.start()
    try:
        _wait_ready(served)
        installation = Installation(served)
        consult = installation.call(
            "POST",
            "/api/consults",
            {
                "patient_id": "BENCHLIVE1",
                "urgency": "urgent",
                "question": "Live exam benchmark: liver, hypoechoic lesion, please watch the scan.",
                "target_organisation": "COUNTY",
            },
        )
        installation.consult_id = str(consult["id"])
        yield installation
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=10)


def process_cpu_seconds(pid: int, *, children: bool = True) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) and, unless told not, its children."""
    ticks = os.sysconf("SC_CLK_TCK")

    def own(one: int) -> float:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / ticks

    if not children:
        return own(pid)
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids.update(int(kid) for kid in task.read_text().split())
        except OSError:
            continue
    return own(pid) + sum(own(kid) for kid in kids)


def thread_cpu_seconds(pid: int, tid: int) -> float:
    """User + system CPU seconds of one thread of ``pid`` (the main thread: ``tid == pid``)."""
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (iowait counts as idle)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
