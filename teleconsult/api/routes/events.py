"""Notifications over WebSocket at ``/api/events`` (and what a plain GET there is told).

Browsers cannot put a bearer token in a WebSocket's headers, and a token in
the URL ends up in access logs, so the token is the first message; the
server answers ``ready`` or closes with 4001. Each connection, and each
refused attempt, is audited (interface ``websocket``): ``events.connect``
when it is accepted or refused, ``events.close`` when it ends, with why and
how many events it received. The hub lives on ``app.state.notifications``
for as long as the app runs (this router's lifespan).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from teleconsult.api.deps import principal_from_token
from teleconsult.api.openapi import problem_response
from teleconsult.api.problems import problem
from teleconsult.api.sockets import accept, audit_socket, authenticate, receive_text
from teleconsult.audit import AuditOutcome
from teleconsult.consults.access import viewer_of
from teleconsult.domain.consults import ConsultViewer
from teleconsult.domain.identity import Principal
from teleconsult.errors import AuthenticationError
from teleconsult.notifications import Connection, NotificationHub, NotificationOptions
from teleconsult.notifications.protocol import (
    EVENTS_PATH,
    Closing,
    ProtocolError,
    parse_client_message,
)
from teleconsult.security import TokenError, decode_access_token

__all__ = ["notification_lifespan", "router"]

logger = logging.getLogger(__name__)

_READY = json.dumps({"type": "ready"})
_PONG = json.dumps({"type": "pong"})

PROTOCOL = """\
**This path is a WebSocket** (OpenAPI cannot describe one): open `ws(s)://<host>/api/events`;
a plain GET is answered 426. Protocol (details in `docs/notifications.md`):

1. Within 5 seconds (the default) send
   `{"type": "auth", "token": "<access token from POST /api/auth/token>"}`; the token never goes
   in the URL.
2. The server answers `{"type": "ready"}`, then sends events as they happen:
   `{"type": T, "id": "<hex>", "time": "<ISO 8601>", "data": {...}}` with T one of
   `study.stored` (at once for a study's first instance, then at most one per study every
   2 seconds (the default) while more arrive, `data.instances` counting them), `consult.requested`,
   `consult.accepted`, `consult.declined`, `consult.cancelled`, `consult.reassigned`,
   `consult.reported`, `consult.delivered`, `consult.overdue` (to its escalation
   `recipients` only), `report.performing_signed`, `report.signed`, `alert.critical`.
   `data` always has `study_instance_uid` (null for a consult on a patient whose study has
   not arrived) and, for consult and report events, `consult_id`. A user receives an event
   only if they may see its study or consult (organisation scope, or shared by a consult).
3. The client may send `{"type": "ping"}`; the server answers `{"type": "pong"}`.

The server ends a connection with a final `{"type": "error", "problem": {...}}` (RFC 9457
fields plus `code` and `close_code`) and a close code: **4001** no auth message in time,
a malformed one, a missing, invalid or expired token, the token expiring while connected or
the account disabled; **4000** an unknown or malformed message after `ready`; **4013** the
client did not read its events fast enough (its queue, 256 events by default, overflowed). On 4013 reconnect
and catch up through the REST API; on 4001 sign in again.
"""


@asynccontextmanager
async def notification_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One hub per app, on the app's bus, for as long as it serves."""
    store = app.state.store
    options = getattr(app.state, "notification_options", None) or NotificationOptions()
    hub = NotificationHub(
        store.bus, store.index.engine, app.state.identity, loop=asyncio.get_running_loop(), options=options
    )
    hub.start()
    # events of other replicas reach this replica's sockets too (TELECONSULT_BROKER_URL)
    unsubscribe_remote = store.remote_bus.subscribe(hub.hear)
    app.state.notifications = hub
    try:
        yield
    finally:
        unsubscribe_remote()
        hub.close_all()
        await asyncio.to_thread(hub.stop)


router = APIRouter(tags=["notifications"], lifespan=notification_lifespan)


