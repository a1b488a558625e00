"""The servers under test: Orthanc, the teleconsult gateway, and a throw-away PostgreSQL schema.

Every server listens on 127.0.0.1 only, on a free port, and is stopped by its
context manager even when the benchmark fails. The teleconsult gateway runs
in a forked child process (started with ``start_gateway``, as ``teleconsult
serve`` does), so the measuring client never shares a GIL with it: Orthanc gets its
own process too, and a client sharing the interpreter with the gateway would
bill teleconsult for the client's decoding of every response.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = [
    "CALLING_AE_TITLE",
    "HOST",
    "ORTHANC_AE_TITLE",
    "PEER_ORGANISATION",
    "SOURCE_ORGANISATION",
    "TELECONSULT_AE_TITLE",
    "BenchError",
    "Endpoint",
    "OrthancServer",
    "backend_pids",
    "free_port",
    "libpq_url",
    "orthanc_server",
    "postgres_schema",
    "teleconsult_gateway",
    "teleconsult_settings",
]

HOST = "127.0.0.1"
CALLING_AE_TITLE = "BENCH"
# The querying peer is the county hospital; every study comes from a township
# under it in the organisation tree, so the county's query scope covers them all.
PEER_ORGANISATION = "COUNTY"
SOURCE_ORGANISATION = "TOWN01"
ORTHANC_AE_TITLE = "ORTHANC"
TELECONSULT_AE_TITLE = "TELECONSULT"
ORTHANC_BINARY = "/usr/sbin/Orthanc"
_START_TIMEOUT = 120.0
_STOP_TIMEOUT = 60.0

logger = logging.getLogger(__name__)


class BenchError(Exception):
    """A measurement could not be made, or its result is wrong."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a DICOM server listens."""

    name: str
    host: str
    port: int
    ae_title: str
    pid: int | None = None  # the server's process, where the benchmark started it


def free_port() -> int:
    """A port the kernel just handed out on loopback; the tiny reuse race is acceptable here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- PostgreSQL --------------------------------------------------------------


def libpq_url(url: str) -> str:
    """A SQLAlchemy-style URL (``postgresql+psycopg://``) as a plain libpq URL."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


@contextmanager
def postgres_schema(database_url: str) -> Iterator[tuple[str, str]]:
    """A fresh ``bench_<random>`` schema, dropped afterwards.

    Yields (schema, URL selecting it through libpq's ``options``), so the
    benchmark never touches the tables of anything else in the database.
    Every connection through that URL carries the schema's name as its
    ``application_name``, so ``backend_pids`` finds the server processes
    working for this run.
    """
    import psycopg

    schema = f"bench_{secrets.token_hex(6)}"
    admin_url = libpq_url(database_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in database_url else "?"
    try:
        options = quote(f"-csearch_path={schema}", safe="-")
        yield schema, f"{database_url}{separator}options={options}&application_name={schema}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def backend_pids(database_url: str, application_name: str) -> list[int]:
    """PostgreSQL server processes serving connections of ``application_name`` (the run's own)."""
    import psycopg

    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        ).fetchall()
    return [int(row[0]) for row in rows]


# -- Orthanc -----------------------------------------------------------------


class OrthancServer:
    """A running Orthanc: its DICOM endpoint and REST base URL (loopback, no authentication).

    This machine is shared, and an Orthanc killed from outside (``pkill
    Orthanc`` by a neighbour's test clean-up) once cost a 30-minute run:
    ``ensure_running`` restarts it on the same storage and index, and
    ``restarts`` says how often that happened, for the report.
    """

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        dicom_port, http_port = free_port(), free_port()
        self.config_path = work_dir / "config.json"
        self.config_path.write_text(json.dumps(_orthanc_config(work_dir, dicom_port, http_port), indent=2))
        self.log_path = work_dir / "orthanc.log"
        self.endpoint = Endpoint("orthanc", HOST, dicom_port, ORTHANC_AE_TITLE)
        self.http_url = f"http://{HOST}:{http_port}"
        self.restarts: list[str] = []
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "TCP_NODELAY": "1"}
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                [ORTHANC_BINARY, str(self.config_path)],
                env=env,
                cwd=self.work_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_http(self.http_url + "/system", process, self.log_path)
        return process

    def ensure_running(self) -> bool:
        """Restart Orthanc if it exited; True if it had to."""
        code = self.process.poll()
        if code is None:
            return False
        self.restarts.append(f"exit code {code}")
        logger.warning("Orthanc exited with code %s during the run; restarting it on the same data", code)
        self.process = self._start()
        return True

    def stop(self) -> None:
        _stop(self.process)

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.http_url + path, timeout=60) as response:
            return json.load(response)


