"""The township side of a live exam: send a capture source to a live session as its "sender".

``send_once`` signs the connection in (first message ``auth``), offers the
video (and an ``annotations`` data channel, whose messages from the
specialists go to ``on_annotation``), applies the server's answer and keeps
the peer connection until the session ends, the server drops this sender,
or the connection is lost. ``run_sender`` reconnects after a loss, with a
new token and a new offer each time: the server switches the viewers to the
new connection's video, so the specialists' picture resumes by itself.

The REST calls (sign in, start or find the consult's session) use the
standard library's ``urllib`` in a worker thread: a device box needs no
HTTP client package for two requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

__all__ = [
    "LiveServer",
    "SendResult",
    "run_sender",
    "send_once",
]

logger = logging.getLogger(__name__)

# Close codes after which reconnecting cannot help (docs/live.md).
_FINAL = {
    1000: "the session ended",
    4001: "the token was refused",
    4003: "this user takes no part in the consult's live exams",
    4004: "no such session, or not visible to this user",
    4009: "another connection took over as sender",
    4010: "the session has ended",
}


@dataclass(frozen=True, slots=True)
class SendResult:
    """How one connection ended."""

    reason: str
    close_code: int | None
    final: bool  # reconnecting cannot help


@dataclass(frozen=True, slots=True)
class LiveServer:
    """The teleconsult server and the account the device signs in with."""

    base_url: str  # http(s)://host:port
    username: str
    password: str
    timeout: float = 30.0

    def _request(self, path: str, body: bytes, content_type: str, token: str | None = None) -> Any:
        request = urllib.request.Request(  # noqa: S310 - the URL is the configured server's
            self.base_url.rstrip("/") + path, data=body, method="POST", headers={"Content-Type": content_type}
        )
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            return json.loads(response.read())

    def _token(self) -> str:
        form = urllib.parse.urlencode({"username": self.username, "password": self.password}).encode()
        return str(
            self._request("/api/auth/token", form, "application/x-www-form-urlencoded")["access_token"]
        )

    async def token(self) -> str:
        """A fresh access token (signing in is slow on purpose: argon2)."""
        return await asyncio.to_thread(self._token)

    async def session_of(self, consult_id: str, token: str) -> dict[str, Any]:
        """The consult's live session, started if none is running."""
        body = json.dumps({"consult_id": consult_id}).encode()
        session: dict[str, Any] = await asyncio.to_thread(
            self._request, "/api/live-sessions", body, "application/json", token
        )
        return session

    def signal_url(self, session_id: str) -> str:
        scheme, rest = self.base_url.rstrip("/").split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/api/live-sessions/{session_id}/signal"


def _configuration(ice_servers: list[dict[str, Any]]) -> RTCConfiguration:
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in ice_servers
        ]
    )


async def _expect(ws: ClientConnection, kind: str, timeout: float) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    if message.get("type") == "error":
        raise RuntimeError(f"the server refused: {message['problem']['detail']}")
    if message.get("type") != kind:
        raise RuntimeError(f"expected {kind!r} from the server, got {message.get('type')!r}")
    return message


async def send_once(
    url: str,
    token: str,
    video: MediaStreamTrack,
    *,
    ice_servers: list[dict[str, Any]] | None = None,
    audio: MediaStreamTrack | None = None,
    on_annotation: Callable[[dict[str, Any]], None] | None = None,
    on_connected: Callable[[RTCPeerConnection], Awaitable[None] | None] | None = None,
    stop: asyncio.Event | None = None,
    timeout: float = 30.0,
) -> SendResult:
    """Send ``video`` (and ``audio``) over one signalling connection until it ends."""
    pc = RTCPeerConnection(_configuration(ice_servers or []))
    try:
        pc.addTrack(video)
        if audio is not None:
            pc.addTrack(audio)
        channel = pc.createDataChannel("annotations")
        if on_annotation is not None:
            callback = on_annotation

            @channel.on("message")
            def _annotation(message: str | bytes) -> None:
                if isinstance(message, str):
                    callback(json.loads(message))

        async with connect(url, open_timeout=timeout) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            await _expect(ws, "ready", timeout)
            await pc.setLocalDescription(await pc.createOffer())
            offer = {"type": "offer", "sdp": pc.localDescription.sdp, "role": "sender"}
            await ws.send(json.dumps(offer))
            answer = await _expect(ws, "answer", timeout)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            if on_connected is not None:
                result = on_connected(pc)
                if result is not None:
                    await result
            return await _serve(ws, stop)
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        return SendResult(_FINAL.get(code or 0, "the connection was lost"), code, code in _FINAL)
    except (OSError, TimeoutError) as exc:
        return SendResult(f"the server cannot be reached: {exc}", None, False)
    finally:
        await pc.close()


async def _serve(ws: ClientConnection, stop: asyncio.Event | None) -> SendResult:
    """Read the server's messages until it closes, or ``stop`` is set (then say bye)."""
    stopping = asyncio.ensure_future(stop.wait()) if stop is not None else None
    try:
        while True:
            receiving = asyncio.ensure_future(ws.recv())
            waiting: set[asyncio.Future[Any]] = {receiving} | ({stopping} if stopping else set())
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not receiving.done():
                receiving.cancel()
                await ws.send(json.dumps({"type": "bye"}))
                return SendResult("stopped", None, True)
            message = json.loads(receiving.result())
            if message.get("type") == "error":
                logger.warning("live session: %s", message["problem"]["detail"])
            elif message.get("type") == "bye":
                logger.info("live session: %s", message.get("reason"))
    finally:
        if stopping is not None:
            stopping.cancel()


async def run_sender(
    server: LiveServer,
    video: Callable[[], MediaStreamTrack],
    *,
    consult_id: str | None = None,
    session_id: str | None = None,
    stop: asyncio.Event | None = None,
    retry_seconds: float = 2.0,
    max_retry_seconds: float = 30.0,
) -> SendResult:
    """Send until the session ends or ``stop`` is set, reconnecting (with back-off) after a loss.

    ``video`` makes a track per connection (``CaptureSource.subscribe``).
    Give ``consult_id`` to start or find the consult's session, or ``session_id``.
    A server that cannot be reached is tried again; one that refuses (4xx,
    or a final close code) ends it.
    """
    if (consult_id is None) == (session_id is None):
        raise ValueError("give exactly one of consult_id and session_id")
    delay = retry_seconds
    while True:
        result = await _attempt(server, video, consult_id, session_id, stop)
        if result.final or (stop is not None and stop.is_set()):
            return result
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_retry_seconds)


async def _attempt(
    server: LiveServer,
    video: Callable[[], MediaStreamTrack],
    consult_id: str | None,
    session_id: str | None,
    stop: asyncio.Event | None,
) -> SendResult:
    """Sign in, find the session, send: one connection's worth (a refusal over HTTP is final)."""
    try:
        token = await server.token()
        ice_servers: list[dict[str, Any]] = []
        if consult_id is not None:
            session = await server.session_of(consult_id, token)
            session_id, ice_servers = str(session["id"]), list(session["ice_servers"])
    except urllib.error.HTTPError as exc:
        final = 400 <= exc.code < 500  # wrong password, no such consult, not this user's to send
        return SendResult(f"the server answered HTTP {exc.code}", None, final)
    except OSError as exc:
        return SendResult(f"the server cannot be reached: {exc}", None, False)
    assert session_id is not None
    result = await send_once(
        server.signal_url(session_id), token, video(), ice_servers=ice_servers, stop=stop
    )
    logger.info("live session %s: %s", session_id, result.reason)
    return result
