"""The two C-STORE receivers under test, each run as its own subprocess.

Both run out of process, like a deployed gateway, so the benchmark's own
Python never shares a GIL with them. Each measurement gets a fresh receiver
with an empty data directory (and, on PostgreSQL, a fresh schema), so no run
pays for the files or index rows of the one before. Every receiver listens on
127.0.0.1 only, on a free port, and is always stopped by the context manager,
even when the measurement fails.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

__all__ = [
    "BASELINE",
    "CALLING_AE_TITLE",
    "RECEIVERS",
    "TELECONSULT",
    "BenchError",
    "Endpoint",
    "Session",
    "free_port",
    "libpq_url",
    "log_tail",
    "receiver_session",
    "stop_process",
]

BASELINE = "baseline"
TELECONSULT = "teleconsult"
RECEIVERS = (BASELINE, TELECONSULT)
CALLING_AE_TITLE = "BENCH"
_HOST = "127.0.0.1"
_TELECONSULT_AE_TITLE = "TELECONSULT"
_BASELINE_AE_TITLE = "BASELINE"
_BASELINE_SCRIPT = Path(__file__).with_name("baseline_scp.py")
_START_TIMEOUT = 60.0
_WORKER_SERVING = re.compile(r"gateway worker \d+ serving")
_STOP_TIMEOUT = 30.0
_POLL_INTERVAL = 0.02


class BenchError(Exception):
    """A measurement could not be made or its result is wrong."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    ae_title: str


@dataclass
class Session:
    """A running receiver: where to send, how to stop it, how to count what it stored."""

    endpoint: Endpoint
    process: subprocess.Popen[bytes]
    log_path: Path
    _count: Callable[[], int]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit; safe to call twice."""
        stop_process(self.process)

    def stored_count(self) -> int:
        """Instances the receiver holds; call after ``stop`` so everything is settled."""
        return self._count()


def free_port() -> int:
    """A port the kernel just handed out on loopback; the tiny reuse race is acceptable here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _clean_environment() -> dict[str, str]:
    """The caller's environment without TELECONSULT_*, so only the benchmark configures it."""
    return {name: value for name, value in os.environ.items() if not name.startswith("TELECONSULT_")}


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Poll until the port accepts a connection; fail early if the server dies."""
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"receiver exited with {process.returncode} at start:\n{log_tail(log_path)}")
        try:
            with socket.create_connection((_HOST, port), timeout=1.0):
                return
        except OSError:
            time.sleep(_POLL_INTERVAL)
    raise BenchError(f"receiver did not listen on {_HOST}:{port} within {_START_TIMEOUT:.0f} s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = _STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; safe to call twice."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _spawn(command: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)


@contextmanager
def _running(
    command: list[str], env: dict[str, str], run_dir: Path, port: int, ae_title: str, count: Callable[[], int]
) -> Iterator[Session]:
    log_path = run_dir / "server.log"
    process = _spawn(command, env, run_dir, log_path)
    session = Session(Endpoint(_HOST, port, ae_title), process, log_path, count)
    try:
        _wait_for_port(port, process, log_path)
        yield session
    finally:
        session.stop()


def _count_files(directory: Path) -> int:
    return sum(1 for path in directory.glob("*.dcm") if path.is_file())


@contextmanager
def _baseline(run_dir: Path) -> Iterator[Session]:
    output = run_dir / "data"
    port = free_port()
    command = [sys.executable, str(_BASELINE_SCRIPT), "--port", str(port), "--output", str(output)]
    command += ["--ae-title", _BASELINE_AE_TITLE]
    with _running(
        command, _clean_environment(), run_dir, port, _BASELINE_AE_TITLE, lambda: _count_files(output)
    ) as session:
        yield session


def _teleconsult_command() -> list[str]:
    """The venv's ``teleconsult`` script next to this interpreter, else ``-m teleconsult``."""
    script = Path(sys.executable).with_name("teleconsult")
    if script.is_file():
        return [str(script), "serve", "--no-http"]
    return [sys.executable, "-m", "teleconsult", "serve", "--no-http"]


