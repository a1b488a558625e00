"""A real ``teleconsult serve`` under test: started, SIGKILLed, restarted, measured through /proc.

Each start (an *incarnation*) writes its own log file, so what one process
said (its start-up sweep of temporary files, its workers) is never mixed with
the next. Ports are chosen once and kept across restarts, as a device keeps
its configured address. The server's ``TMPDIR`` is a directory of its own, so
whatever it leaves in the system temporary directory after a SIGKILL can be
counted (before ``close()``, which removes it). Everything started is stopped
by ``close()`` (or the context manager), descendants included.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = [
    "AE_TITLE",
    "CALLING_AE_TITLE",
    "HOST",
    "ORGANISATION",
    "KillReport",
    "ProcessStats",
    "Serve",
    "ServeError",
    "TreeStats",
    "descendants",
    "free_port",
    "postgres_schema",
    "process_stats",
]

HOST = "127.0.0.1"
AE_TITLE = "TELECONSULT"
CALLING_AE_TITLE = "TOWNUS"
ORGANISATION = "TOWN01"

_LISTENING = re.compile(r"DICOM gateway \S+ listening on")
_WORKER_SERVING = re.compile(r"gateway worker (\d+) serving")
_HTTP_STARTED = re.compile(r"Application startup complete")
_SWEPT = re.compile(r"removed (\d+) unfinished temporary files")
_START_TIMEOUT = 120.0
_STOP_TIMEOUT = 30.0


class ServeError(Exception):
    """The server did not start, or did not stop, as it should."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# -- /proc ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessStats:
    pid: int
    rss_kib: int
    threads: int
    fds: int


@dataclass(frozen=True, slots=True)
class TreeStats:
    """A process and its descendants, summed: what a leak check compares."""

    processes: tuple[ProcessStats, ...]

    @property
    def rss_mib(self) -> float:
        return sum(p.rss_kib for p in self.processes) / 1024

    @property
    def threads(self) -> int:
        return sum(p.threads for p in self.processes)

    @property
    def fds(self) -> int:
        return sum(p.fds for p in self.processes)

    def brief(self) -> str:
        return f"{self.rss_mib:.0f} MiB, {self.threads} threads, {self.fds} fds"


