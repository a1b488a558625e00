"""teleconsult's HTTP API in a child process (uvicorn on 127.0.0.1, port 0), over an already loaded store.

The measuring client runs in the parent: sharing one interpreter (and its
GIL) with the server would bill teleconsult for the client's work, as
``bench/query/servers.py`` explains for the gateway.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection
from pathlib import Path

from bench.query.servers import HOST, BenchError, teleconsult_settings

__all__ = ["BENCH_PASSWORD", "BENCH_USER", "add_bench_user", "analyze", "teleconsult_http"]

BENCH_USER = "bench"
BENCH_PASSWORD = "bench-password-not-secret"
_START_TIMEOUT = 120.0
# After start-up the server's background work (the ECG analyser imports and
# warms neurokit2, about 2 s of CPU) must be over before anything is timed:
# the benchmark measures the steady state, as a server that has been running.
_SETTLED_CPU_SHARE = 0.05
_SETTLE_TIMEOUT = 60.0


def add_bench_user(data_dir: Path, database_url: str | None) -> None:
    """A county specialist who sees TOWN01, where ``bench.query.load`` files every study."""
    from teleconsult.errors import ConflictError
    from teleconsult.storage.identity import IdentityStore
    from teleconsult.storage.store import InstanceStore

    store = InstanceStore(teleconsult_settings(data_dir, database_url))
    store.open()
    try:
        identity = IdentityStore(store.index.engine)
        for code, name, parent in (("COUNTY", "County Hospital", None), ("TOWN01", "Township 1", "COUNTY")):
            with suppress(ConflictError):  # loading may have created them already
                identity.add_organisation(code, name, parent)
        identity.add_user(BENCH_USER, BENCH_PASSWORD, "specialist", "COUNTY")
    finally:
        store.close()


def analyze(data_dir: Path, database_url: str | None) -> None:
    """Planner statistics and visibility after the bulk load, as after any restore (``vacuumdb --analyze``).

    Without statistics PostgreSQL plans the per-study subqueries of a
    freshly loaded schema as if the tables were empty (30 s for one year),
    until autovacuum happens to analyse the tables; and without a vacuum,
    autovacuum's own pass over 100,000 new rows runs beside the measurements.
    Then the load's writes are flushed (a checkpoint, then ``sync``): left
    to the checkpointer's and the kernel's own pace they went on for minutes,
    writing beside the measurements.
    """
    from sqlalchemy import text

    from teleconsult.storage.store import InstanceStore

    store = InstanceStore(teleconsult_settings(data_dir, database_url))
    try:
        engine = store.index.engine
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))
                conn.execute(text("CHECKPOINT"))
        else:
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    os.sync()


def _server_main(data_dir: str, database_url: str | None, conn: Connection) -> None:
    logging.basicConfig(level=logging.WARNING)
    import uvicorn

    from teleconsult.api.app import create_app
    from teleconsult.heap import freeze_startup_heap
    from teleconsult.malloc_tuning import tune_malloc
    from teleconsult.storage.store import InstanceStore

    tune_malloc()  # as teleconsult serve does
    # The corpus's 11,000 ECGs (16-sample stubs, stored just before) would all be new to the ECG
    # analyser, whose catch-up would then run beside the measurements: not what is measured here.
    settings = teleconsult_settings(Path(data_dir), database_url).model_copy(
        update={"ecg_triage_enabled": False}
    )
    store = InstanceStore(settings)
    store.open()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, store), host=HOST, port=0, log_level="warning", access_log=False)
    )
    freeze_startup_heap()  # as serve does
    thread = threading.Thread(target=server.run, name="uvicorn")
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    try:
        conn.send(int(server.servers[0].sockets[0].getsockname()[1]))
        conn.recv()
    except EOFError:
        pass
    finally:
        server.should_exit = True
        thread.join()
        store.close()


def _cpu_seconds(pid: int | None) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_until_settled(pid: int | None) -> None:
    """Wait until the server uses under ``_SETTLED_CPU_SHARE`` of a core over half a second."""
    deadline = time.monotonic() + _SETTLE_TIMEOUT
    used = _cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _cpu_seconds(pid)
        if now - used < _SETTLED_CPU_SHARE * 0.5:
            return
        used = now
    raise BenchError(f"the teleconsult HTTP server was still busy {_SETTLE_TIMEOUT:.0f} s after starting")


@contextmanager
def teleconsult_http(data_dir: Path, database_url: str | None) -> Iterator[str]:
    """The base URL of ``create_app`` served by uvicorn in a child process, stopped on exit."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=_server_main, args=(str(data_dir), database_url, child), name="teleconsult-http"
    )
    process.start()
    child.close()
    try:
        if not parent.poll(_START_TIMEOUT):
            raise BenchError(f"the teleconsult HTTP server did not start within {_START_TIMEOUT:.0f} s")
        port = parent.recv()
        _wait_until_settled(process.pid)
        yield f"http://{HOST}:{port}"
    except EOFError as exc:
        raise BenchError(f"the teleconsult HTTP server exited at start (code {process.exitcode})") from exc
    finally:
        with suppress(BrokenPipeError, OSError):
            parent.send("stop")
        process.join(60)
        if process.is_alive():
            process.terminate()
            process.join()
        parent.close()