def _count_indexed(data_dir: Path, database_url: str | None) -> int:
    from teleconsult.config import Settings
    from teleconsult.storage.store import InstanceStore

    # Read only: counting must never migrate the schema the server made.
    settings = Settings(data_dir=data_dir, database_url=database_url, database_auto_migrate=False)
    store = InstanceStore(settings)
    store.open()
    try:
        return store.index.counts()["instances"]
    finally:
        store.close()


def libpq_url(url: str) -> str:
    """A SQLAlchemy-style URL (``postgresql+psycopg://``) as a plain libpq URL for psycopg."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


@contextmanager
def _postgres_schema(database_url: str) -> Iterator[str]:
    """A fresh ``bench_<random>`` schema, dropped afterwards; yields the URL that selects it."""
    import psycopg

    schema = f"bench_{secrets.token_hex(6)}"
    admin_url = libpq_url(database_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in database_url else "?"
    try:
        yield f"{database_url}{separator}options={quote(f'-csearch_path={schema}', safe='-')}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@contextmanager
def _index_url(database_url: str | None) -> Iterator[str | None]:
    if database_url is None or database_url.startswith("sqlite"):
        yield database_url
        return
    with _postgres_schema(database_url) as url:
        yield url


def _wait_for_workers(session: Session, workers: int) -> None:
    """Wait until every extra gateway process listens, so none starts during a measurement."""
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if session.process.poll() is not None:
            raise BenchError(f"teleconsult exited at start:\n{log_tail(session.log_path)}")
        text = session.log_path.read_text(errors="replace")
        if len(_WORKER_SERVING.findall(text)) >= workers - 1:
            return
        time.sleep(_POLL_INTERVAL)
    raise BenchError(f"teleconsult's {workers - 1} worker processes did not start in {_START_TIMEOUT:.0f} s")


@contextmanager
def _teleconsult(run_dir: Path, database_url: str | None, workers: int) -> Iterator[Session]:
    data_dir = run_dir / "data"
    port = free_port()
    with _index_url(database_url) as index_url:
        env = _clean_environment()
        env.update(
            TELECONSULT_DATA_DIR=str(data_dir),
            TELECONSULT_AE_TITLE=_TELECONSULT_AE_TITLE,
            TELECONSULT_DICOM_HOST=_HOST,
            TELECONSULT_DICOM_PORT=str(port),
            TELECONSULT_DICOM_PEERS=json.dumps(
                [{"ae_title": CALLING_AE_TITLE, "host": _HOST, "port": 104, "organisation": "BENCH"}]
            ),
        )
        if index_url is not None:
            env["TELECONSULT_DATABASE_URL"] = index_url
        env["TELECONSULT_DICOM_WORKERS"] = str(workers)
        with _running(
            _teleconsult_command(),
            env,
            run_dir,
            port,
            _TELECONSULT_AE_TITLE,
            lambda: _count_indexed(data_dir, index_url),
        ) as session:
            if workers > 1:
                _wait_for_workers(session, workers)
            yield session


@contextmanager
def receiver_session(
    name: str, run_dir: Path, database_url: str | None, workers: int = 1
) -> Iterator[Session]:
    """Start receiver ``name`` in the empty directory ``run_dir``; remove its data afterwards.

    Its working directory is ``run_dir``, so a ``.env`` file where the
    benchmark was started cannot change teleconsult's settings.
    """
    run_dir.mkdir(parents=True)
    try:
        if name == BASELINE:
            with _baseline(run_dir) as session:
                yield session
        elif name == TELECONSULT:
            with _teleconsult(run_dir, database_url, workers) as session:
                yield session
        else:
            raise ValueError(f"unknown receiver {name!r}")
    finally:
        for data in (run_dir / "data", run_dir / "data.tmp"):
            shutil.rmtree(data, ignore_errors=True)
