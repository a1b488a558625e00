"""What travels on ``/api/events``: public event types, control messages and close codes.

Kept apart from the hub so that the route, the tests and the docs name the
same codes. A close always follows a final ``error`` message carrying the
problem fields of RFC 9457 (as HTTP errors do), when the client can still
receive it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

__all__ = [
    "EVENTS_PATH",
    "GOING_AWAY",
    "INTERNAL_ERROR",
    "ClientMessage",
    "CloseCode",
    "Closing",
    "ProtocolError",
    "PublicEventType",
    "error_message",
    "going_away",
    "parse_client_message",
    "slow_consumer",
    "unauthenticated",
]

EVENTS_PATH = "/api/events"
# A client message is a small JSON object; anything larger is not one of ours.
MAX_CLIENT_MESSAGE = 16 * 1024


class PublicEventType(StrEnum):
    """Event types a client can receive; ``data`` always has ``study_instance_uid`` (None if unknown)."""

    STUDY_STORED = "study.stored"
    CONSULT_REQUESTED = "consult.requested"
    CONSULT_ACCEPTED = "consult.accepted"
    CONSULT_DECLINED = "consult.declined"
    CONSULT_CANCELLED = "consult.cancelled"
    CONSULT_REASSIGNED = "consult.reassigned"
    CONSULT_REPORTED = "consult.reported"
    CONSULT_DELIVERED = "consult.delivered"
    CONSULT_OVERDUE = "consult.overdue"
    REPORT_PERFORMING_SIGNED = "report.performing_signed"
    REPORT_SIGNED = "report.signed"
    REFERRAL_ISSUED = "referral.issued"
    REFERRAL_ACCEPTED = "referral.accepted"
    REFERRAL_DECLINED = "referral.declined"
    REFERRAL_CANCELLED = "referral.cancelled"
    REFERRAL_COMPLETED = "referral.completed"
    ALERT_CRITICAL = "alert.critical"


class CloseCode(IntEnum):
    """WebSocket close codes of ``/api/events`` (4000-4999 are the application's)."""

    INVALID_MESSAGE = 4000  # not JSON, not an object, or a type the server does not know
    UNAUTHENTICATED = 4001  # no/late/bad auth message, bad or expired token, account disabled
    SLOW_CONSUMER = 4013  # the client did not read fast enough: its queue overflowed (cf. 1013)


GOING_AWAY = 1001  # RFC 6455: the server is shutting down
INTERNAL_ERROR = 1011  # RFC 6455: the server could not serve the request (the index is down)


@dataclass(frozen=True, slots=True)
class Closing:
    """Why the server ends a connection: the close code and the final error message's problem."""

    code: int  # a CloseCode, or 1001 / 1011 (RFC 6455)
    slug: str
    detail: str
    status: int

    @property
    def reason(self) -> str:
        """The close frame's reason: at most 123 bytes of UTF-8 (RFC 6455 5.5)."""
        return self.detail.encode("utf-8")[:123].decode("utf-8", "ignore")


class ProtocolError(Exception):
    """A client message the server cannot use; carries how to close."""

    def __init__(self, closing: Closing) -> None:
        super().__init__(closing.detail)
        self.closing = closing


@dataclass(frozen=True, slots=True)
class ClientMessage:
    type: str
    token: str | None = None


def unauthenticated(detail: str) -> Closing:
    return Closing(CloseCode.UNAUTHENTICATED, "unauthenticated", detail, 401)


def slow_consumer(queued: int) -> Closing:
    return Closing(
        CloseCode.SLOW_CONSUMER,
        "slow-consumer",
        f"the client did not read its events in time ({queued} were waiting); reconnect and "
        "catch up through the REST API",
        503,
    )


def going_away() -> Closing:
    return Closing(GOING_AWAY, "going-away", "the server is shutting down; reconnect later", 503)


def error_message(closing: Closing, instance: str = EVENTS_PATH) -> dict[str, Any]:
    """The last message before a close: ``{"type": "error", "problem": {...}}``.

    ``instance`` is the socket's path (the live-session signalling sockets share this shape).
    """
    return {
        "type": "error",
        "problem": {
            "type": f"https://teleconsult.invalid/problems/{closing.slug}",
            "title": closing.slug.replace("-", " "),
            "status": closing.status,
            "detail": closing.detail,
            "instance": instance,
            "code": closing.slug,
            "close_code": int(closing.code),
        },
    }


def parse_client_message(text: str | None, *, expect_auth: bool) -> ClientMessage:
    """A client message, or ``ProtocolError`` naming the close code.

    Before authentication anything but a well-formed ``auth`` closes with
    4001 (the client is not known yet); afterwards a malformed message closes
    with 4000.
    """
    code, slug, status = (
        (CloseCode.UNAUTHENTICATED, "unauthenticated", 401)
        if expect_auth
        else (CloseCode.INVALID_MESSAGE, "invalid-message", 400)
    )

    def refuse(detail: str) -> ProtocolError:
        return ProtocolError(Closing(code, slug, detail, status))

    if text is None or len(text) > MAX_CLIENT_MESSAGE:
        raise refuse(f"messages are JSON text objects of at most {MAX_CLIENT_MESSAGE} bytes")
    try:
        value = json.loads(text)
    except RecursionError:  # nested deeper than the parser goes
        raise refuse("the message nests JSON arrays or objects too deep") from None
    except ValueError:
        raise refuse("the message is not JSON") from None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise refuse('a message is a JSON object with a string "type"')
    kind = value["type"]
    if expect_auth:
        token = value.get("token")
        if kind != "auth":
            raise refuse('the first message must be {"type": "auth", "token": "<bearer token>"}')
        if not isinstance(token, str) or not token:
            raise refuse('the auth message needs "token": a bearer token from POST /api/auth/token')
        return ClientMessage("auth", token)
    if kind != "ping":
        raise refuse(f'unknown message type {kind[:40]!r}: clients send only "ping" after "auth"')
    return ClientMessage("ping")
