"""Real-time notifications: internal bus events to the WebSockets of ``/api/events``.

``NotificationHub`` (subscribes to the bus, coalesces ``instance.stored``
into ``study.stored``, routes each event to the users allowed to see it,
fans out without blocking the publisher), ``Connection`` (one socket's
bounded queue), ``Audience`` (who may receive what), ``StudyCoalescer``
(the debounce rule), the wire protocol (``protocol``) and the relay that
brings gateway worker processes' events to the process holding the sockets
(``relay``). The WebSocket route is ``teleconsult/api/routes/events.py``;
the protocol is described in ``docs/notifications.md``.
"""

from teleconsult.notifications.audience import Audience
from teleconsult.notifications.connection import Connection
from teleconsult.notifications.debounce import StudyCoalescer
from teleconsult.notifications.hub import HubStats, NotificationHub, NotificationOptions
from teleconsult.notifications.protocol import CloseCode, PublicEventType
from teleconsult.notifications.relay import (
    RelayEndpoint,
    RelayReceiver,
    RelaySender,
    UnixDatagramEndpoint,
    UnixDatagramReceiver,
)

__all__ = [
    "Audience",
    "CloseCode",
    "Connection",
    "HubStats",
    "NotificationHub",
    "NotificationOptions",
    "PublicEventType",
    "RelayEndpoint",
    "RelayReceiver",
    "RelaySender",
    "StudyCoalescer",
    "UnixDatagramEndpoint",
    "UnixDatagramReceiver",
]
