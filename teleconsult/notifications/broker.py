"""Events between replicas: every ``serve`` process publishes its bus to a broker and hears the others'.

With several replicas behind a load balancer, a study stored through
replica A's gateway must reach a specialist whose WebSocket is on
replica B. ``TELECONSULT_BROKER_URL=redis://host:6379/0`` makes each
``serve`` process:

- publish every event of its bus (its own, and those its gateway workers
  relay to it) to a Redis stream (``TELECONSULT_BROKER_CHANNEL``), from a
  sender thread, so a C-STORE never waits on the network: events queue in
  memory (bounded; beyond it they are dropped and logged, as notifications
  are when a WebSocket falls behind) and go out in pipelined batches;
- read the stream from a reader thread and hand the *other* processes'
  events to its ``remote_bus`` (``InstanceStore.remote_bus``), which only
  the notification hub and the ECG analyser listen to. Report outputs,
  forwarding and the rest act on their own replica's events only: acting
  on another's would do the work twice.

Redis Streams rather than pub/sub: a reader that loses its connection
resumes after the last entry it read, so a replica restarting its link to
Redis misses nothing published meanwhile (up to the stream's length,
``MAXLEN`` ~100,000 entries). Each entry carries its origin (a random id per
process) so a process skips its own.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import RedisError

from teleconsult.errors import TeleconsultError
from teleconsult.events import Event, EventBus
from teleconsult.notifications.relay import MAX_EVENT_BYTES, decode_event, encode_event

__all__ = ["BrokerUnavailableError", "RedisEventBroker"]

logger = logging.getLogger(__name__)

_BATCH = 256
_QUEUE_LIMIT = 10_000
_STREAM_LENGTH = 100_000
_RETRY_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)
_STOP = object()


class BrokerUnavailableError(TeleconsultError):
    """The broker cannot be reached when serve starts."""


class RedisEventBroker:
    """One process's link to the broker: ``attach(bus)`` publishes, ``start(remote_bus)`` hears."""

    def __init__(self, url: str, channel: str, *, origin: str | None = None) -> None:
        self.url = url
        self.channel = channel
        self.origin = origin or uuid.uuid4().hex
        self.published = 0
        self.received = 0
        self.dropped = 0
        self._outbox: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_LIMIT)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._client: redis.Redis | None = None

    def _connect(self) -> redis.Redis:
        # socket timeouts longer than the reader's BLOCK, so a quiet stream is not an error
        return redis.Redis.from_url(self.url, socket_timeout=10, socket_connect_timeout=5)

    def check(self) -> None:
        """Fail at start-up, with the reason, when the broker cannot be reached."""
        client = self._connect()
        try:
            client.ping()
        except RedisError as exc:
            raise BrokerUnavailableError(
                f"the broker {self.url} cannot be reached ({exc}); start it or unset TELECONSULT_BROKER_URL"
            ) from exc
        finally:
            client.close()

    # -- publishing ----------------------------------------------------------------

    def attach(self, bus: EventBus) -> None:
        """Publish every event of ``bus`` from now on (call once, before ``start``)."""
        self._unsubscribe = bus.subscribe(self._enqueue)

    def _enqueue(self, event: Event) -> None:
        try:
            self._outbox.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.error("broker unreachable or slow: %d events not sent to other replicas", self.dropped)

    def _send(self) -> None:
        client = self._connect()
        failures = 0
        while True:
            first = self._outbox.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < _BATCH:
                try:
                    item = self._outbox.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._outbox.put(_STOP)  # after this batch
                    break
                batch.append(item)
            fields = []
            for event in batch:
                payload = encode_event(event)
                if len(payload) > MAX_EVENT_BYTES:
                    logger.error(
                        "event %s %s is too large for the broker (%d bytes)",
                        event.type,
                        event.id,
                        len(payload),
                    )
                    continue
                fields.append({"origin": self.origin, "event": payload})
            while True:
                try:
                    pipe = client.pipeline(transaction=False)
                    for entry in fields:
                        pipe.xadd(self.channel, entry, maxlen=_STREAM_LENGTH, approximate=True)
                    pipe.execute()
                    self.published += len(fields)
                    failures = 0
                    break
                except RedisError as exc:
                    delay = _RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)]
                    failures += 1
                    if failures == 1:
                        logger.warning("broker %s: sending events failed (%s); retrying", self.channel, exc)
                    if self._stopping.wait(delay):
                        return

    # -- hearing -------------------------------------------------------------------

    def start(self, remote_bus: EventBus | None) -> None:
        """Start sending; and, with a ``remote_bus``, hearing the other replicas on it."""
        self._stopping.clear()
        sender = threading.Thread(target=self._send, name="broker-send", daemon=True)
        sender.start()
        self._threads.append(sender)
        if remote_bus is not None:
            reader = threading.Thread(
                target=self._read, args=(remote_bus, self._last_id()), name="broker-read", daemon=True
            )
            reader.start()
            self._threads.append(reader)
        logger.info("events shared with other replicas through %s (origin %s)", self.channel, self.origin)

    def _last_id(self) -> Any:
        """Where reading starts: after the stream's newest entry (earlier events are not ours to act on).

        An explicit id rather than ``$``: between two reads, ``$`` would skip
        whatever arrived in the gap.
        """
        client = self._connect()
        try:
            if not client.exists(self.channel):
                return "0-0"
            return client.xinfo_stream(self.channel)["last-generated-id"]
        finally:
            client.close()

    def _read(self, remote_bus: EventBus, last_id: Any) -> None:
        client = self._connect()
        failures = 0
        while not self._stopping.is_set():
            try:
                answer = client.xread({self.channel: last_id}, count=_BATCH, block=1000)
                failures = 0
            except RedisError as exc:
                delay = _RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)]
                failures += 1
                if failures == 1:
                    logger.warning("broker %s: reading events failed (%s); retrying", self.channel, exc)
                self._stopping.wait(delay)
                continue
            for _stream, entries in answer or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    if fields.get(b"origin", b"").decode() == self.origin:
                        continue
                    try:
                        event = decode_event(fields[b"event"])
                    except (KeyError, ValueError):
                        logger.warning("broker %s: entry %s is not an event", self.channel, entry_id)
                        continue
                    self.received += 1
                    try:
                        remote_bus.publish(event)
                    except Exception:  # one subscriber's failure must not stop the reading
                        logger.exception("handling remote event %s %s failed", event.type, event.id)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._outbox.put(_STOP)
        # let the sender flush what is queued, briefly, before stopping the retries
        for thread in self._threads:
            if thread.name == "broker-send":
                thread.join(timeout=2)
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