@router.get(
    EVENTS_PATH,
    summary="Notifications (WebSocket): events about the studies and consults the caller may see",
    description=PROTOCOL,
    status_code=426,
    response_class=Response,
    responses={426: problem_response("Upgrade required: this path is a WebSocket, see the description")},
)
def events_over_http(request: Request) -> JSONResponse:
    response = problem(
        request,
        426,
        "upgrade required",
        "GET /api/events is a WebSocket: open it with a WebSocket client and send "
        '{"type": "auth", "token": ...} first (docs/notifications.md)',
        "upgrade-required",
    )
    response.headers["Upgrade"] = "websocket"
    response.headers["Connection"] = "Upgrade"
    return response


@dataclass(frozen=True, slots=True)
class _SignedIn:
    principal: Principal
    viewer: ConsultViewer
    expires_at: float


def _sign_in(websocket: WebSocket, hub: NotificationHub, token: str) -> _SignedIn:
    """The token's user (``AuthenticationError`` as on HTTP), their consult view and the token's expiry."""
    key: str = websocket.app.state.secret_key
    principal = principal_from_token(token, key, websocket.app.state.identity)
    try:
        expires_at = float(decode_access_token(key, token)["exp"])
    except (TokenError, KeyError, TypeError, ValueError) as exc:  # expired between the two reads
        raise AuthenticationError("the bearer token is invalid or expired; sign in again") from exc
    return _SignedIn(principal, viewer_of(principal, hub.audience.departments), expires_at)


async def _audit(
    websocket: WebSocket,
    action: str,
    outcome: AuditOutcome,
    *,
    principal: Principal | None = None,
    detail: str = "",
) -> None:
    await audit_socket(websocket, action, outcome, resource=EVENTS_PATH, principal=principal, detail=detail)


async def _authenticate(websocket: WebSocket, hub: NotificationHub) -> _SignedIn | None:
    """The signed-in user, or None after refusing (4001) and auditing the attempt."""
    return await authenticate(
        websocket,
        hub.options.auth_timeout,
        functools.partial(_sign_in, websocket, hub),
        action="events.connect",
        resource=EVENTS_PATH,
        name="events",
    )


async def _read(websocket: WebSocket, connection: Connection) -> bool:
    """Answer pings until the client leaves (False) or breaks the protocol (True, closing)."""
    while True:
        try:
            text = await receive_text(websocket)
        except WebSocketDisconnect:
            return False
        try:
            parse_client_message(text, expect_auth=False)
        except ProtocolError as exc:
            connection.close(exc.closing)
            return True
        connection.offer(_PONG)


@router.websocket(EVENTS_PATH)
async def events_socket(websocket: WebSocket) -> None:
    hub: NotificationHub = websocket.app.state.notifications
    if not await accept(websocket, action="events.connect", resource=EVENTS_PATH, name="events"):
        return
    signed_in = await _authenticate(websocket, hub)
    if signed_in is None:
        return
    principal = signed_in.principal
    await _audit(websocket, "events.connect", AuditOutcome.SUCCESS, principal=principal)
    connection = hub.register(principal, signed_in.viewer, expires_at=signed_in.expires_at)
    logger.info(
        "events socket %d opened by %s of %s", connection.id, principal.username, principal.organisation
    )
    reader: asyncio.Future[bool] | None = None
    closing: Closing | None = None
    try:
        await websocket.send_text(_READY)
        pump = connection.start(websocket.send_text, websocket.close)
        reader = asyncio.ensure_future(_read(websocket, connection))
        await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
        if not reader.done() or reader.result():
            closing = await pump  # the server closes (bounded by close_grace)
    except WebSocketDisconnect:
        pass
    finally:
        # Nothing here may wait before the audit row is handed to its thread: the handler
        # can be cancelled (server shutdown), and each await would raise again.
        if reader is not None:
            reader.cancel()
        connection.stop()
        hub.unregister(connection)
        closing = closing or connection.closing
        ended = f"closed by the server ({closing.code} {closing.slug})" if closing else "closed by the client"
        logger.info("events socket %d of %s %s", connection.id, principal.username, ended)
        await _audit(
            websocket,
            "events.close",
            AuditOutcome.SUCCESS,
            principal=principal,
            detail=f"{ended} after {connection.delivered} events",
        )
