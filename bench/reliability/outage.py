"""The index (PostgreSQL) unreachable for a while under load, then back: refused cleanly, no restart.

``serve`` reaches PostgreSQL through a loopback proxy (``tcp_proxy.py``)
that, while "down", resets every connection it carries and refuses new ones,
as a database server that stopped does. C-STORE and STOW-RS senders stream
the whole time and send again whatever was not acknowledged, as devices do.
While the index is away nothing may be acknowledged (an instance answered
0x0000 or listed as stored must have been committed); afterwards the same
``serve`` (no restart) must store again, and every acknowledged instance
must be in the store, byte-identical. ``/readyz`` is asked every half second
throughout: a load balancer takes a replica out of rotation on its answer.

What it does not show: a database host that drops packets instead of
refusing (only timeouts end those waits), and an outage of a database that
SQLite is (no server to lose).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from bench.reliability.scenarios import add_stow_user, streaming_senders
from bench.reliability.senders import Ack, StowSender, StreamSender, join_all, quiet_pynetdicom, run_threads
from bench.reliability.server import HOST, Serve
from bench.reliability.tcp_proxy import TcpProxy
from bench.reliability.verify import Verification, verify

__all__ = ["OutageResult", "run_outage"]

# In-flight work may still complete in the first moments of an outage (its commit was in before
# the proxy cut the connection); after this long, any acknowledgement would be one without a commit.
_IN_FLIGHT_GRACE = 1.0


@dataclass
class OutageResult:
    outage_seconds: float
    senders: int
    stow_senders: int
    processes: int
    acks: list[Ack] = field(default_factory=list)
    acked_before: int = 0
    # acknowledged between the start of the outage (+ grace) and its end: must be 0
    acked_during: int = 0
    refusals: Counter[int] = field(default_factory=Counter)
    stow_failures: Counter[str] = field(default_factory=Counter)
    # /readyz answers before, during and after the outage
    readiness: dict[str, Counter[str]] = field(default_factory=dict)
    # seconds from the end of the outage to the first acknowledgement over each route
    recovery_seconds: dict[str, float | None] = field(default_factory=dict)
    same_process: bool = True
    stuck_senders: list[str] = field(default_factory=list)
    exit_status: int | None = None
    stop_log: str = ""
    seconds: float = 0.0
    verification: Verification | None = None


def _proxied(database_url: str, proxy: TcpProxy) -> str:
    return make_url(database_url).set(host=HOST, port=proxy.port).render_as_string(hide_password=False)


class _ReadinessProbe:
    """``/readyz`` every half second, its answers counted under the phase they fell in."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.phase = "before"
        self.answers: dict[str, Counter[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readyz-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            while not self._stop.wait(0.5):
                phase = self.phase
                try:
                    answer = str(client.get("/readyz").status_code)
                except httpx.HTTPError as exc:
                    answer = type(exc).__name__
                self.answers.setdefault(phase, Counter())[answer] += 1


def _recovery(
    routes: dict[str, list[StreamSender] | list[StowSender]], counts: dict[str, int], timeout: float
) -> dict[str, float | None]:
    """Seconds until each route's first acknowledgement beyond ``counts`` (None: none within ``timeout``)."""
    back = time.perf_counter()
    found: dict[str, float | None] = {}
    waiting = {route: group for route, group in routes.items() if group}
    while waiting and time.perf_counter() - back < timeout:
        for route, group in list(waiting.items()):
            if sum(len(sender.acks) for sender in group) > counts[route]:
                found[route] = time.perf_counter() - back
                del waiting[route]
        time.sleep(0.05)
    return {**found, **dict.fromkeys(waiting)}


def run_outage(
    run_dir: Path,
    *,
    database_url: str,
    workers: int = 1,
    outage_seconds: float = 60.0,
    senders: int = 4,
    stow_senders: int = 1,
    large_senders: int = 1,
    before_seconds: float = 5.0,
    after_seconds: float = 10.0,
) -> OutageResult:
    """Senders stream; after ``before_seconds`` the index is away for ``outage_seconds``, then back."""
    url = make_url(database_url)
    with (
        TcpProxy(url.host or HOST, url.port or 5432) as proxy,
        Serve(run_dir, database_url=_proxied(database_url, proxy), workers=workers) as serve,
    ):
        result = OutageResult(outage_seconds, senders, stow_senders, serve.processes)
        if stow_senders:
            add_stow_user(serve)
        stop = threading.Event()
        dicom, http = streaming_senders(serve, "outage", stop, senders, large_senders, stow_senders)
        routes: dict[str, list[StreamSender] | list[StowSender]] = {"c-store": dicom, "stow-rs": http}

        def acknowledged(route: str | None = None) -> int:
            groups = [routes[route]] if route else list(routes.values())
            return sum(len(sender.acks) for group in groups for sender in group)

        started = time.perf_counter()
        with quiet_pynetdicom():
            serve.start()
            pid = serve.pid
            probe = _ReadinessProbe(f"http://{HOST}:{serve.http_port}")
            probe.start()
            threads = run_threads([*dicom, *http], "outage")
            try:
                time.sleep(before_seconds)
                result.acked_before = acknowledged()
                proxy.down()
                probe.phase = "during"
                time.sleep(min(_IN_FLIGHT_GRACE, outage_seconds))
                after_grace = acknowledged()
                time.sleep(max(0.0, outage_seconds - _IN_FLIGHT_GRACE))
                result.acked_during = acknowledged() - after_grace
                counts = {route: acknowledged(route) for route in routes}
                proxy.up()
                probe.phase = "after"
                back = time.perf_counter()
                result.recovery_seconds = _recovery(routes, counts, max(after_seconds, 60.0))
                time.sleep(max(0.0, after_seconds - (time.perf_counter() - back)))
            finally:
                stop.set()
                result.stuck_senders = join_all(threads, 60)
                probe.stop()
        result.seconds = time.perf_counter() - started
        alive = serve.process is not None and serve.process.poll() is None
        result.same_process = alive and serve.pid == pid
        result.readiness = probe.answers
        result.exit_status = serve.stop()
        if result.exit_status != 0:
            result.stop_log = serve.log_tail(150)
        for sender in dicom:
            result.acks.extend(sender.acks)
            result.refusals.update(sender.refusals)
        for stow in http:
            result.acks.extend(stow.acks)
            result.stow_failures.update(stow.failures)
        result.verification = verify(serve, result.acks)
    return result