def _orthanc_config(work_dir: Path, dicom_port: int, http_port: int) -> dict[str, Any]:
    """Orthanc 1.10's defaults except what a loopback benchmark needs (names as in its default config).

    The index stays the default SQLite and ``StorageAccessOnFind`` its
    default ``Always``, as in the Debian package FACTS.md measured.
    """
    return {
        "Name": "bench",
        "StorageDirectory": str(work_dir / "storage"),
        "IndexDirectory": str(work_dir / "index"),
        "Plugins": [],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": ORTHANC_AE_TITLE,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomModalities": {CALLING_AE_TITLE: [CALLING_AE_TITLE, HOST, 104]},
        # An association idle while the other server answers must survive.
        "DicomScpTimeout": 3600,
        "SaveJobs": False,
    }


def _wait_http(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"Orthanc exited with {process.returncode} at start:\n{_log_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    raise BenchError(f"Orthanc did not answer {url} within {_START_TIMEOUT:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not exit; safe to call twice."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def orthanc_server(work_dir: Path) -> Iterator[OrthancServer]:
    """Orthanc with its data in ``work_dir`` (removed afterwards), TCP_NODELAY=1 in its environment."""
    work_dir.mkdir(parents=True)
    server: OrthancServer | None = None
    try:
        server = OrthancServer(work_dir)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


# -- teleconsult -------------------------------------------------------------


def teleconsult_settings(data_dir: Path, database_url: str | None) -> Any:
    """Settings for the benchmark only: no .env, BENCH a known peer, the index given."""
    from teleconsult.config import Settings

    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data_dir,
        database_url=database_url,
        ae_title=TELECONSULT_AE_TITLE,
        dicom_host=HOST,
        dicom_port=0,
        dicom_peers=[
            {"ae_title": CALLING_AE_TITLE, "host": HOST, "port": 104, "organisation": PEER_ORGANISATION}
        ],
        log_level="WARNING",
        # The benchmark's association idles while Orthanc answers, findscu runs
        # and --try-sql builds indexes: keep it, as Orthanc's DicomScpTimeout does.
        dicom_network_timeout=3600,
    )


def _gateway_main(data_dir: str, database_url: str | None, conn: Connection) -> None:
    """Child process: open the store, start the gateway, report its port, serve until told to stop."""
    logging.basicConfig(level=logging.WARNING)
    from dicom_gateway.ae import start_gateway
    from teleconsult.storage.store import InstanceStore

    settings = teleconsult_settings(Path(data_dir), database_url)
    store = InstanceStore(settings)
    store.open()
    server = start_gateway(settings, store, host=HOST, port=0)
    try:
        conn.send(int(server.server_address[1]))
        conn.recv()  # anything, or EOF when the parent dies
    except EOFError:
        pass
    finally:
        server.shutdown()
        store.close()


@contextmanager
def teleconsult_gateway(data_dir: Path, database_url: str | None) -> Iterator[Endpoint]:
    """The gateway over an already loaded store, in a child process stopped on exit."""
    # fork: the child runs the code this process imported at start (see __main__._import_product)
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe()
    process = context.Process(
        target=_gateway_main, args=(str(data_dir), database_url, child), name="teleconsult-gateway"
    )
    process.start()
    child.close()
    try:
        if not parent.poll(_START_TIMEOUT):
            raise BenchError(f"the teleconsult gateway did not start within {_START_TIMEOUT:.0f} s")
        port = parent.recv()
        yield Endpoint("teleconsult", HOST, port, TELECONSULT_AE_TITLE, process.pid)
    except EOFError as exc:
        process.join(_STOP_TIMEOUT)
        raise BenchError(
            f"the teleconsult gateway exited at start with code {process.exitcode} (its traceback is above)"
        ) from exc
    finally:
        with suppress(BrokenPipeError, OSError):
            parent.send("stop")
        process.join(_STOP_TIMEOUT)
        if process.is_alive():
            process.terminate()
            process.join()
        parent.close()
