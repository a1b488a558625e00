"""Clips: a few seconds of video collected as JPEG frames, ready for ``to_dicom.build_video_clip``.

Each frame is JPEG-encoded as it arrives (``ClipFrames.add``, in a worker
thread), so a clip in memory is its compressed frames only, never hundreds
of decoded pictures. Frames are timed as they arrive (a ``MediaRelay``
shares one frame object among consumers, and aiortc's encoders rebase its
``pts`` in their threads, so a shared frame's own time cannot be trusted),
and the clip's frame time is its duration over its frame count, which is
what a viewer's Cine playback needs. Every frame is scaled to the first
one's size (a sender that reconnects with another resolution).

``collect_clip`` reads "the next N seconds" of any aiortc video track: the
server reads a session's video with it, the township adapter a capture
card's. The server's "last N seconds" come from its recording
(``teleconsult.media.capture``) through the same ``ClipFrames``.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import UTC, datetime

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from device_adapters.video.to_dicom import JPEG_QUALITY, encode_jpeg_frame

__all__ = ["MAX_FPS", "Clip", "ClipFrames", "NotEnoughFramesError", "collect_clip"]

MAX_FPS = 60  # frames a clip keeps per second at most (a bound on its size, not a target)


class NotEnoughFramesError(ValueError):
    """Fewer than two frames arrived: there is no clip to make."""


@dataclass(frozen=True, slots=True)
class Clip:
    """Frames (JPEG Baseline, 4:2:2) of one size and the time they span."""

    frames: tuple[bytes, ...]
    rows: int
    columns: int
    duration: float  # seconds from the first frame to the last
    started_at: datetime  # when the first frame was captured (aware)

    @property
    def frame_time_ms(self) -> float:
        """Milliseconds from one frame to the next, on average (Cine Frame Time)."""
        return self.duration * 1000.0 / (len(self.frames) - 1)

    @property
    def size(self) -> int:
        return sum(len(frame) for frame in self.frames)


class ClipFrames:
    """Frames being gathered into a ``Clip``; ``add`` is blocking (scaling, JPEG): call it off the loop."""

    def __init__(self, *, max_frames: int, quality: int = JPEG_QUALITY) -> None:
        if max_frames < 2:
            raise ValueError(f"max_frames must be at least 2, not {max_frames}")
        self.max_frames = max_frames
        self.quality = quality
        self._frames: list[bytes] = []
        self._first: float | None = None
        self._last = 0.0
        self._size: tuple[int, int] | None = None  # (width, height) of the first frame
        self._started_at: datetime | None = None

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def full(self) -> bool:
        return len(self._frames) >= self.max_frames

    def elapsed(self, at: float) -> float:
        """Seconds from the first frame to a frame at ``at`` (0 before the first)."""
        return 0.0 if self._first is None else at - self._first

    def add(self, frame: VideoFrame, at: float) -> None:
        """Encode ``frame`` (taken at ``at`` seconds on the track's clock) as the clip's next frame."""
        if self.full or (self._first is not None and at <= self._last):
            return  # full, or out of order (never expected; a frame time must grow)
        if self._size is None:
            self._size = (frame.width, frame.height)
            self._first = at
            self._started_at = datetime.now(UTC)
        width, height = self._size
        rgb = frame.to_ndarray(format="rgb24", width=width, height=height)  # a new frame: no side effects
        self._frames.append(encode_jpeg_frame(rgb, quality=self.quality))
        self._last = at

    def clip(self) -> Clip:
        """The clip so far; ``NotEnoughFramesError`` with fewer than two frames."""
        if len(self._frames) < 2 or self._size is None or self._first is None or self._started_at is None:
            raise NotEnoughFramesError(f"a clip needs at least two frames; {len(self._frames)} arrived")
        width, height = self._size
        return Clip(tuple(self._frames), height, width, self._last - self._first, self._started_at)


async def collect_clip(
    track: MediaStreamTrack,
    seconds: float,
    *,
    max_fps: int = MAX_FPS,
    quality: int = JPEG_QUALITY,
    gap_timeout: float = 5.0,
) -> Clip:
    """The next ``seconds`` of ``track`` (the track is not stopped here: the caller owns it).

    Ends early when the track ends or no frame comes for ``gap_timeout``
    seconds (a sender that left); ``NotEnoughFramesError`` if by then fewer
    than two frames came. A slow encoder skips frames rather than falling
    behind (a ``MediaRelay`` subscription without buffer hands over the
    newest frame).
    """
    if not 0 < seconds <= 3600:
        raise ValueError(f"seconds must be above 0 and at most 3600, not {seconds}")
    loop = asyncio.get_running_loop()
    frames = ClipFrames(max_frames=max(2, math.ceil(seconds * max_fps) + 1), quality=quality)
    while not frames.full:
        try:
            frame = await asyncio.wait_for(track.recv(), gap_timeout)
        except (MediaStreamError, TimeoutError):
            break
        if not isinstance(frame, VideoFrame):
            continue
        at = loop.time()
        if frames.elapsed(at) > seconds + 1e-3:
            break
        await asyncio.to_thread(frames.add, frame, at)
    return frames.clip()
