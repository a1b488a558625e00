"""Two ``teleconsult serve`` replicas sharing one PostgreSQL schema and one broker.

This is the scaled-out deployment: replicas behind a load balancer, each
with its own data directory (one ``serve`` per directory) and the same
secret key, so a token issued by one is honoured by the other. Both run the
full ``serve`` (HTTP and DICOM); the benchmark stores through replica A and
listens on replica B, so every event it hears crossed the broker.

The schema is fresh and dropped afterwards, the broker stream is the run's
own and deleted afterwards, and both replicas are always stopped.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.ingest.receivers import BenchError, free_port, log_tail
from bench.notify.serve import CALLING_AE_TITLE, PASSWORD, SPECIALIST
from bench.query.servers import postgres_schema

__all__ = ["DEFAULT_BROKER_URL", "DEFAULT_DATABASE_URL", "Replica", "ReplicaPair", "replica_pair"]

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
_HOST = "127.0.0.1"
_START_TIMEOUT = 90.0
_STOP_TIMEOUT = 60.0
_WORKER_SERVING = re.compile(r"gateway worker \d+ serving")
_BROKER_ON = "events shared with other replicas"


@dataclass
class Replica:
    """One running ``teleconsult serve``."""

    name: str
    process: subprocess.Popen[bytes]
    http_port: int
    dicom_port: int
    log_path: Path
    workers: int
    returncode: int | None = None  # after it was stopped

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def token(self, username: str, password: str) -> str:
        response = httpx.post(
            f"http://{_HOST}:{self.http_port}/api/auth/token",
            data={"username": username, "password": password},
            timeout=30,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])


@dataclass(frozen=True, slots=True)
class ReplicaPair:
    """Replica A takes the studies, replica B holds the specialist's socket."""

    a: Replica
    b: Replica
    broker_url: str
    channel: str

    def specialist_token(self) -> str:
        """Signed in on B: it must honour its own tokens, and A's, with the shared key."""
        return self.b.token(SPECIALIST, PASSWORD)


def _environment(
    data_dir: Path, database_url: str, broker_url: str, channel: str, secret_key: str, workers: int
) -> dict[str, str]:
    """Only the benchmark's TELECONSULT_* settings; ports are added per replica."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TELECONSULT_")}
    env.update(
        TELECONSULT_DATA_DIR=str(data_dir),
        TELECONSULT_DATABASE_URL=database_url,
        TELECONSULT_BROKER_URL=broker_url,
        TELECONSULT_BROKER_CHANNEL=channel,
        TELECONSULT_SECRET_KEY=secret_key,
        TELECONSULT_HTTP_HOST=_HOST,
        TELECONSULT_DICOM_HOST=_HOST,
        TELECONSULT_DICOM_WORKERS=str(workers),
        TELECONSULT_DICOM_PEERS=json.dumps(
            [{"ae_title": CALLING_AE_TITLE, "host": _HOST, "port": 104, "organisation": "TOWN01"}]
        ),
    )
    return env


def _cli(env: dict[str, str], *args: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "teleconsult", *args], env=env, capture_output=True, timeout=120, check=False
    )
    if completed.returncode != 0:
        output = completed.stderr.decode(errors="replace")[-2000:]
        raise BenchError(f"teleconsult {' '.join(args[:2])} failed ({completed.returncode}):\n{output}")


def _community(env: dict[str, str]) -> None:
    """TOWN01 under COUNTY and a county specialist, once, in the shared index (as bench.notify)."""
    _cli(env, "org", "add", "COUNTY", "--name", "County Hospital")
    _cli(env, "org", "add", "TOWN01", "--name", "Township Health Centre 1", "--parent", "COUNTY")
    _cli(env, "user", "add", SPECIALIST, "--password", PASSWORD, "--role", "specialist", "--org", "COUNTY")


@contextmanager
def _broker_channel(broker_url: str) -> Iterator[str]:
    """A stream name of this run's own, deleted afterwards so the broker keeps nothing of it."""
    import redis

    client = redis.Redis.from_url(broker_url, socket_connect_timeout=5, socket_timeout=30)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        client.close()
        raise BenchError(f"the broker {broker_url} cannot be reached: {exc}") from exc
    channel = f"teleconsult.bench.scale.{secrets.token_hex(6)}"
    try:
        yield channel
    finally:
        try:
            client.delete(channel)
        finally:
            client.close()


