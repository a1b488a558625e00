"""Live sessions held by another replica: their requests and signalling sockets relayed there.

A live session's peer connections, encoders and recorder live in the one
process that started it. With several HTTP replicas behind a balancer, a
specialist's browser may reach any of them: this middleware looks the
session (or, for ``POST``/``GET /api/live-sessions``, the consult's running
session) up in the shared registry and, when another replica holds it,
passes the request or the WebSocket through to that replica unchanged, as
a reverse proxy would. The holder signs the caller in, checks access and
audits, exactly as for a request sent to it directly; the relaying replica
adds only ``X-Forwarded-For``/``-Proto`` (the holder trusts them from the
addresses in uvicorn's ``FORWARDED_ALLOW_IPS``) and a marker that stops a
relayed request from being relayed again.

The media itself (ICE, RTP) goes straight between the client and the
holder's candidates, or through TURN, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from teleconsult.api.problems import problem
from teleconsult.errors import TeleconsultError
from teleconsult.media.registry import Holder, SessionRegistry

if TYPE_CHECKING:
    from teleconsult.media.hub import MediaHub

__all__ = [
    "LIVE_PATH",
    "RELAYED_HEADER",
    "LiveRelay",
    "ReplicaUnreachableError",
    "relay_client",
    "relay_now",
    "relayed_from",
    "remote_list",
]

logger = logging.getLogger(__name__)

RELAYED_HEADER = "x-teleconsult-relayed"
LIVE_PATH = "/api/live-sessions"
_MAX_START_BODY = 64 * 1024  # POST /api/live-sessions carries a consult id
_NOT_RELAYED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        RELAYED_HEADER.encode(),
    }
)
_NOT_RETURNED = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"})
# Socket close codes that cannot be sent in a close frame (they say no frame came).
_UNSENDABLE = frozenset({1005, 1006, 1015})


def relay_client() -> httpx.AsyncClient:
    """The HTTP client a replica relays with (a clip of the next 30 s answers after 30 s)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=5.0, read=120.0, write=30.0, pool=10.0), follow_redirects=False
    )


def relayed_from(headers: Any) -> str | None:
    """The replica a request was relayed from, if it was."""
    value = headers.get(RELAYED_HEADER)
    return str(value) if value else None


def _forwarded_headers(scope: Scope, registry: SessionRegistry) -> list[tuple[bytes, bytes]]:
    headers = [(name, value) for name, value in scope["headers"] if name.lower() not in _NOT_RELAYED]
    client = scope.get("client")
    if client:
        headers.append((b"x-forwarded-for", str(client[0]).encode("latin-1")))
    scheme = str(scope.get("scheme", "http")).replace("ws", "http")
    headers.append((b"x-forwarded-proto", scheme.encode("latin-1")))
    headers.append((RELAYED_HEADER.encode(), registry.replica_url.encode("latin-1")))
    return headers


def _target_path(scope: Scope) -> str:
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return (path + (b"?" + query if query else b"")).decode("latin-1")


