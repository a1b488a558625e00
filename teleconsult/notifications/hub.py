"""The notification hub: internal events in, public events out to the sockets allowed to see them.

Three parties, three threads of control, none waiting on another:

- **publishers** (pynetdicom association threads, API routes, the overdue
  thread, the relay from gateway worker processes) call the bus; the hub's
  subscriber only puts the event on a bounded inbox and returns;
- **the dispatcher thread** turns internal events into public ones
  (``instance.stored`` → ``study.stored`` through ``StudyCoalescer``,
  ``consult.*``, ``report.*`` and ``alert.critical`` as they are), decides the
  audience (``Audience``; this may query the index, which must not happen on
  the event loop), re-reads stale accounts, encodes each event once and hands
  it to the loop with ``call_soon_threadsafe``;
- **the event loop** puts the text on each recipient's bounded queue, 64
  events per turn so that the pumps run between batches; each connection's
  pump sends it.

Accounts are re-read every ``recheck_seconds``, before an event is routed to
a connection whose check is older, and by a sweep for idle connections, so a
disabled account (or a changed organisation) stops receiving within that
time; the token's expiry closes the socket at the second it passes.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from teleconsult.domain.consults import ConsultViewer
from teleconsult.domain.identity import Principal
from teleconsult.events import Event, EventBus, EventType
from teleconsult.notifications.audience import Audience
from teleconsult.notifications.connection import Connection
from teleconsult.notifications.debounce import DEFAULT_WINDOW_SECONDS, StudyCoalescer
from teleconsult.notifications.protocol import Closing, PublicEventType, going_away, unauthenticated
from teleconsult.storage.identity import IdentityStore

__all__ = ["HubStats", "NotificationHub", "NotificationOptions"]

logger = logging.getLogger(__name__)

# Internal events that reach clients under the same name.
_PASSED_ON = frozenset(PublicEventType) - {PublicEventType.STUDY_STORED}
_STOP = object()
_BATCH = 64  # events handed to connections per turn of the event loop


@dataclass(frozen=True, slots=True)
class NotificationOptions:
    """Timing and sizes of ``/api/events`` (``app.state.notification_options`` overrides the defaults)."""

    auth_timeout: float = 5.0  # seconds for the first (auth) message
    queue_size: int = 256  # events waiting per connection before it is closed as too slow
    study_window: float = DEFAULT_WINDOW_SECONDS  # at most one study.stored per study per window
    recheck_seconds: float = 15.0  # how old an account check may be before events use it
    close_grace: float = 5.0  # how long a closing socket may take to accept its close
    grant_ttl: float = 10.0  # how long "a consult shares study S with user U" is cached
    inbox_size: int = 100_000  # internal events waiting for the dispatcher before new ones are dropped

    def __post_init__(self) -> None:
        for name in ("auth_timeout", "recheck_seconds", "close_grace"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.queue_size < 1 or self.inbox_size < 1:
            raise ValueError("queue_size and inbox_size must be at least 1")


@dataclass(slots=True)
class HubStats:
    """Counts since start, for logs and tests."""

    received: int = 0  # internal events taken from the bus
    dropped: int = 0  # internal events lost because the inbox was full
    published: int = 0  # public events routed
    offered: int = 0  # (event, connection) pairs handed to the loop
    closed: dict[str, int] = field(default_factory=dict)  # server-side closes by problem slug


class NotificationHub:
    def __init__(
        self,
        bus: EventBus,
        engine: Engine,
        identity: IdentityStore,
        *,
        loop: asyncio.AbstractEventLoop,
        options: NotificationOptions | None = None,
    ) -> None:
        self.bus = bus
        self.loop = loop
        self.options = options or NotificationOptions()
        self.audience = Audience(engine, identity, grant_ttl=self.options.grant_ttl)
        self.coalescer = StudyCoalescer(self.options.study_window)
        self.stats = HubStats()
        self._inbox: queue.Queue[Any] = queue.Queue(maxsize=self.options.inbox_size)
        self._lock = threading.Lock()
        self._members: dict[int, Connection] = {}
        self._outbox: collections.deque[tuple[str, list[Connection]]] = collections.deque()
        self._draining = False  # a _drain is scheduled on the loop
        self._expiry: dict[int, asyncio.TimerHandle] = {}
        self._unsubscribe: Any = None
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="notifications", daemon=True)
        self._thread.start()
        self._unsubscribe = self.bus.subscribe(self._on_bus_event)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking events and end the dispatcher (call from outside the loop)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._thread is not None:
            self._inbox.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def close_all(self, closing: Closing | None = None) -> None:
        """Close every connection (on the loop), e.g. at shutdown."""
        for connection in self.connections():
            connection.close(closing or going_away())

    # -- connections (the loop's side) ------------------------------------------------------

    def connections(self) -> list[Connection]:
        with self._lock:
            return list(self._members.values())

    def register(self, principal: Principal, viewer: ConsultViewer, *, expires_at: float) -> Connection:
        """A new subscriber; from this call on it is offered every event it may see."""
        connection = Connection(
            principal,
            viewer,
            expires_at=expires_at,
            queue_size=self.options.queue_size,
            close_grace=self.options.close_grace,
            loop=self.loop,
        )
        delay = max(0.0, expires_at - time.time())
        self._expiry[connection.id] = self.loop.call_later(delay, self._expire, connection)
        with self._lock:
            self._members[connection.id] = connection
        return connection

    def unregister(self, connection: Connection) -> None:
        with self._lock:
            self._members.pop(connection.id, None)
        timer = self._expiry.pop(connection.id, None)
        if timer is not None:
            timer.cancel()
        if connection.closing is not None:
            slug = connection.closing.slug
            self.stats.closed[slug] = self.stats.closed.get(slug, 0) + 1

    def _expire(self, connection: Connection) -> None:
        connection.close(unauthenticated("the access token expired; sign in again and reconnect"))

    def _drain(self) -> None:
        """Hand queued events to their connections, a batch per loop turn.

        Between batches the pumps run, so a burst handed over at once does
        not pile up in the queues of clients that read as fast as they can.
        """
        for _ in range(_BATCH):
            with self._lock:
                if not self._outbox:
                    self._draining = False
                    return
                text, recipients = self._outbox.popleft()
            for connection in recipients:
                connection.offer(text)
        self.loop.call_soon(self._drain)

    # -- publishers' side ----------------------------------------------------------------

    def hear(self, event: Event) -> None:
        """An event from elsewhere (another replica, through the broker): routed like this process's own."""
        self._on_bus_event(event)

    def _on_bus_event(self, event: Event) -> None:
        if event.type != EventType.INSTANCE_STORED and event.type not in _PASSED_ON:
            return
        try:
            self._inbox.put_nowait(event)
        except queue.Full:
            self.stats.dropped += 1
            logger.error("notification inbox full: %s %s not notified", event.type, event.id)

    # -- the dispatcher thread -------------------------------------------------------

    def _run(self) -> None:
        sweep_every = max(0.05, self.options.recheck_seconds / 2)
        next_sweep = time.monotonic() + sweep_every
        while True:
            now = time.monotonic()
            due = self.coalescer.next_due()
            wake = min(next_sweep, due) if due is not None else next_sweep
            try:
                item = self._inbox.get(timeout=max(0.0, wake - now))
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            try:
                if item is not None:
                    self.stats.received += 1
                    self._take(item)
                for event in self.coalescer.due(time.monotonic()):
                    self._publish(event)
                if time.monotonic() >= next_sweep:
                    self._current(self.connections())
                    next_sweep = time.monotonic() + sweep_every
            except Exception:
                logger.exception("notification dispatch failed on %r", item)

    def _take(self, event: Event) -> None:
        if event.type == EventType.INSTANCE_STORED:
            announced = self.coalescer.add(event, time.monotonic())
            if announced is not None:
                self._publish(announced)
            return
        data = {"study_instance_uid": None, **event.data}
        self._publish(Event(type=event.type, data=data, id=event.id, time=event.time))

    def _publish(self, event: Event) -> None:
        self.stats.published += 1
        now = time.time()
        members = [c for c in self._current(self.connections()) if c.expires_at > now]
        if not members:
            return
        try:
            recipients = self.audience.recipients(event, members)
        except Exception:
            # The index could not answer: only what is certain without it (organisation scope).
            logger.exception("audience of %s %s: falling back to organisation scope", event.type, event.id)
            recipients = self.audience.in_scope(event, members)
        if not recipients:
            return
        text = json.dumps(event.as_json(), ensure_ascii=False)
        self.stats.offered += len(recipients)
        with self._lock:
            self._outbox.append((text, recipients))
            if self._draining:
                return
            self._draining = True
        self.loop.call_soon_threadsafe(self._drain)

    def _current(self, connections: list[Connection]) -> list[Connection]:
        """The connections whose account is still valid, re-reading those checked too long ago.

        An account that cannot be read (index down) gets nothing this time
        and is tried again with the next event: never an event on a stale
        permission.
        """
        valid = []
        horizon = time.monotonic() - self.options.recheck_seconds
        for connection in connections:
            if connection.revoked or connection.closing is not None:
                continue
            if connection.checked_at > horizon:
                valid.append(connection)
                continue
            try:
                resolved = self.audience.resolve(connection.username)
            except Exception:
                logger.exception("events socket %d: could not re-read %s", connection.id, connection.username)
                continue
            if resolved is None:
                logger.info(
                    "events socket %d: account %s disabled or removed", connection.id, connection.username
                )
                connection.revoked = True
                closing = unauthenticated("the account was disabled or removed")
                self.loop.call_soon_threadsafe(connection.close, closing)
                continue
            connection.principal, connection.viewer = resolved
            connection.checked_at = time.monotonic()
            valid.append(connection)
        return valid
