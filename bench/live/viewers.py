"""The receiving side, in a process of its own: teleconsult viewers, or the baseline's bare receiver.

Decoding 720p for four viewers costs a good part of a core; in the process
that also encodes the sender's video it would slow the sender and blur what
the benchmark measures. The bench process starts this one
(``multiprocessing``, spawn) and drives it over a pipe, one case at a time:

- ``("teleconsult", {"url", "tokens", "codec"})``: one viewer per token, each
  signing in on the session's signalling WebSocket and offering ``recvonly``
  video; answered ``("ready", {"codecs": [...]})`` once every answer is applied;
- ``("direct", {"offer"})``: the baseline's receiver answers the sender's
  offer directly; answered ``("answer", {"sdp", "codecs"})``;
- ``("stop", None)``: every peer connection and socket is closed; answered
  ``("arrivals", {"viewers": [[(seq, monotonic), ...], ...], "unreadable": [...]})``;
- ``("exit", None)``: the process ends.

A failure is answered ``("error", "<what happened>")``. Each viewer reads
every decoded frame from the moment its track arrives (aiortc would
otherwise queue them), notes ``time.monotonic()`` as ``recv()`` returns and
then reads the frame's stamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.live.stamp import read_stamp

__all__ = ["codec_of", "prefer_codec", "run"]

_TIMEOUT = 30.0


def prefer_codec(transceiver: RTCRtpTransceiver, codec: str) -> None:
    """Offer only ``codec`` (``vp8`` or ``h264``, with its RTX) on a video transceiver."""
    wanted = f"video/{codec}".lower()
    codecs = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for c in codecs if c.mimeType.lower() == wanted]
    if not chosen:
        raise ValueError(f"aiortc offers no {codec} codec")
    transceiver.setCodecPreferences(chosen + [c for c in codecs if c.mimeType.lower() == "video/rtx"])


def codec_of(sdp: str) -> str:
    """The codec an answer chose for its video m-line (its first payload type), e.g. ``VP8``."""
    lines = sdp.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("m=video"):
            parts = line.split()
            if len(parts) < 4:
                return "none"
            payload = parts[3]
            for other in lines[i + 1 :]:
                if other.startswith("m="):
                    break
                if other.startswith(f"a=rtpmap:{payload} "):
                    return other.split()[1].split("/")[0]
    return "none"


@dataclass
class _Viewer:
    pc: RTCPeerConnection
    ws: ClientConnection | None = None
    arrivals: list[tuple[int, float]] = field(default_factory=list)
    unreadable: int = 0
    task: asyncio.Task[None] | None = None

    def on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video" and self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if not isinstance(frame, VideoFrame):
                continue
            seq = read_stamp(frame)
            if seq is None:
                self.unreadable += 1
            else:
                self.arrivals.append((seq, now))

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(ConnectionClosed):  # the server may have closed it first
                await self.ws.send(json.dumps({"type": "bye"}))
                await self.ws.close()
        await self.pc.close()
        if self.task is not None:
            self.task.cancel()


def _peer() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))  # host candidates only: loopback


async def _reply(ws: ClientConnection, kind: str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), _TIMEOUT))
    if message.get("type") != kind:
        raise RuntimeError(f"the server answered {message!r} instead of {kind!r}")
    return message


async def _join_teleconsult(viewer: _Viewer, url: str, token: str, codec: str) -> str:
    """Sign ``viewer`` in on the session's socket and negotiate; the codec the server chose."""
    viewer.pc.on("track", viewer.on_track)
    prefer_codec(viewer.pc.addTransceiver("video", direction="recvonly"), codec)
    viewer.ws = await connect(url, open_timeout=_TIMEOUT)
    await viewer.ws.send(json.dumps({"type": "auth", "token": token}))
    await _reply(viewer.ws, "ready")
    await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
    offer = {"type": "offer", "sdp": viewer.pc.localDescription.sdp, "role": "viewer"}
    await viewer.ws.send(json.dumps(offer))
    answer = await _reply(viewer.ws, "answer")
    await viewer.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    return codec_of(answer["sdp"])


async def _answer_direct(viewer: _Viewer, offer: str) -> str:
    """The baseline's receiver: answer the sender's offer (its SDP)."""
    viewer.pc.on("track", viewer.on_track)
    await viewer.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    await viewer.pc.setLocalDescription(await viewer.pc.createAnswer())
    return str(viewer.pc.localDescription.sdp)


async def _serve(conn: Connection) -> None:
    viewers: list[_Viewer] = []
    while True:
        command, body = await asyncio.to_thread(conn.recv)
        try:
            if command == "exit":
                return
            if command == "teleconsult":
                codecs = []
                for token in body["tokens"]:
                    viewers.append(viewer := _Viewer(_peer()))
                    codecs.append(await _join_teleconsult(viewer, body["url"], token, body["codec"]))
                conn.send(("ready", {"codecs": codecs}))
            elif command == "direct":
                viewers.append(viewer := _Viewer(_peer()))
                answer = await _answer_direct(viewer, body["offer"])
                conn.send(("answer", {"sdp": answer, "codecs": [codec_of(answer)]}))
            elif command == "stop":
                for viewer in viewers:
                    await viewer.close()
                conn.send(
                    (
                        "arrivals",
                        {
                            "viewers": [viewer.arrivals for viewer in viewers],
                            "unreadable": [viewer.unreadable for viewer in viewers],
                        },
                    )
                )
                viewers = []
            else:
                conn.send(("error", f"unknown command {command!r}"))
        except Exception:
            for viewer in viewers:
                await viewer.close()
            viewers = []
            conn.send(("error", traceback.format_exc()))


def run(conn: Connection) -> None:
    """The process's entry point (``multiprocessing.Process(target=run, args=(child_end,))``)."""
    try:
        asyncio.run(_serve(conn))
    finally:
        conn.close()