class LiveRelay:
    """ASGI middleware: requests for another replica's live sessions go to that replica."""

    def __init__(self, app: ASGIApp, owner: Any) -> None:
        self.app = app
        self.owner = owner  # the FastAPI app: its state has the hub, registry and client once started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        registry: SessionRegistry | None = getattr(self.owner.state, "live_registry", None)
        if (
            registry is None
            or scope["type"] not in ("http", "websocket")
            or not (scope["path"] == LIVE_PATH or scope["path"].startswith(LIVE_PATH + "/"))
            or any(name.lower() == RELAYED_HEADER.encode() for name, _ in scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        holder, receive = await self._holder(scope, receive, registry)
        if holder is None or registry.is_mine(holder):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._relay_socket(scope, receive, send, holder, registry)
        else:
            await self._relay_http(scope, receive, send, holder, registry)

    # -- which replica -------------------------------------------------------------------------

    async def _holder(
        self, scope: Scope, receive: Receive, registry: SessionRegistry
    ) -> tuple[Holder | None, Receive]:
        """The replica that holds what the request is about (None: answer here), and the body reader."""
        rest = scope["path"][len(LIVE_PATH) :].strip("/")
        session_id = rest.split("/", 1)[0]
        try:
            if session_id and session_id != "recordings":
                hub: MediaHub | None = getattr(self.owner.state, "media", None)
                if hub is not None and hub.get(session_id) is not None:
                    return None, receive
                return await asyncio.to_thread(registry.holder, session_id), receive
            if session_id:
                return None, receive
            consult_id: str | None = None
            if scope["type"] == "http" and scope["method"] == "GET":
                found = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("consult_id")
                consult_id = found[0] if found else None
            elif scope["type"] == "http" and scope["method"] == "POST":
                body, receive = await _read_small_body(receive)
                consult_id = _consult_of_body(body)
            if not consult_id:
                return None, receive
            return await asyncio.to_thread(registry.running, consult_id[:64]), receive
        except TeleconsultError as exc:  # the index cannot be read: this replica answers (503 there)
            logger.warning("live relay: the registry cannot be read (%s); answering here", exc.message)
            return None, receive

    # -- HTTP ------------------------------------------------------------------------------------

    async def _relay_http(
        self, scope: Scope, receive: Receive, send: Send, holder: Holder, registry: SessionRegistry
    ) -> None:
        client: httpx.AsyncClient = self.owner.state.live_relay_client
        url = holder.replica_url + _target_path(scope)
        request = client.build_request(
            scope["method"], url, headers=_forwarded_headers(scope, registry), content=_body(receive)
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            logger.warning("live relay: %s %s to %s failed: %s", scope["method"], scope["path"], url, exc)
            await _unreachable(scope, holder)(scope, receive, send)
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (name, value)
                        for name, value in response.headers.raw
                        if name.lower() not in _NOT_RETURNED
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    # -- WebSocket ---------------------------------------------------------------------------------

    async def _relay_socket(
        self, scope: Scope, receive: Receive, send: Send, holder: Holder, registry: SessionRegistry
    ) -> None:
        opening = await receive()
        if opening["type"] != "websocket.connect":
            return
        url = "ws" + holder.replica_url.removeprefix("http") + _target_path(scope)
        headers = _forwarded_headers(scope, registry)
        origin = next((value.decode("latin-1") for name, value in headers if name.lower() == b"origin"), None)
        passed = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in headers
            if name.lower() in (b"x-forwarded-for", b"x-forwarded-proto", RELAYED_HEADER.encode())
        ]
        try:
            upstream = await connect(
                url,
                origin=origin,  # type: ignore[arg-type]
                additional_headers=passed,
                open_timeout=10,
                max_size=2**20,
                compression=None,
            )
        except InvalidStatus as exc:  # the holder refused the handshake (a foreign Origin): so do we
            logger.info("live relay: %s refused the socket with %d", url, exc.response.status_code)
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
            return
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            logger.warning("live relay: the socket to %s cannot be opened: %s", url, exc)
            await send({"type": "websocket.accept"})
            reason = f"the replica holding live session {holder.session_id[:40]} cannot be reached; retry"
            await send({"type": "websocket.close", "code": 1013, "reason": reason[:120]})
            return
        await send({"type": "websocket.accept"})
        await _pump(receive, send, upstream)


async def _pump(receive: Receive, send: Send, upstream: ClientConnection) -> None:
    """Messages both ways until one side closes; the other is then closed with its code and reason."""

    async def from_client() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                code = int(message.get("code", 1000))
                await upstream.close(1000 if code in _UNSENDABLE else code, str(message.get("reason") or ""))
                return
            if message.get("text") is not None:
                await upstream.send(message["text"])
            elif message.get("bytes") is not None:
                await upstream.send(message["bytes"])

    async def from_holder() -> None:
        try:
            async for data in upstream:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        except ConnectionClosed:
            pass
        code = upstream.close_code
        reason = upstream.close_reason or ""
        if code is None or code in _UNSENDABLE:
            code, reason = 1011, "the replica holding the live session went away"
        with contextlib.suppress(RuntimeError, OSError):
            await send({"type": "websocket.close", "code": code, "reason": reason})

    tasks = [asyncio.create_task(from_client()), asyncio.create_task(from_holder())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()


# -- bodies ---------------------------------------------------------------------------------------


async def _read_small_body(receive: Receive) -> tuple[bytes, Receive]:
    """The start request's body (at most 64 KiB read), and a reader that gives it again."""
    chunks: list[bytes] = []
    size = 0
    more = True
    messages: list[Message] = []
    while more and size <= _MAX_START_BODY:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = bool(message.get("more_body"))

    async def again() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return b"".join(chunks), again


def _consult_of_body(body: bytes) -> str | None:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # the route answers it (400)
        return None
    consult = value.get("consult_id") if isinstance(value, dict) else None
    return consult if isinstance(consult, str) else None


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        yield message.get("body", b"")
        if not message.get("more_body"):
            return


def _unreachable(scope: Scope, holder: Holder) -> Callable[[Scope, Receive, Send], Any]:
    response = problem(
        Request(scope),
        503,
        "replica unreachable",
        f"live session {holder.session_id[:40]} is held by the replica at {holder.replica_url}, which "
        "cannot be reached; retry, or start the session again once it is taken as gone",
        "replica-unreachable",
    )
    response.headers["Retry-After"] = "5"
    return response


# -- from a route (its threadpool) ----------------------------------------------------------------


def relay_now(request: Request, holder: Holder, registry: SessionRegistry, body: bytes) -> Response:
    """``request`` (whose body was read) answered by the holder: two replicas started a session at once."""
    url = holder.replica_url + _target_path(request.scope)
    try:
        answer = httpx.request(
            request.method,
            url,
            headers=_forwarded_headers(request.scope, registry),
            content=body,
            timeout=httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=10.0),
        )
    except httpx.HTTPError as exc:
        logger.warning("live relay: %s %s to %s failed: %s", request.method, request.url.path, url, exc)
        raise ReplicaUnreachableError(holder) from None
    dropped = ("content-length", "content-encoding", "transfer-encoding")  # httpx gave the body decoded
    kept = {name: value for name, value in answer.headers.items() if name.lower() not in dropped}
    return Response(answer.content, status_code=answer.status_code, headers=kept)


def remote_list(request: Request, registry: SessionRegistry, urls: list[str]) -> list[Any]:
    """The JSON arrays the same ``GET`` answers on each of ``urls`` (the replicas that are up)."""
    found: list[Any] = []
    for base in urls:
        try:
            answer = httpx.get(
                base + _target_path(request.scope),
                headers=_forwarded_headers(request.scope, registry),
                timeout=httpx.Timeout(connect=3.0, read=10.0, write=10.0, pool=10.0),
            )
        except httpx.HTTPError as exc:
            logger.warning("live relay: %s cannot be asked for %s: %s", base, request.url.path, exc)
            continue
        if answer.status_code == 200 and isinstance(body := answer.json(), list):
            found.extend(body)
        else:
            logger.warning("live relay: %s answered %s with %d", base, request.url.path, answer.status_code)
    return found


class ReplicaUnreachableError(TeleconsultError):
    """The replica holding a live session does not answer."""

    http_status = 503
    code = "replica-unreachable"

    def __init__(self, holder: Holder) -> None:
        super().__init__(
            f"live session {holder.session_id[:40]} is held by the replica at {holder.replica_url}, which "
            "cannot be reached; retry"
        )
