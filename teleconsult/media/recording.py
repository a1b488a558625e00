"""Recording a live session to a file: the sender's video and both sides' voices, as H.264 and AAC in MP4.

Where: ``<data_dir>/recordings/<consult id>/<session id>.mp4``, with a
manifest beside it (``<session id>.json``: the consult, the study, when it
started and ended, frames, size, status). The files are patient data like
the DICOM files under the same data directory, and are read only through
the live routes (authorised and audited like the consult).

What: the session's switching video track (``sources.SwitchingTrack``), so
a sender that reconnects, or another connection that takes over, continues
the same recording (the picture holds its last frame during the gap); and
one audio track mixing the sender's audio with the viewers' mix (the one
the sender hears), so the file has both sides of the conversation.

How: aiortc gives the server decoded frames only (its receivers always
decode), so a recording re-encodes; there is no packet pass-through of the
sender's VP8 or H.264. aiortc's ``MediaRecorder`` would encode on the event
loop with libx264's default ``medium`` preset (tens of milliseconds a 720p
frame, blocking every peer connection of the process); this recorder
encodes in its own thread with ``veryfast``, constant quality (CRF 26: what
crossed WebRTC at 1-2 Mbit/s is kept without visible loss), no B-frames and
a keyframe every 60 frames (2 s at 30 fps). That costs about one and a half
times what one viewer's VP8 encoder costs (docs/live.md has the figures).
Frames the encoder cannot keep up with are dropped (``dropped``), never
queued without bound. Each frame is copied before it is stamped and
encoded: the session's frames are shared with the viewers' encoders.

The MP4 is fragmented (a fragment per keyframe), so a file cut short by a
crash plays up to its last fragment; the index at its end (``mfra``) is
written when the session ends, and lets players seek.

The recorder also keeps the last ``keep_seconds`` of encoded video in
memory (a few megabytes), from which ``recent`` serves clips of "the last
N seconds" (``capture.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import os
import queue
import re
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

from teleconsult.media.tracks import SAMPLE_RATE, VoiceMix

__all__ = [
    "MEDIA_TYPE",
    "RecentVideo",
    "RecordingInfo",
    "RecordingStatus",
    "SessionRecorder",
    "delete_recording",
    "expired_recordings",
    "find_recording",
    "list_recordings",
    "recording_paths",
]

logger = logging.getLogger(__name__)

MEDIA_TYPE = "video/mp4"
VIDEO_TIME_BASE = fractions.Fraction(1, 90000)  # what SwitchingTrack stamps video with
AUDIO_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
PRESET = "veryfast"
CRF = 26
KEYFRAME_INTERVAL = 60  # frames: 2 s at 30 fps; a fragment of the MP4, and where clips can start
# Frames waiting for the encoder (about 1.5 s of 30 fps video, plus audio); more are dropped.
_QUEUE_LIMIT = 120
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class RecordingStatus(StrEnum):
    RECORDING = "recording"  # the session runs (or ran in a process that stopped without finishing it)
    COMPLETE = "complete"  # finalised when the session ended
    INTERRUPTED = "interrupted"  # the process stopped while recording: playable to its last fragment
    FAILED = "failed"  # the encoder or the disk failed; playable to its last fragment, if any


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """A recording's manifest (``<session id>.json``)."""

    session_id: str
    consult_id: str
    study_instance_uid: str | None
    patient_id: str | None  # for the audit rows of a retention delete
    status: RecordingStatus
    started_at: datetime
    ended_at: datetime | None = None
    duration_seconds: float = 0.0
    frames: int = 0
    dropped_frames: int = 0
    width: int = 0
    height: int = 0
    size: int = 0
    error: str | None = None
    media_type: str = MEDIA_TYPE

    def to_json(self) -> dict[str, Any]:
        value = asdict(self)
        value["status"] = self.status.value
        value["started_at"] = self.started_at.isoformat()
        value["ended_at"] = self.ended_at.isoformat() if self.ended_at else None
        return value

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> RecordingInfo:
        value = dict(value)
        value["status"] = RecordingStatus(value["status"])
        value["started_at"] = datetime.fromisoformat(value["started_at"])
        value["ended_at"] = datetime.fromisoformat(value["ended_at"]) if value.get("ended_at") else None
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in value.items() if k in known})