def process_stats(pid: int) -> ProcessStats | None:
    """RSS and threads from /proc/PID/status, open descriptors from /proc/PID/fd; None if gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("State", "").strip().startswith("Z"):
        return None
    rss = int(fields.get("VmRSS", "0 kB").split()[0])
    return ProcessStats(pid=pid, rss_kib=rss, threads=int(fields["Threads"]), fds=fds)


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name (field 2) is in parentheses and may hold spaces
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent_of(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    return process_stats(pid) is not None


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: with the pid, it names one process even if the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _kill_if_same(pid: int, start_time: int | None) -> bool:
    """SIGKILL ``pid`` only if it is still the process we saw (same start time)."""
    if start_time is None or _start_time(pid) != start_time or not _alive(pid):
        return False
    os.kill(pid, signal.SIGKILL)
    return True


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


# -- the server -----------------------------------------------------------------------------------


@dataclass
class KillReport:
    """One SIGKILL of ``serve``: what ran below it and how long it outlived the parent."""

    pid: int
    descendants: list[int]
    # seconds from the parent's death until every descendant was gone
    seconds_to_gone: float
    # descendants still alive after the grace period (then killed by us): a bug if not empty
    orphans: list[str] = field(default_factory=list)


class Serve:
    """``teleconsult serve`` in a subprocess, on loopback, restartable on the same data."""

    def __init__(
        self,
        run_dir: Path,
        *,
        database_url: str | None = None,
        workers: int = 1,
        max_associations: int = 32,
        http: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.data_dir = run_dir / "data"
        # Short, outside the run directory: an AF_UNIX socket path (the event relay's) has at most 107 bytes.
        self.system_tmp = Path(tempfile.mkdtemp(prefix="teleconsult-rel-"))
        self.database_url = database_url
        self.workers = workers
        self.max_associations = max_associations
        self.http = http
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.extra_env = dict(extra_env or {})
        self.logs: list[Path] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.kills: list[KillReport] = []
        self._log_file: IO[bytes] | None = None
        self._seen: dict[int, int | None] = {}  # pid -> start time
        run_dir.mkdir(parents=True, exist_ok=True)

    @property
    def processes(self) -> int:
        """Gateway processes ``serve`` runs: its own and ``processes - 1`` workers."""
        if self.workers:
            return self.workers
        return max(1, len(os.sched_getaffinity(0)))

    def env(self) -> dict[str, str]:
        """The server's whole configuration; the caller's TELECONSULT_* never leak in."""
        env = {name: value for name, value in os.environ.items() if not name.startswith("TELECONSULT_")}
        env.update(
            {
                "TMPDIR": str(self.system_tmp),
                # SIGABRT (see stop) then writes every thread's stack to the log
                "PYTHONFAULTHANDLER": "1",
                "TELECONSULT_DATA_DIR": str(self.data_dir),
                "TELECONSULT_HTTP_HOST": HOST,
                "TELECONSULT_HTTP_PORT": str(self.http_port),
                "TELECONSULT_DICOM_HOST": HOST,
                "TELECONSULT_DICOM_PORT": str(self.dicom_port),
                "TELECONSULT_DICOM_WORKERS": str(self.workers),
                "TELECONSULT_DICOM_MAX_ASSOCIATIONS": str(self.max_associations),
                "TELECONSULT_DICOM_PEERS": json.dumps(
                    [{"ae_title": CALLING_AE_TITLE, "host": HOST, "port": 104, "organisation": ORGANISATION}]
                ),
                **self.extra_env,
            }
        )
        if self.database_url:
            env["TELECONSULT_DATABASE_URL"] = self.database_url
        return env

    def command(self, *args: str) -> list[str]:
        script = Path(sys.executable).with_name("teleconsult")
        base = [str(script)] if script.is_file() else [sys.executable, "-m", "teleconsult"]
        return [*base, *args]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A ``teleconsult`` command on the same settings (data dir, database)."""
        return subprocess.run(
            self.command(*args),
            env=self.env(),
            cwd=self.run_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # -- life cycle

    def start(self) -> None:
        """Start an incarnation and wait until every gateway process (and HTTP) serves."""
        if self.process is not None and self.process.poll() is None:
            raise ServeError("serve is already running")
        log_path = self.run_dir / f"serve-{len(self.logs) + 1}.log"
        self.logs.append(log_path)
        self._log_file = open(log_path, "wb")  # noqa: SIM115 - closed when the process ends
        args = ["serve"] if self.http else ["serve", "--no-http"]
        self.process = subprocess.Popen(
            self.command(*args),
            env=self.env(),
            cwd=self.run_dir,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self._remember([self.process.pid])
        self._wait_ready(log_path, self.process)

    def _wait_ready(self, log_path: Path, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServeError(f"serve exited with {process.returncode} at start:\n{self.log_tail()}")
            text = log_path.read_text(errors="replace")
            workers = set(_WORKER_SERVING.findall(text))
            if (
                _LISTENING.search(text)
                and len(workers) >= self.processes - 1
                and (not self.http or _HTTP_STARTED.search(text))
            ):
                self._remember(int(pid) for pid in workers)
                return
            time.sleep(0.05)
        raise ServeError(f"serve did not become ready in {_START_TIMEOUT:.0f} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        if self.process is None or self.process.poll() is not None:
            raise ServeError("serve is not running")
        return self.process.pid

    def pids(self) -> list[int]:
        pid = self.pid
        return [pid, *descendants(pid)]

    def stats(self) -> TreeStats:
        found = (process_stats(pid) for pid in self.pids())
        return TreeStats(tuple(stats for stats in found if stats is not None))

    def kill(self, grace: float = 15.0) -> KillReport:
        """SIGKILL the parent only, as a crash would, and watch what was below it go away."""
        assert self.process is not None
        pid = self.process.pid
        below = descendants(pid)
        self._remember(below)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._close_log()
        died = time.monotonic()
        while any(_alive(child) for child in below) and time.monotonic() - died < grace:
            time.sleep(0.02)
        report = KillReport(pid=pid, descendants=below, seconds_to_gone=time.monotonic() - died)
        for child in below:
            if _alive(child):
                report.orphans.append(f"{child}: {_command_line(child)}")
                _kill_if_same(child, self._seen.get(child))
        self.kills.append(report)
        return report

    def stop(self) -> int:
        """SIGTERM; the exit status.

        A server still running 30 s later gets SIGABRT, so that Python's
        fault handler writes every thread's stack to its log (negative
        status -6), then SIGKILL.
        """
        if self.process is None:
            return 0
        below = descendants(self.process.pid) if self.process.poll() is None else []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGABRT)
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        self._close_log()
        deadline = time.monotonic() + _STOP_TIMEOUT
        while any(_alive(child) for child in below) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.process.returncode

    def close(self) -> None:
        """Stop the server and anything it started that is still alive."""
        self.stop()
        for pid, start_time in self._seen.items():
            _kill_if_same(pid, start_time)
        shutil.rmtree(self.system_tmp, ignore_errors=True)

    def _remember(self, pids: Iterable[int]) -> None:
        for pid in pids:
            self._seen.setdefault(pid, _start_time(pid))

    def __enter__(self) -> Serve:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- what the logs say

    def swept(self) -> list[int]:
        """Per incarnation: the temporary files its start-up sweep removed."""
        counts = []
        for path in self.logs:
            found = _SWEPT.findall(path.read_text(errors="replace"))
            counts.append(sum(int(n) for n in found))
        return counts

    def log_tail(self, lines: int = 40) -> str:
        if not self.logs:
            return ""
        return "\n".join(self.logs[-1].read_text(errors="replace").splitlines()[-lines:])

    def grep_logs(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        return [
            line
            for path in self.logs
            for line in path.read_text(errors="replace").splitlines()
            if regex.search(line)
        ]

    def system_tmp_leftovers(self) -> dict[str, int]:
        """What the server left in its TMPDIR, counted by name prefix (``teleconsult-metrics`` ...)."""
        counts: dict[str, int] = {}
        for entry in self.system_tmp.iterdir():
            prefix = entry.name.rsplit("-", 1)[0] if "-" in entry.name else entry.name
            counts[prefix] = counts.get(prefix, 0) + 1
        return counts


@contextmanager
def postgres_schema(database_url: str) -> Iterator[str]:
    """A fresh schema on ``database_url``, dropped afterwards; yields the URL that selects it."""
    import uuid
    from urllib.parse import quote

    from sqlalchemy import create_engine, text

    from teleconsult.storage.index import normalise_database_url

    schema = f"rel_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_database_url(database_url))
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        separator = "&" if "?" in database_url else "?"
        try:
            yield f"{database_url}{separator}options={quote(f'-csearch_path={schema}')}"
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()