@contextmanager
def _shared_schema(database_url: str) -> Iterator[str]:
    import psycopg

    try:
        with postgres_schema(database_url) as (_schema, url):
            yield url
    except psycopg.OperationalError as exc:
        raise BenchError(f"cannot use the database {database_url.split('@')[-1]}: {exc}") from exc


def _stop(replica: Replica) -> None:
    process = replica.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    replica.returncode = process.returncode


@contextmanager
def _serving(name: str, env: dict[str, str], run_dir: Path, workers: int) -> Iterator[Replica]:
    http_port, dicom_port = free_port(), free_port()
    env = {**env, "TELECONSULT_HTTP_PORT": str(http_port), "TELECONSULT_DICOM_PORT": str(dicom_port)}
    log_path = run_dir / f"replica-{name.lower()}.log"
    with open(log_path, "wb") as log:
        # cwd: no .env file where the benchmark was started can change the replica's settings.
        process = subprocess.Popen(
            [sys.executable, "-m", "teleconsult", "serve"],
            env=env,
            cwd=run_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    replica = Replica(name, process, http_port, dicom_port, log_path, workers)
    try:
        yield replica
    finally:
        _stop(replica)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _ready(replica: Replica) -> bool:
    if replica.process.poll() is not None:
        raise BenchError(
            f"replica {replica.name} exited with {replica.process.returncode} at start:\n"
            f"{log_tail(replica.log_path)}"
        )
    log = replica.log()
    if len(_WORKER_SERVING.findall(log)) < replica.workers - 1 or _BROKER_ON not in log:
        return False
    if not _accepts(replica.dicom_port):
        return False
    try:
        return httpx.get(f"http://{_HOST}:{replica.http_port}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _wait_ready(replicas: list[Replica]) -> None:
    """Until both answer HTTP, accept DICOM, run every gateway worker and use the broker."""
    deadline = time.monotonic() + _START_TIMEOUT
    waiting = list(replicas)
    while waiting and time.monotonic() < deadline:
        waiting = [replica for replica in waiting if not _ready(replica)]
        if waiting:
            time.sleep(0.1)
    if waiting:
        names = ", ".join(replica.name for replica in waiting)
        tails = "\n".join(f"-- replica {r.name}:\n{log_tail(r.log_path)}" for r in waiting)
        raise BenchError(f"replica {names} not ready in {_START_TIMEOUT:.0f} s:\n{tails}")


@contextmanager
def replica_pair(work_dir: Path, database_url: str, broker_url: str, workers: int) -> Iterator[ReplicaPair]:
    """Replicas A and B on a fresh schema of ``database_url`` and a fresh stream of ``broker_url``."""
    secret_key = secrets.token_urlsafe(48)
    with ExitStack() as stack:
        url = stack.enter_context(_shared_schema(database_url))
        channel = stack.enter_context(_broker_channel(broker_url))
        envs = {}
        for name in ("A", "B"):
            run_dir = work_dir / f"replica-{name.lower()}"
            run_dir.mkdir(parents=True)
            envs[name] = _environment(run_dir / "data", url, broker_url, channel, secret_key, workers)
        _community(envs["A"])  # migrates the shared schema before either replica starts
        a = stack.enter_context(_serving("A", envs["A"], work_dir / "replica-a", workers))
        b = stack.enter_context(_serving("B", envs["B"], work_dir / "replica-b", workers))
        _wait_ready([a, b])
        yield ReplicaPair(a, b, broker_url, channel)