def recording_paths(root: Path, consult_id: str, session_id: str) -> tuple[Path, Path]:
    """(the MP4, its manifest) of a session; ``ValueError`` for ids that are not UUIDs (no path tricks)."""
    for name, value in (("consult_id", consult_id), ("session_id", session_id)):
        if not _ID.match(value):
            raise ValueError(f"{name} must be a lower-case UUID, not {value[:40]!r}")
    directory = root / consult_id
    return directory / f"{session_id}.mp4", directory / f"{session_id}.json"


def _read(manifest: Path) -> RecordingInfo | None:
    try:
        return RecordingInfo.from_json(json.loads(manifest.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("the recording manifest %s cannot be read; it is skipped", manifest, exc_info=True)
        return None


def list_recordings(root: Path, consult_id: str) -> list[RecordingInfo]:
    """The recordings of a consult, oldest first (``[]`` for none, or an id that is not a UUID)."""
    if not _ID.match(consult_id):
        return []
    directory = root / consult_id
    if not directory.is_dir():
        return []
    found = [info for path in directory.glob("*.json") if (info := _read(path)) is not None]
    return sorted(found, key=lambda info: info.started_at)


def find_recording(root: Path, session_id: str, consult_id: str | None = None) -> RecordingInfo | None:
    """A session's recording; with its consult unknown (the hub forgot the session), looked for in all."""
    if not _ID.match(session_id):
        return None
    if consult_id is not None:
        if not _ID.match(consult_id):
            return None
        return _read(recording_paths(root, consult_id, session_id)[1])
    if not root.is_dir():
        return None
    for manifest in root.glob(f"*/{session_id}.json"):
        return _read(manifest)
    return None


def expired_recordings(root: Path, before: datetime) -> list[RecordingInfo]:
    """Recordings that ended (or, interrupted, started) before ``before`` (retention), oldest first.

    The caller leaves out the sessions still running (a session lasts hours, a retention days).
    """
    if not root.is_dir():
        return []
    found = []
    for manifest in root.glob("*/*.json"):
        info = _read(manifest)
        if info is None:
            continue
        if (info.ended_at or info.started_at) < before:
            found.append(info)
    return sorted(found, key=lambda info: info.started_at)


def _write_manifest(path: Path, info: RecordingInfo, *, durable: bool) -> None:
    temporary = path.with_suffix(".json.tmp")
    with temporary.open("w", encoding="utf-8") as file:
        json.dump(info.to_json(), file, ensure_ascii=False, indent=1)
        if durable:
            file.flush()
            os.fsync(file.fileno())
    os.replace(temporary, path)


@dataclass(frozen=True, slots=True)
class RecentVideo:
    """The last seconds of a recording's video, encoded: enough to decode from a keyframe on."""

    codec: str
    extradata: bytes | None
    packets: tuple[tuple[float, bytes], ...]  # (seconds from the recording's start, H.264 access unit)
    newest: float  # time of the newest packet
    width: int
    height: int


@dataclass
class _Gop:
    start: float
    packets: list[tuple[float, bytes]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Item:
    kind: Literal["audio", "video"]
    frame: AudioFrame | VideoFrame
    pts: int = 0  # video: 90 kHz since the recording's first frame, on the recorder's arrival clock


class SessionRecorder:
    """Records one session to ``<root>/<consult>/<session>.mp4`` from ``start()`` until ``stop()``.

    Parameters
    ----------
    video
        The session's video (a ``MediaRelay`` subscription of its switching track); the recorder stops it.
    audio
        Tracks mixed into the recording's sound (subscriptions too); the recorder stops them.
    keep_seconds
        Encoded video kept in memory for clips of the last seconds (0: none).
    """

    def __init__(
        self,
        root: Path,
        *,
        session_id: str,
        consult_id: str,
        study_instance_uid: str | None,
        patient_id: str | None = None,
        video: MediaStreamTrack,
        audio: list[MediaStreamTrack],
        keep_seconds: float = 30.0,
    ) -> None:
        if keep_seconds < 0:
            raise ValueError(f"keep_seconds must be 0 or more, not {keep_seconds}")
        self.path, self.manifest = recording_paths(root, consult_id, session_id)
        self.session_id = session_id
        self.consult_id = consult_id
        self.study_instance_uid = study_instance_uid
        self.patient_id = patient_id
        self.keep_seconds = keep_seconds
        self._video = video
        self._inputs = audio
        self._mix = VoiceMix(name=f"{session_id} recording")
        for index, track in enumerate(audio):
            self._mix.add(index, track)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._queued = 0  # items in the queue (SimpleQueue has no bound of its own)
        self._count_lock = threading.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._thread: threading.Thread | None = None
        self._done: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        # the timeline: seconds since the first video frame reached the recorder
        self._first_arrival: float | None = None
        self._last_pts = -1
        self._audio_offset: int | None = None
        # written by the encoder thread; read by others under _lock
        self._lock = threading.Lock()
        self._gops: deque[_Gop] = deque()
        self._extradata: bytes | None = None
        self.started_at: datetime | None = None
        self.status = RecordingStatus.RECORDING
        self.frames = 0
        self.dropped = 0
        self.width = 0
        self.height = 0
        self.duration = 0.0
        self.error: str | None = None
        self.info: RecordingInfo | None = None  # the manifest once finished

    # -- the event loop's side ---------------------------------------------------------

    def start(self) -> None:
        """Start reading the tracks; the file is created with the first video frame."""
        if self._thread is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self._thread = threading.Thread(
            target=self._run, name=f"live {self.session_id[:8]} recorder", daemon=True
        )
        self._thread.start()
        name = f"live {self.session_id} recording"
        self._tasks = [
            loop.create_task(self._read_video(), name=f"{name} video"),
            loop.create_task(self._read_audio(), name=f"{name} audio"),
        ]

    def _offer(self, item: _Item) -> bool:
        with self._count_lock:
            if self._queued >= _QUEUE_LIMIT:
                return False
            self._queued += 1
        self._queue.put(item)
        return True

    async def _read_video(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await self._video.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, VideoFrame):
                continue
            if self.status is not RecordingStatus.RECORDING:
                return
            # Stamped on arrival here: the frame is shared with the viewers' encoders, and aiortc's
            # (PyAV's) rebase its pts and time base in their threads, so they cannot be trusted.
            now = loop.time()
            if self._first_arrival is None:
                self._first_arrival = now
            pts = max(self._last_pts + 1, round((now - self._first_arrival) * VIDEO_TIME_BASE.denominator))
            if self._offer(_Item("video", frame, pts)):
                self._last_pts = pts
            else:
                self.dropped += 1

    async def _read_audio(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await self._mix.recv()
            except MediaStreamError:
                return
            if self.status is not RecordingStatus.RECORDING:
                return
            if self._first_arrival is None or frame.pts is None:
                continue  # the recording starts with the first picture
            if self._audio_offset is None:
                self._audio_offset = round((loop.time() - self._first_arrival) * SAMPLE_RATE) - frame.pts
            frame.pts += self._audio_offset  # the mix's frames are this recorder's own
            self._offer(_Item("audio", frame))

    async def stop(self) -> RecordingInfo | None:
        """Stop reading, let the encoder finish the file; returns its manifest (None: no video came)."""
        if self._thread is None or self._done is None:
            return None
        if not self._stopping:
            self._stopping = True
            self._video.stop()
            for track in self._inputs:
                track.stop()
            self._mix.stop()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._queue.put(None)
        await asyncio.shield(self._done)
        self._thread.join()
        return self.info

    def recent(self, seconds: float) -> RecentVideo | None:
        """The encoded video of about the last ``seconds`` (from the keyframe before); None if none."""
        with self._lock:
            if not self._gops or self._extradata is None:
                return None
            newest = self._gops[-1].packets[-1][0] if self._gops[-1].packets else self._gops[-1].start
            start = 0
            for index, gop in enumerate(self._gops):
                if gop.start <= newest - seconds:
                    start = index
            packets = tuple(p for gop in list(self._gops)[start:] for p in gop.packets)
            return RecentVideo("h264", self._extradata, packets, newest, self.width, self.height)

    # -- the encoder's thread ------------------------------------------------------------

    def _run(self) -> None:
        container: av.container.OutputContainer | None = None
        streams: tuple[av.VideoStream, av.AudioStream] | None = None
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                with self._count_lock:
                    self._queued -= 1
                if self.status is not RecordingStatus.RECORDING:
                    continue
                try:
                    if streams is None:
                        if item.kind != "video":
                            continue
                        container, streams = self._open(item.frame)  # type: ignore[arg-type]
                    self._encode(container, streams, item)  # type: ignore[arg-type]
                except Exception as exc:
                    self._fail(exc)
            if container is not None and streams is not None:
                self._close(container, streams)
            else:
                self._finish()  # a file that could not be opened: its manifest says why (if it can)
        except Exception as exc:  # closing failed: the file is playable to its last fragment
            self._fail(exc)
            self._finish()
        finally:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.close()
            self._signal_done()

    def _signal_done(self) -> None:
        loop, done = self._loop, self._done
        if loop is None or done is None:
            return

        def _set() -> None:
            if not done.done():
                done.set_result(None)

        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(_set)

    def _open(
        self, frame: VideoFrame
    ) -> tuple[av.container.OutputContainer, tuple[av.VideoStream, av.AudioStream]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.started_at = datetime.now(UTC)
        self.width, self.height = frame.width - frame.width % 2, frame.height - frame.height % 2
        container = av.open(
            str(self.path),
            mode="w",
            format="mp4",
            options={"movflags": "frag_keyframe+empty_moov+default_base_moof"},
        )
        try:
            streams = self._add_streams(container)
        except Exception:
            container.close()
            raise
        self._write_manifest(RecordingStatus.RECORDING)
        logger.info("live %s: recording to %s (%dx%d)", self.session_id, self.path, self.width, self.height)
        return container, streams

    def _add_streams(self, container: av.container.OutputContainer) -> tuple[av.VideoStream, av.AudioStream]:
        video = container.add_stream(
            "libx264",
            rate=30,
            options={
                "preset": PRESET,
                "crf": str(CRF),
                "bf": "0",  # decoding order is display order: simpler clips, no negative DTS
                "g": str(KEYFRAME_INTERVAL),
                "keyint_min": str(KEYFRAME_INTERVAL),
                "sc_threshold": "0",  # keyframes at fixed times, whatever the picture does
                "threads": "2",
            },
        )
        video.width, video.height, video.pix_fmt = self.width, self.height, "yuv420p"
        video.codec_context.time_base = VIDEO_TIME_BASE
        audio = container.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
        audio.codec_context.time_base = AUDIO_TIME_BASE
        return video, audio

    def _encode(
        self,
        container: av.container.OutputContainer,
        streams: tuple[av.VideoStream, av.AudioStream],
        item: _Item,
    ) -> None:
        video, audio = streams
        if item.kind == "audio":
            for packet in audio.encode(item.frame):  # type: ignore[arg-type]
                container.mux(packet)
            return
        frame = _own_frame(item.frame, self.width, self.height)  # type: ignore[arg-type]
        frame.pts, frame.time_base = item.pts, VIDEO_TIME_BASE
        for packet in video.encode(frame):
            self._mux_video(container, video, packet)
        self.frames += 1

    def _mux_video(
        self, container: av.container.OutputContainer, video: av.VideoStream, packet: av.Packet
    ) -> None:
        at = float((packet.pts or 0) * packet.time_base) if packet.time_base else 0.0
        data = bytes(packet)
        container.mux(packet)
        self.duration = max(self.duration, at)
        if self.keep_seconds > 0:
            self._keep(at, data, packet.is_keyframe, video)

    def _keep(self, at: float, data: bytes, keyframe: bool, video: av.VideoStream) -> None:
        with self._lock:
            if self._extradata is None:
                extradata = video.codec_context.extradata
                self._extradata = bytes(extradata) if extradata else b""
            if keyframe or not self._gops:
                self._gops.append(_Gop(at))
            self._gops[-1].packets.append((at, data))
            # drop a group of pictures once the next one starts early enough to decode the window
            while len(self._gops) > 1 and self._gops[1].start <= at - self.keep_seconds:
                self._gops.popleft()

    def _close(
        self, container: av.container.OutputContainer, streams: tuple[av.VideoStream, av.AudioStream]
    ) -> None:
        video, audio = streams
        if self.status is RecordingStatus.RECORDING:
            with contextlib.suppress(Exception):
                for packet in video.encode(None):
                    self._mux_video(container, video, packet)
            with contextlib.suppress(Exception):
                for packet in audio.encode(None):
                    container.mux(packet)
        container.close()
        if self.status is RecordingStatus.RECORDING:
            self.status = RecordingStatus.COMPLETE
        self._finish()

    def _finish(self) -> None:
        if self.started_at is None:
            return
        self._write_manifest(self.status, ended=True)
        logger.info(
            "live %s: recording %s, %d frames (%d dropped), %.1f s",
            self.session_id,
            self.status.value,
            self.frames,
            self.dropped,
            self.duration,
        )

    def _fail(self, exc: BaseException) -> None:
        if self.status is RecordingStatus.RECORDING:
            logger.error("live %s: the recording failed and stops: %s", self.session_id, exc, exc_info=exc)
            self.status = RecordingStatus.FAILED
            self.error = f"{type(exc).__name__}: {exc}"[:300]

    def _write_manifest(self, status: RecordingStatus, *, ended: bool = False) -> None:
        assert self.started_at is not None
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        info = RecordingInfo(
            session_id=self.session_id,
            consult_id=self.consult_id,
            study_instance_uid=self.study_instance_uid,
            patient_id=self.patient_id,
            status=status,
            started_at=self.started_at,
            ended_at=datetime.now(UTC) if ended else None,
            duration_seconds=round(self.duration, 3),
            frames=self.frames,
            dropped_frames=self.dropped,
            width=self.width,
            height=self.height,
            size=size,
            error=self.error,
        )
        try:
            _write_manifest(self.manifest, info, durable=ended)
        except OSError:
            logger.exception("live %s: the recording's manifest cannot be written", self.session_id)
        if ended:
            self.info = info


def _own_frame(frame: VideoFrame, width: int, height: int) -> VideoFrame:
    """A copy of ``frame`` (yuv420p, ``width`` x ``height``) that this recorder may stamp and encode.

    The session's frames are shared with every viewer's encoder: giving one
    to PyAV's encoder would rebase its pts in place, and a viewer's keyframe
    request sets its picture type. The planes are never written, so reading
    them here is safe; a frame of another size (a new sender) is scaled.
    """
    if (frame.width, frame.height) != (width, height) or frame.format.name != "yuv420p":
        return frame.reformat(width=width, height=height, format="yuv420p")  # a new frame
    return VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")


def delete_recording(root: Path, info: RecordingInfo) -> None:
    """Remove a recording's file and manifest (and its consult's folder once empty)."""
    video, manifest = recording_paths(root, info.consult_id, info.session_id)
    video.unlink(missing_ok=True)
    manifest.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        video.parent.rmdir()  # only if empty
