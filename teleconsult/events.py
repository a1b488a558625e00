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
    # consults (teleconsult/consults/): each carries consult_id and study_instance_uid (None
    # for a consult on a patient whose study has not arrived)
    CONSULT_REQUESTED = "consult.requested"
    CONSULT_ACCEPTED = "consult.accepted"
    CONSULT_DECLINED = "consult.declined"
    CONSULT_CANCELLED = "consult.cancelled"
    CONSULT_REASSIGNED = "consult.reassigned"
    CONSULT_REPORTED = "consult.reported"
    CONSULT_DELIVERED = "consult.delivered"
    CONSULT_OVERDUE = "consult.overdue"  # data.recipients: who the escalation is addressed to
    # reports: REPORT_SIGNED when a report becomes final (reviewing signature) or gets a signed
    # addendum -- the hook that produces outputs (PDF, SR, FHIR); the performing (township)
    # signature of a version that is not final yet is REPORT_PERFORMING_SIGNED.
    REPORT_SIGNED = "report.signed"
    REPORT_PERFORMING_SIGNED = "report.performing_signed"
    # referrals (teleconsult/consults/referrals.py): each carries consult_id, referral_id,
    # study_instance_uid, target_organisation and green_channel
    REFERRAL_ISSUED = "referral.issued"
    REFERRAL_ACCEPTED = "referral.accepted"
    REFERRAL_DECLINED = "referral.declined"
    REFERRAL_CANCELLED = "referral.cancelled"
    REFERRAL_COMPLETED = "referral.completed"
    # a finding that cannot wait (device_adapters/ecg/triage: a positive ECG screen): carries
    # study_instance_uid, consult_id (None if none could be opened), reason and measurements
    ALERT_CRITICAL = "alert.critical"


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
