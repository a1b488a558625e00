"""One VP8 encode of a session's video, sent to every viewer.

aiortc's receivers always decode, and a ``MediaRelay`` subscription hands
each viewer's sender decoded frames, which it encodes again: at 1280x720 one
VP8 encoder costs about a fifth of a core (bench/live), so each added viewer
cost as much as the first. ``SharedVp8Video`` encodes the session's video
once, in a thread of its own, and gives each viewer an ``EncodedVideoTrack``
whose ``recv()`` returns the encoded ``av.Packet``: aiortc's RTP sender
packetises a packet as it is (``Vp8Encoder.pack``) instead of encoding it.

What a shared encoder cannot do per viewer, and how it is made up for:

- Keyframes: a viewer that joins, or whose queue overflowed, waits for a
  keyframe and asks for one (the next frame is encoded as a keyframe for
  everybody: a few kilobytes more, once). A viewer's own RTCP PLI does not
  reach the shared encoder (aiortc keeps it in the RTP sender), so a
  keyframe also comes every ``keyframe_interval`` frames (5 s at 30 fps):
  a viewer that lost packets beyond what NACK retransmissions repair
  recovers within that.
- Bitrate: one target for everyone (``TELECONSULT_LIVE_VIDEO_BITRATE``)
  instead of each viewer's own estimate; a county network that cannot carry
  it needs a lower setting.

Viewers negotiate VP8 for this (every browser has it); a viewer whose offer
has no VP8 gets the per-viewer encoding of before (``sessions.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame
from av.packet import Packet

__all__ = ["EncodedVideoTrack", "SharedVp8Video"]

logger = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)  # what SwitchingTrack stamps video with
_QUEUE_PACKETS = 30  # a second of video: more than that behind, and the viewer starts again at a keyframe


class EncodedVideoTrack(MediaStreamTrack):
    """A viewer's video as VP8 packets of the session's shared encoding."""

    kind = "video"

    def __init__(self, shared: SharedVp8Video) -> None:
        super().__init__()
        self._shared = shared
        self._queue: asyncio.Queue[Packet | None] = asyncio.Queue(maxsize=_QUEUE_PACKETS)
        self._waiting_for_keyframe = True
        self.dropped = 0

    def offer(self, packet: Packet | None) -> None:
        """Called on the event loop with each packet (``None``: the video ended)."""
        if packet is None:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)
            return
        if self._waiting_for_keyframe:
            if not packet.is_keyframe:
                return
            self._waiting_for_keyframe = False
        try:
            self._queue.put_nowait(packet)
        except asyncio.QueueFull:
            # too far behind: what is queued is stale, and a gap breaks VP8 until the next keyframe
            self.dropped += self._queue.qsize()
            while not self._queue.empty():
                self._queue.get_nowait()
            self._waiting_for_keyframe = True
            self._shared.request_keyframe()

    async def recv(self) -> Packet:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            self.stop()
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            self._shared.unsubscribe(self)
        super().stop()


class SharedVp8Video:
    """Encodes ``source`` (decoded frames) once for all its subscribers, while it has any."""

    def __init__(
        self,
        source: MediaStreamTrack,
        *,
        bitrate: int,
        keyframe_interval: int = 150,
        name: str = "",
    ) -> None:
        self.source = source
        self.bitrate = bitrate
        self.keyframe_interval = keyframe_interval
        self.name = name
        self.frames = 0
        self.keyframes = 0
        self._subscribers: list[EncodedVideoTrack] = []
        self._keyframe_wanted = True
        self._task: asyncio.Task[None] | None = None
        self._codec: av.video.codeccontext.VideoCodecContext | None = None
        # one thread: libvpx is not re-entrant, and frames must be encoded in order
        self._last_request = 0.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"vp8-shared-{name}"[:30])
        self._since_keyframe = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> EncodedVideoTrack:
        track = EncodedVideoTrack(self)
        self._subscribers.append(track)
        self._keyframe_wanted = True  # a new viewer waits for one: always granted
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"shared-vp8-{self.name}")
        return track

    def unsubscribe(self, track: EncodedVideoTrack) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(track)

    def request_keyframe(self) -> None:
        """The next frame is encoded as a keyframe, unless one was asked for less than a second ago.

        A viewer that keeps falling behind would otherwise make every frame a keyframe: larger
        frames, more to send, and further behind.
        """
        now = time.monotonic()
        if now - self._last_request >= 1.0:
            self._last_request = now
            self._keyframe_wanted = True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._subscribers:
                try:
                    frame = await self.source.recv()
                except MediaStreamError:
                    break
                if not isinstance(frame, VideoFrame):
                    continue
                keyframe = self._keyframe_wanted or self._since_keyframe >= self.keyframe_interval
                self._keyframe_wanted = False
                packets = await loop.run_in_executor(self._executor, self._encode, frame, keyframe)
                for packet in packets:
                    if packet.is_keyframe:
                        self.keyframes += 1
                        self._since_keyframe = 0
                    for subscriber in list(self._subscribers):
                        subscriber.offer(packet)
                self._since_keyframe += 1
                self.frames += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("live %s: the shared video encoding failed", self.name)
        finally:
            for subscriber in list(self._subscribers):
                subscriber.offer(None)

    def _encode(self, frame: VideoFrame, keyframe: bool) -> list[Packet]:
        """One frame to VP8 packets (in the encoder's thread). The frame is shared: it is not changed."""
        image = frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")
        codec = self._codec
        if codec is None or (codec.width, codec.height) != (image.width, image.height):
            codec = self._codec = self._open(image.width, image.height)
            keyframe = True
        # The picture type is the one thing set on the (shared) frame, for this call only: a copy of
        # a 720p frame would cost more than the encode. Other consumers read its pixels, not its type.
        kind = image.pict_type
        image.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        try:
            packets = list(codec.encode(image))
        finally:
            image.pict_type = kind
        for packet in packets:
            packet.pts = frame.pts
            packet.time_base = frame.time_base or VIDEO_TIME_BASE
        return packets

    def _open(self, width: int, height: int) -> av.video.codeccontext.VideoCodecContext:
        """A libvpx encoder set as aiortc sets its own (real time, constant bitrate), at ``bitrate``."""
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height = width, height
        codec.bit_rate = self.bitrate
        codec.pix_fmt = "yuv420p"
        codec.time_base = VIDEO_TIME_BASE
        codec.gop_size = 3000  # keyframes come when asked for (join, overflow, interval)
        codec.qmin, codec.qmax = 2, 56
        codec.options = {
            "bufsize": str(self.bitrate),
            "cpu-used": "-6",
            "deadline": "realtime",
            "lag-in-frames": "0",
            "minrate": str(self.bitrate),
            "maxrate": str(self.bitrate),
            "noise-sensitivity": "4",
            "overshoot-pct": "15",
            "partitions": "0",
            "static-thresh": "1",
            "undershoot-pct": "100",
        }
        codec.thread_count = max(1, min(4, multiprocessing.cpu_count() - 1, (width * height) // (640 * 480)))
        return codec

    async def close(self) -> None:
        for subscriber in list(self._subscribers):
            subscriber.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self.source.stop()
        self._executor.shutdown(wait=False)
