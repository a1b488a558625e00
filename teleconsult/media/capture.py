"""Snapshots and clips: the sender's video stored as DICOM in the consult's study.

``store_snapshot`` is synchronous and slow (colour conversion, building the
data set, hashing and writing it, an index transaction): callers run it in
a worker thread. It stores through ``InstanceStore.store_instance`` as if
the study's own organisation had sent it, like the report outputs
(``teleconsult.consults.outputs.producer``), so the index, ``instance.stored``
notifications and forwarding rules apply to it as to any image.

Each session's captures are one series, whose UID is derived from the
session id (UUID version 5, in the ``2.25`` form or under
``TELECONSULT_UID_ROOT``); each capture is a new instance in it.

A clip (``store_clip``) is a Multi-frame True Color Secondary Capture of
JPEG frames (``device_adapters.video.to_dicom.build_video_clip``): "the next
N seconds" are read from the session's video as they come
(``device_adapters.video.clip.collect_clip``), "the last N seconds" are
decoded from what the session's recording keeps in memory
(``clip_from_recent``).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import av
from av import VideoFrame
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from device_adapters.video.clip import MAX_FPS, Clip, ClipFrames
from device_adapters.video.to_dicom import ClipKind, build_video_capture, build_video_clip
from teleconsult import __version__
from teleconsult.consults.outputs.dicom import encode_data_set
from teleconsult.consults.outputs.study import read_study_material
from teleconsult.domain.uids import generate_uid
from teleconsult.errors import ConflictError
from teleconsult.media.recording import RecentVideo
from teleconsult.storage.store import InstanceStore

__all__ = [
    "Snapshot",
    "SnapshotTarget",
    "StoredClip",
    "clip_from_recent",
    "series_uid",
    "store_clip",
    "store_snapshot",
]

MANUFACTURER = "teleconsult"


@dataclass(frozen=True, slots=True)
class SnapshotTarget:
    """Where a capture goes and who asked for it."""

    session_id: str
    consult_id: str
    study_instance_uid: str | None
    source_organisation: str
    instance_number: int
    operator: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    rows: int
    columns: int


def series_uid(session_id: str, root: str | None) -> str:
    """The UID of a session's capture series (the same for every capture of the session)."""
    number = uuid.uuid5(uuid.UUID(session_id), "live-capture-series").int
    return f"2.25.{number}" if root is None else f"{root}.{number}"[:64].rstrip(".")


@dataclass(frozen=True, slots=True)
class StoredClip:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    rows: int
    columns: int
    frames: int
    frame_time_ms: float
    duration_seconds: float
    size: int  # bytes of JPEG frames


def _study_header(store: InstanceStore, target: SnapshotTarget) -> Dataset:
    if target.study_instance_uid is None:
        raise ConflictError(
            f"consult {target.consult_id} has no study yet; a capture is stored in the consult's study, "
            "so link the study to the consult first"
        )
    material = read_study_material(store, target.study_instance_uid)
    if material is None:
        raise ConflictError(
            f"no instance of study {target.study_instance_uid} is stored; a capture copies the study's "
            "patient and study attributes from one"
        )
    return material.header


def store_snapshot(
    store: InstanceStore, frame: VideoFrame, target: SnapshotTarget, *, calling_ae_title: str
) -> Snapshot:
    """Build and store the capture of ``frame``; ``ConflictError`` (409) if the study is not stored."""
    header = _study_header(store, target)
    captured_at = datetime.now(UTC)
    root = store.settings.uid_root
    ds = build_video_capture(
        header,
        frame.to_ndarray(format="rgb24"),
        series_instance_uid=series_uid(target.session_id, root),
        sop_instance_uid=generate_uid(root),
        instance_number=target.instance_number,
        captured_at=captured_at,
        manufacturer=MANUFACTURER,
        software_versions=__version__,
        operator=target.operator,
    )
    store.store_instance(
        encode_data_set(ds),
        ExplicitVRLittleEndian,
        calling_ae_title=calling_ae_title,
        source_organisation=target.source_organisation,
    )
    return Snapshot(
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
    )


def store_clip(
    store: InstanceStore, clip: Clip, target: SnapshotTarget, *, calling_ae_title: str
) -> StoredClip:
    """Build and store ``clip`` as a multi-frame Secondary Capture; 409 if the study is not stored."""
    header = _study_header(store, target)
    root = store.settings.uid_root
    ds = build_video_clip(
        header,
        clip.frames,
        frame_time_ms=clip.frame_time_ms,
        kind=ClipKind.SECONDARY_CAPTURE,
        series_instance_uid=series_uid(target.session_id, root),
        sop_instance_uid=generate_uid(root),
        instance_number=target.instance_number,
        captured_at=clip.started_at,
        manufacturer=MANUFACTURER,
        software_versions=__version__,
        operator=target.operator,
    )
    store.store_instance(
        encode_data_set(ds),
        JPEGBaseline8Bit,
        calling_ae_title=calling_ae_title,
        source_organisation=target.source_organisation,
    )
    return StoredClip(
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        rows=clip.rows,
        columns=clip.columns,
        frames=len(clip.frames),
        frame_time_ms=round(clip.frame_time_ms, 3),
        duration_seconds=round(clip.duration, 3),
        size=clip.size,
    )


def clip_from_recent(recent: RecentVideo, seconds: float, *, max_fps: int = MAX_FPS) -> Clip:
    """The last ``seconds`` of a recording's video, decoded and made JPEG frames (blocking: a thread).

    Decoding starts at the keyframe before the window (``recent`` starts
    there) and keeps the frames inside it. ``NotEnoughFramesError`` with
    fewer than two.
    """
    decoder = av.CodecContext.create(recent.codec, "r")
    if recent.extradata:
        decoder.extradata = recent.extradata
    start = recent.newest - seconds
    frames = ClipFrames(max_frames=max(2, math.ceil(seconds * max_fps) + 1))
    times = [at for at, _ in recent.packets]
    for index, (_at, data) in enumerate(recent.packets):
        packet = av.Packet(data)
        packet.pts = index  # comes back on the frame: which packet's time it has
        for frame in decoder.decode(packet):
            _keep(frames, frame, times, start)
    for frame in decoder.decode(None):
        _keep(frames, frame, times, start)
    return frames.clip()


def _keep(frames: ClipFrames, frame: VideoFrame, times: list[float], start: float) -> None:
    if frame.pts is None or not 0 <= frame.pts < len(times):
        return
    at = times[frame.pts]
    if at >= start - 1e-6:
        frames.add(frame, at)
