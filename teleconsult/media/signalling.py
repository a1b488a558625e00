"""Signalling of live sessions: the messages (a pydantic union on ``type``) and the per-connection loop.

After the ``auth`` / ``ready`` handshake (``teleconsult.api.sockets``) a client sends

- ``{"type": "offer", "sdp": "...", "role": "sender" | "viewer"}``, answered
  ``{"type": "answer", "sdp": "..."}`` (a new offer renegotiates: a new peer
  connection replaces the previous one of this signalling connection);
- ``{"type": "candidate", "candidate": "candidate:...", "sdpMid": "0",
  "sdpMLineIndex": 0}`` (also aiortc's ``id`` / ``label`` spelling; an empty
  or null candidate ends the candidates). The server's candidates are all
  in its answer (aiortc gathers before answering), so it sends none;
- ``{"type": "ping"}``, answered ``{"type": "pong"}``;
- ``{"type": "bye"}``: leave (the server closes with 1000).

A message the server cannot act on is answered
``{"type": "error", "problem": {...}}`` and the connection and the session
stay up. The server ends a connection with ``{"type": "bye", "reason": ...}``
and 1000 when the session ends, or with an ``error`` and 4009 when another
connection took over as sender.

``Signalling`` is the seam: the WebSocket is one implementation,
``memory_pair`` the in-process one tests use, after aiortc's
``contrib/signaling.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, Protocol

from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from teleconsult.media.errors import InvalidCandidateError, InvalidMessageError, LiveError
from teleconsult.media.sessions import SESSION_ENDED, LiveSession, ParticipantRole, Peer
from teleconsult.notifications.protocol import error_message

__all__ = [
    "MAX_MESSAGE_BYTES",
    "Answer",
    "Bye",
    "Candidate",
    "ClientMessage",
    "Offer",
    "Ping",
    "Signalling",
    "SignallingClosedError",
    "ice_candidate",
    "memory_pair",
    "parse_client_message",
    "problem_message",
    "serve_peer",
]

logger = logging.getLogger(__name__)

# An SDP offer of a browser with audio, video and a data channel is 5-10 KB.
MAX_MESSAGE_BYTES = 128 * 1024


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Offer(_Message):
    type: Literal["offer"]
    sdp: str = Field(min_length=1)
    role: ParticipantRole


class Answer(_Message):
    type: Literal["answer"] = "answer"
    sdp: str


class Candidate(_Message):
    model_config = ConfigDict(extra="ignore", frozen=True)  # browsers add usernameFragment

    type: Literal["candidate"]
    candidate: str | None = Field(None, max_length=2048)
    sdp_mid: str | None = Field(None, max_length=64, validation_alias=AliasChoices("sdpMid", "id"))
    sdp_mline_index: int | None = Field(
        None, ge=0, le=1024, validation_alias=AliasChoices("sdpMLineIndex", "label")
    )


class Bye(_Message):
    type: Literal["bye"]
    reason: str | None = Field(None, max_length=200)


class Ping(_Message):
    type: Literal["ping"]


ClientMessage = Annotated[Offer | Candidate | Bye | Ping, Field(discriminator="type")]
_CLIENT: TypeAdapter[Offer | Candidate | Bye | Ping] = TypeAdapter(ClientMessage)


def parse_client_message(text: str | None) -> Offer | Candidate | Bye | Ping:
    """The message in ``text``, or ``InvalidMessageError`` saying what is wrong with it."""
    if text is None:
        raise InvalidMessageError("signalling messages are JSON text, not binary")
    if len(text) > MAX_MESSAGE_BYTES:
        raise InvalidMessageError(f"a signalling message is at most {MAX_MESSAGE_BYTES} bytes")
    try:
        value = json.loads(text)
    except RecursionError:  # nested deeper than the parser goes: not a signalling message
        raise InvalidMessageError("the message nests JSON arrays or objects too deep") from None
    except ValueError:
        raise InvalidMessageError("the message is not JSON") from None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise InvalidMessageError('a message is a JSON object with a string "type"')
    if value["type"] not in ("offer", "candidate", "bye", "ping"):
        raise InvalidMessageError(
            f'unknown message type {value["type"][:40]!r}: send "offer", "candidate", "ping" or "bye"'
        )
    try:
        return _CLIENT.validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "message"
        raise InvalidMessageError(
            f"{value['type']} message, {where}: {first.get('msg', 'invalid')}"
        ) from None


def ice_candidate(message: Candidate) -> RTCIceCandidate | None:
    """aiortc's candidate of a ``candidate`` message; None for the end of candidates."""
    if not message.candidate:
        return None
    if message.sdp_mid is None and message.sdp_mline_index is None:
        raise InvalidCandidateError("a candidate needs sdpMid or sdpMLineIndex")
    text = message.candidate.removeprefix("a=").removeprefix("candidate:")
    try:
        candidate = candidate_from_sdp(text)
    except (AssertionError, ValueError, IndexError) as exc:
        raise InvalidCandidateError(f"the candidate {message.candidate[:60]!r} cannot be parsed") from exc
    candidate.sdpMid = message.sdp_mid
    candidate.sdpMLineIndex = message.sdp_mline_index
    return candidate


