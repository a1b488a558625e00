"""A capture card (or a video file) as an aiortc video track, opened once and shared.

An ultrasound machine's video output reaches the township PC through a
USB capture card, which the operating system shows as a camera: OpenCV's
``VideoCapture`` opens it by index (``0``) or, for tests and
demonstrations, a video file by path. The device can be opened only once,
so ``CaptureSource`` owns it and hands out ``MediaRelay`` subscriptions:
a reconnecting sender (a new peer connection) subscribes again without
reopening the card, as aiortc's ``webcam.py`` example does.

Reads block (a card delivers a frame every 1/fps seconds; a file is decoded
on the spot), so each read runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import threading
from pathlib import Path

import cv2
import numpy as np
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack, VideoStreamTrack
from av import VideoFrame

__all__ = ["CaptureError", "CaptureSource", "CaptureTrack"]

logger = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90000
_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)


class CaptureError(RuntimeError):
    """The capture device or file cannot be opened or read."""


class CaptureSource:
    """One capture device (index) or video file (path), opened on first use, closed by ``close``.

    Parameters
    ----------
    device
        A device index (``0`` for the first card) or a video file's path.
    fps
        Frames per second to send; default: what the device or file says (else 30).
    loop
        For files: start again at the end instead of ending the track.
    """

    def __init__(self, device: int | str | Path, *, fps: float | None = None, loop: bool = False) -> None:
        if isinstance(device, int) and device < 0:
            raise ValueError(f"device index must be 0 or more, not {device}")
        if fps is not None and not 0 < fps <= 120:
            raise ValueError(f"fps must be between 0 and 120, not {fps}")
        self.device = str(device) if isinstance(device, Path) else device
        self.loop = loop
        self._fps = fps
        self._capture: cv2.VideoCapture | None = None
        self._lock = threading.Lock()
        self._track: CaptureTrack | None = None
        self._relay = MediaRelay()

    @property
    def fps(self) -> float:
        if self._fps is not None:
            return self._fps
        capture = self._open()
        reported = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        return reported if 0 < reported <= 120 else 30.0

    def _open(self) -> cv2.VideoCapture:
        with self._lock:
            if self._capture is None:
                capture = cv2.VideoCapture(self.device)
                if not capture.isOpened():
                    raise CaptureError(f"the capture source {self.device!r} cannot be opened")
                self._capture = capture
            return self._capture

    def read(self) -> np.ndarray | None:
        """The next frame (BGR, blocking), or None at the end of a file that does not loop."""
        capture = self._open()
        with self._lock:
            ok, image = capture.read()
            if not ok and self.loop and isinstance(self.device, str):
                capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, image = capture.read()
        return image if ok else None

    def subscribe(self) -> MediaStreamTrack:
        """A track of this source for one peer connection (the device is read once for all)."""
        if self._track is None or self._track.readyState != "live":
            self._open()
            self._track = CaptureTrack(self)
        return self._relay.subscribe(self._track, buffered=False)

    def close(self) -> None:
        """Stop the shared track and release the device."""
        if self._track is not None:
            self._track.stop()
            self._track = None
        with self._lock:
            if self._capture is not None:
                self._capture.release()
                self._capture = None


class CaptureTrack(VideoStreamTrack):
    """Frames of a ``CaptureSource`` at its own frame rate (not aiortc's fixed 30), on a 90 kHz clock."""

    def __init__(self, source: CaptureSource) -> None:
        super().__init__()
        self.source = source
        self._period = 1.0 / source.fps
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            wait = self._start + self._count * self._period - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        try:
            image = await asyncio.to_thread(self.source.read)
        except CaptureError:
            logger.exception("reading the capture source failed")
            image = None
        if image is None or self.readyState != "live":
            self.stop()
            raise MediaStreamError
        frame = VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = round(self._count * self._period * VIDEO_CLOCK_RATE)
        frame.time_base = _TIME_BASE
        self._count += 1
        return frame
