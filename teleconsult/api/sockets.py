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
from collections.abc import Callable
from typing import TypeVar

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from teleconsult.audit import AuditEvent, AuditLog, AuditOutcome, Interface
from teleconsult.domain.identity import Principal
from teleconsult.errors import AuthenticationError, TeleconsultError
from teleconsult.notifications.protocol import (
    INTERNAL_ERROR,
    Closing,
    ProtocolError,
    error_message,
    parse_client_message,
    unauthenticated,
)

__all__ = ["audit_socket", "authenticate", "receive_text", "refuse"]

logger = logging.getLogger(__name__)

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
    except WebSocketDisconnect:
        await audit_socket(
            websocket, action, AuditOutcome.DENIED, resource=resource, detail="left before authenticating"
        )
        return None
    address = websocket.client.host if websocket.client else "?"
    logger.info("%s socket from %s refused: %s", name, address, closing.detail)
    await audit_socket(websocket, action, AuditOutcome.DENIED, resource=resource, detail=closing.detail)
    await refuse(websocket, closing, resource)
    return None