def problem_message(error: LiveError, instance: str) -> dict[str, Any]:
    """The ``error`` message for a message that was not acted on (the connection stays open)."""
    return {
        "type": "error",
        "problem": {
            "type": f"https://teleconsult.invalid/problems/{error.code}",
            "title": error.code.replace("-", " "),
            "status": error.status,
            "detail": error.detail,
            "instance": instance,
            "code": error.code,
        },
    }


class SignallingClosedError(Exception):
    """The other end of the signalling connection has gone."""


class Signalling(Protocol):
    """One signalling connection, seen from the server."""

    async def receive(self) -> str | None:
        """The next text message (None for a binary one); ``SignallingClosedError`` once closed."""
        ...

    async def send(self, message: dict[str, Any]) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class _MemoryEnd:
    def __init__(self, inbox: asyncio.Queue[str | None], outbox: asyncio.Queue[str | None]) -> None:
        self._inbox, self._outbox = inbox, outbox
        self.close_code: int | None = None

    async def receive(self) -> str | None:
        text = await self._inbox.get()
        if text is None:
            self._inbox.put_nowait(None)
            raise SignallingClosedError
        return text

    async def send(self, message: dict[str, Any]) -> None:
        if self.close_code is not None:
            raise SignallingClosedError
        self._outbox.put_nowait(json.dumps(message))

    async def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self._outbox.put_nowait(None)


def memory_pair() -> tuple[_MemoryEnd, _MemoryEnd]:
    """Two connected in-process ends (server, client): what the WebSocket is, without a network."""
    a: asyncio.Queue[str | None] = asyncio.Queue()
    b: asyncio.Queue[str | None] = asyncio.Queue()
    return _MemoryEnd(a, b), _MemoryEnd(b, a)


JoinHook = Callable[[ParticipantRole, LiveError | None], Awaitable[None]]


async def _answer(
    session: LiveSession, peer: Peer, signalling: Signalling, instance: str, on_join: JoinHook | None
) -> str:
    """Act on the peer's messages until it says bye (returns how it ended)."""
    while True:
        text = await signalling.receive()
        try:
            message = parse_client_message(text)
            if isinstance(message, Bye):
                return "said bye"
            if isinstance(message, Ping):
                await signalling.send({"type": "pong"})
            elif isinstance(message, Candidate):
                await session.candidate(peer, ice_candidate(message))
            else:
                before = peer.role
                try:
                    sdp = await session.offer(peer, message.role, message.sdp)
                except LiveError as exc:
                    if on_join is not None and exc.status in (403, 503):
                        await on_join(message.role, exc)
                    raise
                await signalling.send(Answer(sdp=sdp).model_dump())
                if on_join is not None and before is not peer.role:
                    await on_join(message.role, None)
        except LiveError as exc:
            logger.info("live %s: %s's message refused: %s", session.session_id, peer.principal.username, exc)
            await signalling.send(problem_message(exc, instance))


async def serve_peer(
    session: LiveSession,
    peer: Peer,
    signalling: Signalling,
    *,
    instance: str,
    on_join: JoinHook | None = None,
) -> str:
    """Serve one signalling connection until it ends; returns how (for the log and the audit trail).

    However it ends (bye, the client leaving, the session dropping the
    peer, this task being cancelled), the peer leaves the session and its
    peer connection is closed; the other participants are not disturbed.
    """
    reader = asyncio.ensure_future(_answer(session, peer, signalling, instance, on_join))
    dropped = asyncio.ensure_future(peer.dropped.wait())
    how = "left"
    try:
        await asyncio.wait({reader, dropped}, return_when=asyncio.FIRST_COMPLETED)
        if reader.done():
            how = reader.result()
            await signalling.close(SESSION_ENDED, "bye")
        elif peer.farewell is not None:
            farewell = peer.farewell
            how = f"dropped: {farewell.slug}"
            message = (
                {"type": "bye", "reason": farewell.detail}
                if farewell.code == SESSION_ENDED
                else error_message(farewell, instance)
            )
            await signalling.send(message)
            await signalling.close(farewell.code, farewell.reason)
    except SignallingClosedError:
        how = "left"
    finally:
        reader.cancel()
        dropped.cancel()
        await asyncio.shield(session.leave(peer))
    return how
