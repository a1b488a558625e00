"""A real server on loopback with a consult to examine live, and aiortc peers to take part in it.

The server (uvicorn in a thread, its own event loop) holds the session's
peer connections; the test's peers run in the test's own loop
(``asyncio.run``), as a township PC and specialists' browsers would, and
talk to it over a real WebSocket and real UDP. ``Served.on_server`` runs a
function on the server's loop, where the hub may be inspected.

The community is tests/conftest.py's: ``sono1`` (TOWN01) requests a consult
on a TOWN01 ultrasound study from the COUNTY specialists; ``specialist``
and ``specialist2`` view it; ``sono2`` (TOWN02) cannot see it; ``admin``
sees it but takes no part.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack, VideoStreamTrack
from argon2 import PasswordHasher
from av import AudioFrame, VideoFrame
from fastapi import FastAPI
from pydicom.dataset import Dataset
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import teleconsult.security
from teleconsult.api.app import create_app
from teleconsult.config import Settings
from teleconsult.media import MediaHub, MediaOptions
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.store import InstanceStore
from tests.conftest import COMMUNITY, PASSWORD, USERS
from tests.factories import encode, make_image
from tests.uvicorn_thread import serving

# Every test here talks over sockets and UDP: a hang is a failure, not a wait for the global timeout.
pytestmark = pytest.mark.timeout(90)

T = TypeVar("T")
RED = (230, 30, 30)
BLUE = (30, 30, 230)
WAIT = 20.0  # seconds any one step may take on a busy two-core machine

# Short timers: a session without a sender ends within a test.
OPTIONS = MediaOptions(
    idle_timeout=30.0, max_seconds=600.0, max_viewers=3, auth_timeout=5.0, check_interval=0.2
)


@pytest.fixture(autouse=True)
def _cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Signing in several users: argon2 at its lowest cost (hashes carry their own parameters)."""
    monkeypatch.setattr(
        teleconsult.security, "_HASHER", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@pytest.fixture
def app_settings(make_settings) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(consult_overdue_check_seconds=0)  # type: ignore[no-any-return]


@dataclass
class Served:
    """The running server: its store, hub and port, tokens per user, and the consult to examine."""

    store: InstanceStore
    hub: MediaHub
    port: int
    study: Dataset
    consult_id: str = ""
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, user: str) -> str:
        if user not in self._tokens:
            response = httpx.post(
                f"{self.base}/api/auth/token", data={"username": user, "password": PASSWORD}, timeout=10
            )
            assert response.status_code == 200, response.text
            self._tokens[user] = str(response.json()["access_token"])
        return self._tokens[user]

    def call(self, method: str, user: str | None, path: str, json: Any = None) -> httpx.Response:
        return self.call_with(method, user, path, {}, json)

    def call_with(
        self, method: str, user: str | None, path: str, headers: dict[str, str], json: Any = None
    ) -> httpx.Response:
        """``call`` with more request headers (``Range``)."""
        if user:
            headers = {**headers, "Authorization": f"Bearer {self.token(user)}"}
        return httpx.request(method, f"{self.base}{path}", headers=headers, json=json, timeout=60)

    async def acall(self, method: str, user: str | None, path: str, json: Any = None) -> httpx.Response:
        """``call`` from inside a test's event loop (the REST call must not block the test's peers)."""
        return await asyncio.to_thread(self.call, method, user, path, json)

    def start_session(self, user: str = "sono1") -> dict[str, Any]:
        response = self.call("POST", user, "/api/live-sessions", {"consult_id": self.consult_id})
        assert response.status_code in (200, 201), response.text
        return response.json()  # type: ignore[no-any-return]

    def on_server(self, function: Callable[[], T]) -> T:
        """``function()`` run on the server's event loop (where sessions may be read)."""
        assert self.hub.loop is not None
        done: asyncio.Future[T] = asyncio.run_coroutine_threadsafe(_call(function), self.hub.loop)  # type: ignore[assignment]
        return done.result(timeout=WAIT)

    def on_server_async(self, function: Callable[[], Awaitable[T]]) -> T:
        """``await function()`` on the server's event loop."""
        assert self.hub.loop is not None
        return asyncio.run_coroutine_threadsafe(function(), self.hub.loop).result(timeout=WAIT)  # type: ignore[arg-type]

    def signal_url(self, session_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/api/live-sessions/{session_id}/signal"


async def _call(function: Callable[[], T]) -> T:
    return function()


def _community(store: InstanceStore) -> None:
    identity = IdentityStore(store.index.engine)
    for code, name, parent in COMMUNITY:
        identity.add_organisation(code, name, parent)
    for username, (role, organisation) in USERS.items():
        identity.add_user(username, PASSWORD, role, organisation)
    identity.add_user("specialist2", PASSWORD, "specialist", "COUNTY")


@pytest.fixture
def media_options() -> MediaOptions:
    return OPTIONS


@pytest.fixture
def configure_app() -> Callable[[FastAPI], None]:
    """What a test module adds to the app before it serves (the browser test: its page)."""
    return lambda app: None


@pytest.fixture
def server_port() -> int:
    """The port the server listens on (0: any free one)."""
    return 0


@pytest.fixture
def served(
    app_settings: Settings,
    store: InstanceStore,
    media_options: MediaOptions,
    configure_app: Callable[[FastAPI], None],
    server_port: int,
) -> Iterator[Served]:
    _community(store)
    study = make_image(modality="US", rows=16, columns=16)
    store.store_instance(
        encode(study),
        study.file_meta.TransferSyntaxUID,
        calling_ae_title="TOWNUS",
        source_organisation="TOWN01",
    )
    app = create_app(app_settings, store)
    app.state.media_options = media_options
    configure_app(app)
    with serving(app, server_port) as port:
        running = Served(store, app.state.media, port, study)
        running.consult_id = _consult(running, study)
        yield running


def _consult(running: Served, study: Dataset) -> str:
    """The urgent consult sono1 requests on the study from the county."""
    response = running.call(
        "POST",
        "sono1",
        "/api/consults",
        {
            "study_instance_uid": study.StudyInstanceUID,
            "urgency": "urgent",
            "question": "肝内低回声结节，请实时会诊。",
            "target_organisation": "COUNTY",
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# -- synthetic media ---------------------------------------------------------------------------


class ColourTrack(VideoStreamTrack):
    """A 160x120 picture of one colour (RGB) at 30 fps; ``colour`` may be changed while it runs."""

    def __init__(self, colour: tuple[int, int, int] = RED) -> None:
        super().__init__()
        self.colour = colour

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = np.empty((120, 160, 3), dtype=np.uint8)
        image[:] = self.colour
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneTrack(AudioStreamTrack):
    """A 440 Hz tone, 48 kHz mono, in 20 ms frames."""

    async def recv(self) -> AudioFrame:
        frame = await super().recv()  # silence, paced, stamped at 8 kHz
        samples = 960
        start = int(frame.pts or 0) * 6
        t = (np.arange(samples) + start) / 48000
        tone = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
        out = AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        out.sample_rate = 48000
        out.pts = start
        out.time_base = fractions.Fraction(1, 48000)
        return out


def mean_colour(frame: VideoFrame) -> tuple[float, float, float]:
    image = frame.to_ndarray(format="rgb24")
    r, g, b = (float(image[..., i].mean()) for i in range(3))
    return r, g, b


def looks_like(colour: tuple[int, int, int]) -> Callable[[VideoFrame], bool]:
    def check(frame: VideoFrame) -> bool:
        return all(abs(a - b) < 40 for a, b in zip(mean_colour(frame), colour, strict=True))

    return check


async def frame_where(
    track: MediaStreamTrack, check: Callable[[VideoFrame], bool], timeout: float = WAIT
) -> VideoFrame:
    """The first frame of ``track`` passing ``check`` (AssertionError after ``timeout``)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await track.recv()
            assert isinstance(frame, VideoFrame)
            if check(frame):
                return frame


async def loud_audio(track: MediaStreamTrack, timeout: float = WAIT) -> float:
    """The RMS of the first audio frame of ``track`` that is clearly not silence."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await track.recv()
            assert isinstance(frame, AudioFrame)
            rms = float(np.sqrt(np.mean(frame.to_ndarray().astype(np.float64) ** 2)))
            if rms > 500:
                return rms


# -- participants ------------------------------------------------------------------------------


@dataclass
class Participant:
    """A client of a live session: its signalling socket, its peer connection, what it received."""

    user: str
    ws: ClientConnection
    pc: RTCPeerConnection
    received: dict[str, MediaStreamTrack] = field(default_factory=dict)
    annotations: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    channel: Any = None

    async def message(self, timeout: float = WAIT) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        return value

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def track(self, kind: str) -> MediaStreamTrack:
        async with asyncio.timeout(WAIT):
            while kind not in self.received:
                await asyncio.sleep(0.01)
        return self.received[kind]

    async def channel_open(self) -> None:
        async with asyncio.timeout(WAIT):
            while self.channel.readyState != "open":
                await asyncio.sleep(0.01)

    async def annotation(self, timeout: float = WAIT) -> dict[str, Any]:
        return await asyncio.wait_for(self.annotations.get(), timeout)

    async def close(self) -> None:
        await self.pc.close()
        await self.ws.close()


async def open_socket(served: Served, user: str, session_id: str) -> ClientConnection:
    token = await asyncio.to_thread(served.token, user)
    ws = await connect(served.signal_url(session_id), open_timeout=WAIT)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    assert json.loads(await asyncio.wait_for(ws.recv(), WAIT)) == {"type": "ready"}
    return ws


def new_peer() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def negotiate(participant: Participant, role: str) -> dict[str, Any]:
    """Offer as ``role`` on the participant's socket; the server's reply (answer applied)."""
    pc = participant.pc
    await pc.setLocalDescription(await pc.createOffer())
    await participant.send({"type": "offer", "sdp": pc.localDescription.sdp, "role": role})
    reply = await participant.message()
    if reply["type"] == "answer":
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
    return reply


def _prepare(participant: Participant) -> None:
    pc = participant.pc
    pc.on("track", lambda track: participant.received.setdefault(track.kind, track))
    participant.channel = channel = pc.createDataChannel("annotations")

    @channel.on("message")
    def _message(message: str | bytes) -> None:
        participant.annotations.put_nowait(json.loads(message))


async def join(
    served: Served,
    user: str,
    session_id: str,
    role: str,
    *,
    video: MediaStreamTrack | None = None,
    audio: MediaStreamTrack | None = None,
    ws: ClientConnection | None = None,
) -> Participant:
    """A participant with a negotiated peer connection (asserting the server answered)."""
    ws = ws or await open_socket(served, user, session_id)
    participant = Participant(user, ws, new_peer())
    pc = participant.pc
    if role == "sender":
        pc.addTrack(video or ColourTrack())
    else:
        pc.addTransceiver("video", direction="recvonly")
    if audio is not None:
        pc.addTrack(audio)
    else:
        pc.addTransceiver("audio", direction="recvonly")
    _prepare(participant)
    reply = await negotiate(participant, role)
    assert reply["type"] == "answer", reply
    return participant


async def start_watched_session(served: Served) -> tuple[str, Participant, Participant]:
    """A session of the consult with sono1 sending and the specialist seeing its picture."""
    session = (
        await served.acall("POST", "sono1", "/api/live-sessions", {"consult_id": served.consult_id})
    ).json()
    sender = await join(served, "sono1", session["id"], "sender")
    viewer = await join(served, "specialist", session["id"], "viewer")
    await frame_where(await viewer.track("video"), looks_like(RED))
    return session["id"], sender, viewer


async def end_session(served: Served, session_id: str) -> None:
    ended = await served.acall("POST", "sono1", f"/api/live-sessions/{session_id}/end")
    assert ended.json()["status"] == "ended", ended.text


async def one_clean_session(served: Served) -> None:
    """A watched session, ended through the API; both clients see the close (1000) and close."""
    session_id, sender, viewer = await start_watched_session(served)
    await end_session(served, session_id)
    for participant in (sender, viewer):
        assert await close_code(participant.ws) == 1000
        await participant.pc.close()


async def renegotiate(participant: Participant, role: str, *, video: MediaStreamTrack) -> dict[str, Any]:
    """A new peer connection on the same socket (as a sender whose network changed would)."""
    await participant.pc.close()
    participant.pc = new_peer()
    participant.received.clear()
    participant.pc.addTrack(video)
    participant.pc.addTransceiver("audio", direction="recvonly")
    _prepare(participant)
    return await negotiate(participant, role)


async def close_code(ws: ClientConnection, timeout: float = WAIT) -> int | None:
    """The code the server closes ``ws`` with (messages before the close are skipped)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


def problem_of(reply: dict[str, Any]) -> tuple[str, str, int]:
    """``(type, problem code, problem status)`` of a signalling reply."""
    return reply["type"], reply["problem"]["code"], reply["problem"]["status"]


async def drain(track: MediaStreamTrack) -> None:
    """Read ``track`` until it ends (a receiver nobody reads keeps decoded frames queued)."""
    try:
        while True:
            await track.recv()
    except MediaStreamError:
        return
