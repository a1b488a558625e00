"""Events from gateway worker processes to the process that holds the WebSockets.

``serve`` runs extra gateway processes (``TELECONSULT_DICOM_WORKERS``); an
instance one of them stores is published on *its* bus, which no socket
hears. The parent therefore opens a receiver, hands its (picklable)
endpoint to each worker it spawns, and each worker subscribes a sender to
its bus; the receiver's thread republishes every event on the parent's bus,
with its id and time, where notifications (and any other subscriber) see it
as if it had happened there.

The seam is three small protocols: ``RelayEndpoint`` (what a worker is
given), ``RelaySender`` (a bus subscriber in the worker) and
``RelayReceiver`` (the parent's end). The one implementation here is a Unix
datagram socket in a private directory: one datagram per event, so a worker
killed mid-send cannot corrupt a stream others share (as it can a
``multiprocessing.Queue``'s pipe), a restarted worker simply sends to the
same path, and a worker whose parent is gone gets an error at once instead
of blocking. A broker (Redis, NATS) for replicas on several machines is
another implementation of the same three protocols.

A sender waits at most ``timeout`` seconds when the parent falls behind
(the socket's queue is full), then drops the event and counts it: a
C-STORE must not wait on notifications.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from teleconsult import runtime_dirs
from teleconsult.events import Event, EventBus

__all__ = [
    "RelayEndpoint",
    "RelayReceiver",
    "RelaySender",
    "UnixDatagramEndpoint",
    "UnixDatagramReceiver",
    "UnixDatagramSender",
]

logger = logging.getLogger(__name__)

# Events are a few hundred bytes; a datagram larger than this is not one of ours.
MAX_EVENT_BYTES = 64 * 1024
_SOCKET_NAME = "events.sock"


class RelaySender(Protocol):
    """The worker's end: subscribed to the worker's bus, sends every event to the parent."""

    def __call__(self, event: Event) -> None: ...

    def close(self) -> None: ...


class RelayEndpoint(Protocol):
    """Where a worker sends; passed to spawned processes, so it must pickle."""

    def connect(self) -> RelaySender: ...


class RelayReceiver(Protocol):
    """The parent's end: republishes what workers send on the parent's bus."""

    @property
    def endpoint(self) -> RelayEndpoint: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


def encode_event(event: Event) -> bytes:
    return json.dumps(
        {"type": event.type, "id": event.id, "time": event.time.isoformat(), "data": event.data},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")


def decode_event(payload: bytes) -> Event:
    """The event a datagram carries; ``ValueError`` if it is not one."""
    value = json.loads(payload)
    if not isinstance(value, dict) or not isinstance(value.get("data"), dict):
        raise ValueError("not an event object")
    return Event(
        type=str(value["type"]),
        data=value["data"],
        id=str(value["id"]),
        time=datetime.fromisoformat(str(value["time"])),
    )


@dataclass(frozen=True, slots=True)
class UnixDatagramEndpoint:
    path: str
    timeout: float = 0.1

    def connect(self) -> UnixDatagramSender:
        return UnixDatagramSender(self.path, timeout=self.timeout)


class UnixDatagramSender:
    def __init__(self, path: str, *, timeout: float = 0.1) -> None:
        self.path = path
        self.sent = 0
        self.failed = 0
        self._lock = threading.Lock()  # association threads publish concurrently
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.settimeout(timeout)

    def __call__(self, event: Event) -> None:
        payload = encode_event(event)
        if len(payload) > MAX_EVENT_BYTES:
            logger.error("event %s %s is %d bytes: too large to relay", event.type, event.id, len(payload))
            return
        try:
            with self._lock:
                self._sock.sendto(payload, self.path)
            self.sent += 1
        except OSError as exc:  # parent gone (ENOENT, ECONNREFUSED) or behind (timeout)
            self.failed += 1
            if self.failed == 1 or self.failed % 100 == 0:
                logger.warning(
                    "could not relay %s %s to the main process (%d not relayed so far): %s",
                    event.type,
                    event.id,
                    self.failed,
                    exc,
                )

    def close(self) -> None:
        self._sock.close()


class UnixDatagramReceiver:
    """A datagram socket in a new private directory, read by one thread."""

    def __init__(self, bus: EventBus, *, timeout: float = 0.1) -> None:
        self.bus = bus
        self.received = 0
        self._directory = runtime_dirs.private_dir("events")  # mode 0700
        self._path = str(self._directory / _SOCKET_NAME)
        self._timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self._path)
        os.chmod(self._path, 0o600)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def endpoint(self) -> UnixDatagramEndpoint:
        return UnixDatagramEndpoint(self._path, self._timeout)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="event-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            # An empty datagram wakes the blocked recv.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as waker:
                try:
                    waker.sendto(b"", self._path)
                except OSError:
                    logger.debug("could not wake the event relay thread", exc_info=True)
            self._thread.join(timeout=5)
            self._thread = None
        self._sock.close()
        shutil.rmtree(self._directory, ignore_errors=True)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                payload = self._sock.recv(MAX_EVENT_BYTES + 1)
            except OSError:
                if self._stopping.is_set():
                    return
                logger.exception("event relay: receiving failed")
                continue
            if not payload:
                continue
            try:
                event = decode_event(payload)
            except (ValueError, KeyError):
                logger.warning(
                    "event relay: dropped a datagram that is not an event (%d bytes)", len(payload)
                )
                continue
            self.received += 1
            self.bus.publish(event)
