"""Where a live session's media comes from: the current sender's tracks, behind one stable track.

Viewers subscribe (through ``MediaRelay``) to a ``SwitchingTrack``, never to
the sender's own remote track. When the sender reconnects, the session
switches the upstream to the new connection's track; the viewers' peer
connections, their senders and the relay's subscriptions stay as they are,
and the next frame they encode is the new connection's.

Frames are re-stamped on the way through: each upstream numbers its frames
from its own random origin, and a viewer's encoder turns a timestamp that
jumps backwards at a switch into an RTP timestamp that does too, which
browsers show as a frozen picture. Video is stamped on the arrival clock
(90 kHz), audio by counting samples.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from typing import Literal

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame
from av.frame import Frame
from av.packet import Packet

__all__ = ["VIDEO_TIME_BASE", "SwitchingTrack"]

logger = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)


class SwitchingTrack(MediaStreamTrack):
    """A track relaying whichever upstream track is current; it outlives every upstream.

    Parameters
    ----------
    kind
        ``"video"`` or ``"audio"``.
    depth
        Frames kept for the consumer when it falls behind; older ones are
        dropped (late video is worthless, and audio delay must not grow).
    name
        For log lines and task names (the session id).
    """

    def __init__(self, kind: Literal["audio", "video"], *, depth: int, name: str) -> None:
        if kind not in ("audio", "video"):
            raise ValueError(f"kind must be 'audio' or 'video', not {kind!r}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        super().__init__()
        self.kind = kind
        self.name = name
        self._queue: asyncio.Queue[Frame | None] = asyncio.Queue(maxsize=depth)
        self._upstream: MediaStreamTrack | None = None
        self._pump: asyncio.Task[None] | None = None
        self._origin: float | None = None
        self._last_pts = -1
        self._samples = 0
        self.latest: VideoFrame | None = None  # the newest video frame received (snapshots)
        self.received = 0

    @property
    def upstream(self) -> MediaStreamTrack | None:
        return self._upstream

    def switch(self, upstream: MediaStreamTrack | None) -> None:
        """Read from ``upstream`` from now on (None: nothing until the next switch)."""
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        self._upstream = upstream
        if upstream is not None and self.readyState == "live":
            self._pump = asyncio.get_running_loop().create_task(
                self._run(upstream), name=f"live {self.name} {self.kind} source"
            )

    async def _run(self, upstream: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await upstream.recv()
            except MediaStreamError:
                logger.debug("live %s: the sender's %s track ended", self.name, self.kind)
                return
            if isinstance(frame, Packet):  # remote tracks are decoded; a packet is not ours to relay
                continue
            self._stamp(frame)
            self.received += 1
            if isinstance(frame, VideoFrame):
                self.latest = frame
            if self._queue.full():
                self._queue.get_nowait()
            self._queue.put_nowait(frame)

    def _stamp(self, frame: Frame) -> None:
        if isinstance(frame, AudioFrame):
            frame.pts = self._samples
            frame.time_base = fractions.Fraction(1, frame.sample_rate)
            self._samples += frame.samples
            return
        now = asyncio.get_running_loop().time()
        if self._origin is None:
            self._origin = now
        pts = max(self._last_pts + 1, round((now - self._origin) * VIDEO_CLOCK_RATE))
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE

    async def recv(self) -> Frame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        """End the track for good: the consumer (the relay) gets ``MediaStreamError`` and lets go."""
        if self.readyState != "live":
            return
        self.switch(None)
        self.latest = None
        super().stop()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
