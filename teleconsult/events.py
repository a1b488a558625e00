"""The in-process event bus every change goes through.

The gateway stores instances on pynetdicom's association threads, the API on
uvicorn's loop; both publish here, and subscribers (notifications,
forwarding, audit) run in the publisher's thread. An asyncio subscriber hands
the event to its loop with ``loop.call_soon_threadsafe`` so no thread ever
blocks on the loop. A subscriber that raises is logged and the others still
run: one broken consumer must not fail a C-STORE that is already durable.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = ["Event", "EventBus", "EventType", "Subscriber"]

logger = logging.getLogger(__name__)


class EventType(StrEnum):
    INSTANCE_STORED = "instance.stored"


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_json(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "time": self.time.isoformat(), "data": self.data}


Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[tuple[str | None, Subscriber]] = []

    def subscribe(self, subscriber: Subscriber, event_type: str | None = None) -> Callable[[], None]:
        """Call ``subscriber`` for every event (of ``event_type``); returns an unsubscribe."""
        entry = (event_type, subscriber)
        with self._lock:
            self._subscribers.append(entry)

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._subscribers:
                    self._subscribers.remove(entry)

        return unsubscribe

    def publish(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for event_type, subscriber in subscribers:
            if event_type is not None and event_type != event.type:
                continue
            try:
                subscriber(event)
            except Exception:
                logger.exception("event subscriber %r failed on %s %s", subscriber, event.type, event.id)
