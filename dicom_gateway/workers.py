"""Several gateway processes on one DICOM port (``TELECONSULT_DICOM_WORKERS``).

One pynetdicom process runs every association's handlers under one GIL, so
it tops out near one core however many devices send at once. ``serve``
therefore runs its own gateway and, with ``dicom_workers`` = N > 1, N - 1
worker processes listening on the same port with SO_REUSEPORT: the kernel
hands each new association to one of them. Each worker opens the same store
(files and index) and answers every DICOM service; what they write reaches
the other processes through the index (the forwarder polls its queue there), and
their events reach the parent's bus through a relay (``relay``, a
``teleconsult.notifications.relay.RelayEndpoint``): the parent holds the
WebSockets that notify users of what a worker stored.

DICOM TLS works the same way: with ``TELECONSULT_DICOM_TLS_PORT`` set, every
worker also listens on the TLS port (SO_REUSEPORT), with its own SSL context
built from the same certificate files (an SSL context cannot be sent to a
spawned process; the settings can). Each process completes the handshakes of
the connections the kernel gives it.

Workers are started with the ``spawn`` method (the parent holds threads and
database connections that must not be forked), stopped with SIGTERM, and
restarted by the parent if one dies; a worker whose parent is gone stops.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from teleconsult.config import Settings

if TYPE_CHECKING:
    from teleconsult.notifications.relay import RelayEndpoint

__all__ = ["GatewayWorkers", "shared_port_supported"]

logger = logging.getLogger(__name__)

_RESTART_DELAY_SECONDS = 2.0


def shared_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def _worker_main(
    settings: Settings,
    host: str,
    port: int | None,
    parent_pid: int,
    relay: RelayEndpoint | None = None,
    tls_port: int | None = None,
) -> None:
    from dicom_gateway.ae import start_gateway, stop_gateway
    from teleconsult.heap import freeze_startup_heap
    from teleconsult.log import configure_logging
    from teleconsult.malloc_tuning import tune_malloc
    from teleconsult.storage.store import InstanceStore

    tune_malloc()
    configure_logging(settings)
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    store = InstanceStore(settings)
    store.open(joining=True)
    sender = relay.connect() if relay is not None else None
    if sender is not None:
        store.bus.subscribe(sender)
    servers = []
    try:
        if port is not None:
            servers.append(start_gateway(settings, store, host=host, port=port, share_port=True))
        if tls_port is not None:
            servers.append(
                start_gateway(settings, store, host=host, port=tls_port, share_port=True, tls=True)
            )
        ports = "+".join(str(server.server_address[1]) for server in servers)
        logger.info("gateway worker %d serving %s:%s", os.getpid(), host, ports)
        freeze_startup_heap()
        while not stop.wait(1.0):
            if os.getppid() != parent_pid:
                logger.warning("gateway worker %d: parent %d is gone, stopping", os.getpid(), parent_pid)
                break
    finally:
        for server in servers:
            stop_gateway(server)
        store.close()
        if sender is not None:
            sender.close()


class GatewayWorkers:
    """The extra gateway processes of one ``serve``."""

    def __init__(
        self,
        settings: Settings,
        *,
        host: str,
        port: int | None,
        count: int,
        relay: RelayEndpoint | None = None,
        tls_port: int | None = None,
    ) -> None:
        if count > 0 and not shared_port_supported():
            raise RuntimeError("TELECONSULT_DICOM_WORKERS > 1 needs SO_REUSEPORT (Linux, BSD)")
        self.settings = settings
        self.host = host
        self.port = port
        self.count = count
        self.relay = relay
        self.tls_port = tls_port
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[BaseProcess] = []
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None and p.is_alive()]

    def start(self) -> None:
        self._processes = [self._spawn() for _ in range(self.count)]
        self._monitor = threading.Thread(target=self._watch, name="gateway-workers", daemon=True)
        self._monitor.start()
        logger.info(
            "started %d gateway worker processes on port %s%s",
            self.count,
            self.port if self.port is not None else "-",
            f" and TLS port {self.tls_port}" if self.tls_port is not None else "",
        )

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join()
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                logger.warning("gateway worker %s did not stop in %.0f s: killed", process.pid, timeout)
                process.kill()
                process.join()

    def _spawn(self) -> BaseProcess:
        process = self._context.Process(
            target=_worker_main,
            args=(self.settings, self.host, self.port, os.getpid(), self.relay, self.tls_port),
            name="teleconsult-gateway-worker",
            daemon=True,
        )
        process.start()
        return process

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            for slot, process in enumerate(self._processes):
                if process.is_alive() or self._stopping.is_set():
                    continue
                logger.error(
                    "gateway worker %s exited with status %s: restarting it in %.0f s",
                    process.pid,
                    process.exitcode,
                    _RESTART_DELAY_SECONDS,
                )
                if self._stopping.wait(_RESTART_DELAY_SECONDS):
                    return
                self._processes[slot] = self._spawn()
