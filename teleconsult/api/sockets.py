"""What every WebSocket of the API shares: the auth handshake, refusals, audit rows.

Browsers cannot put a bearer token in a WebSocket's headers, and a token in
a URL ends up in access logs, so every socket (``/api/events``,
``/api/live-sessions/{id}/signal``) takes the token as its first message
``{"type": "auth", "token": ...}`` and is refused with 4001 otherwise. The
handshake, the final error message before a close, and the audit rows
(interface ``websocket``) live here so both routes behave the same.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

from fastapi import WebSocket
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.websockets import WebSocketDisconnect

from teleconsult.audit import AuditEvent, AuditLog, AuditOutcome, Interface
from teleconsult.domain.identity import Principal
from teleconsult.errors import AuthenticationError, IndexUnavailableError, TeleconsultError
from teleconsult.notifications.protocol import (
    INTERNAL_ERROR,
    Closing,
    ProtocolError,
    error_message,
    parse_client_message,
    unauthenticated,
)

__all__ = ["accept", "audit_socket", "authenticate", "origin_allowed", "receive_text", "refuse"]

logger = logging.getLogger(__name__)

POLICY_VIOLATION = 1008

T = TypeVar("T")


def _audit_now(
    websocket: WebSocket,
    action: str,
    outcome: AuditOutcome,
    resource: str,
    principal: Principal | None,
    detail: str,
    study_instance_uid: str | None,
    patient_id: str | None,
) -> None:
    audit: AuditLog = websocket.app.state.audit
    audit.record(
        AuditEvent(
            action=action,
            outcome=outcome,
            interface=Interface.WEBSOCKET,
            actor=principal.username if principal else "anonymous",
            actor_organisation=principal.organisation if principal else None,
            role=principal.role.value if principal else None,
            source_address=websocket.client.host if websocket.client else None,
            resource=f"WEBSOCKET {resource}",
            study_instance_uid=study_instance_uid,
            patient_id=patient_id,
            detail=detail,
        )
    )


async def audit_socket(
    websocket: WebSocket,
    action: str,
    outcome: AuditOutcome,
    *,
    resource: str,
    principal: Principal | None = None,
    detail: str = "",
    study_instance_uid: str | None = None,
    patient_id: str | None = None,
) -> None:
    """Write the audit row in a thread; it is written even if this task is being cancelled.

    ``asyncio.to_thread`` would withdraw a job that has not started when the
    awaiting task is cancelled (as at shutdown, or when a test client
    leaves), losing the row: the job is submitted first and then shielded.
    """
    job = functools.partial(
        _audit_now, websocket, action, outcome, resource, principal, detail, study_instance_uid, patient_id
    )
    await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, job))


def origin_allowed(origin: str | None, host: str | None, allowed: Sequence[str]) -> bool:
    """Whether a page of ``origin`` may open a socket on the server reached as ``host``.

    No Origin is a client that is not a browser page (the ultrasound
    sender, a script): the token is its proof. A page is let in from the
    server's own origin (the web client, through a proxy that passes Host
    on, as docs/security.md configures it) or from one configured in
    ``TELECONSULT_HTTP_ALLOWED_ORIGINS``. The token already keeps a page of
    another site out (it cannot read the token), so this is a second wall
    against cross-site WebSocket hijacking, not the first.
    """
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    if "*" in allowed or origin in {entry.strip().rstrip("/").lower() for entry in allowed}:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc == (host or "").strip().lower()


async def accept(websocket: WebSocket, *, action: str, resource: str, name: str) -> bool:
    """Accept the handshake, or refuse a page of another site with 403 (audited) and return False."""
    settings = websocket.app.state.settings
    origin = websocket.headers.get("origin")
    if origin_allowed(origin, websocket.headers.get("host"), settings.http_allowed_origins):
        await websocket.accept()
        return True
    detail = f"origin {str(origin)[:200]!r} is neither this server nor in TELECONSULT_HTTP_ALLOWED_ORIGINS"
    address = websocket.client.host if websocket.client else "?"
    logger.warning("%s socket from %s refused: %s", name, address, detail)
    await audit_socket(websocket, action, AuditOutcome.DENIED, resource=resource, detail=detail)
    await websocket.close(POLICY_VIOLATION)  # before accepting: the handshake is answered 403
    return False


async def receive_text(websocket: WebSocket) -> str | None:
    """The next text message (None for a binary one); ``WebSocketDisconnect`` when the client left."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    text: str | None = message.get("text")
    return text


async def refuse(websocket: WebSocket, closing: Closing, instance: str) -> None:
    """Send the final ``error`` message, then close with its code (if the client is still there)."""
    try:
        await websocket.send_text(json.dumps(error_message(closing, instance)))
        await websocket.close(closing.code, closing.reason)
    except (WebSocketDisconnect, RuntimeError, OSError):
        logger.debug("socket %s: the client left before its refusal was sent", instance)


async def authenticate(
    websocket: WebSocket,
    timeout: float,
    sign_in: Callable[[str], T],
    *,
    action: str,
    resource: str,
    name: str,
) -> T | None:
    """Whatever ``sign_in(token)`` makes of the first message, or None after refusing (4001).

    ``sign_in`` runs in a thread (it reads the identity store) and raises
    ``AuthenticationError`` for a token it does not take. A refused attempt
    is audited as ``action`` (denied), logged as "``name`` socket from ...
    refused" and answered as DESIGN.md says: an ``error`` message, then close
    code 4001 (1011 if the index is down).
    """
    try:
        text = await asyncio.wait_for(receive_text(websocket), timeout)
        message = parse_client_message(text, expect_auth=True)
        assert message.token is not None
        return await asyncio.to_thread(sign_in, message.token)
    except TimeoutError:
        closing = unauthenticated(
            f'no auth message within {timeout:g} s: send {{"type": "auth", "token": ...}} first'
        )
    except ProtocolError as exc:
        closing = exc.closing
    except AuthenticationError as exc:
        closing = unauthenticated(exc.message)
    except TeleconsultError as exc:  # the index cannot be read: try again later
        closing = Closing(INTERNAL_ERROR, exc.code, exc.message, exc.http_status)
    except (OperationalError, InterfaceError):  # the database server is down or unreachable
        unavailable = IndexUnavailableError("the index (database) cannot be reached; retry later")
        closing = Closing(INTERNAL_ERROR, unavailable.code, unavailable.message, unavailable.http_status)
    except WebSocketDisconnect:
        await audit_socket(
            websocket, action, AuditOutcome.DENIED, resource=resource, detail="left before authenticating"
        )
        return None
    address = websocket.client.host if websocket.client else "?"
    logger.info("%s socket from %s refused: %s", name, address, closing.detail)
    try:
        await audit_socket(websocket, action, AuditOutcome.DENIED, resource=resource, detail=closing.detail)
    except (OperationalError, InterfaceError):
        # The database is down (the likely reason for this refusal too): the refusal still goes out.
        logger.error(
            "%s socket from %s: the refusal could not be audited, the index is unreachable", name, address
        )
    await refuse(websocket, closing, resource)
    return None
