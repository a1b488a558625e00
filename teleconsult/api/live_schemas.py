"""Request and response bodies of the live-session routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from teleconsult.config import IceServer
from teleconsult.media.capture import Snapshot, StoredClip
from teleconsult.media.recording import MEDIA_TYPE, RecordingInfo, RecordingStatus
from teleconsult.media.sessions import LiveSession, SessionStatus

__all__ = [
    "ClipCreate",
    "ClipPublic",
    "IceServerPublic",
    "LiveSessionCreate",
    "LiveSessionPublic",
    "RecordingPublic",
    "SnapshotPublic",
    "clip_public",
    "live_public",
    "recording_public",
]


class LiveSessionCreate(BaseModel):
    consult_id: str = Field(min_length=1, max_length=64, description="The consult examined live (a UUID)")


class IceServerPublic(BaseModel):
    """An ``RTCIceServer`` for the client's ``RTCPeerConnection``.

    The entries of TELECONSULT_ICE_SERVERS, and with TELECONSULT_TURN_URLS first a TURN entry whose
    ``username`` and ``credential`` were issued to the caller for this session (time-limited).
    """

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class LiveSessionPublic(BaseModel):
    id: str = Field(description="The session's id (a UUID)")
    consult_id: str
    status: SessionStatus = Field(
        description="waiting (no sender connected), live (a sender's peer connection is negotiated), ended"
    )
    ice_servers: list[IceServerPublic] = Field(
        description=(
            "Give these to RTCPeerConnection({iceServers}); empty = host candidates only. A TURN entry "
            "with credentials issued to the caller for this session comes first when the server issues "
            "them (TELECONSULT_TURN_URLS): they expire (the expiry is the username's first field), so "
            "ask for the session again rather than keep them"
        )
    )
    signal_path: str = Field(description="The signalling WebSocket's path (docs/live.md)")
    created_at: datetime
    started_by: str = Field(description="Username of who started the session")
    sender: str | None = Field(description="Username of the connected sender, if any")
    viewers: list[str] = Field(description="Usernames of the connected viewers")
    frames_received: int = Field(description="Video frames received from senders so far")
    has_frame: bool = Field(description="Whether a frame can be captured (POST .../snapshot)")
    ended_at: datetime | None = None
    end_reason: str | None = None
    recorded: bool = Field(
        False,
        description="Whether the session is recorded to a file (TELECONSULT_LIVE_RECORDING); tell patients",
    )


class SnapshotPublic(BaseModel):
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    sop_class_uid: str = Field(description="Secondary Capture Image Storage")
    rows: int
    columns: int


class ClipCreate(BaseModel):
    """Exactly one of ``last_seconds`` (what was just seen) or ``next_seconds`` (from now on)."""

    model_config = ConfigDict(extra="forbid")

    last_seconds: float | None = Field(
        None, gt=0, le=120, description="Store the last N seconds (the session must be recorded)"
    )
    next_seconds: float | None = Field(
        None, gt=0, le=120, description="Store the next N seconds (the request answers after them)"
    )

    @model_validator(mode="after")
    def _one(self) -> ClipCreate:
        if (self.last_seconds is None) == (self.next_seconds is None):
            raise ValueError("give exactly one of last_seconds and next_seconds")
        return self

    @property
    def seconds(self) -> float:
        return self.last_seconds if self.last_seconds is not None else self.next_seconds  # type: ignore[return-value]


class ClipPublic(BaseModel):
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    sop_class_uid: str = Field(description="Multi-frame True Color Secondary Capture Image Storage")
    rows: int
    columns: int
    frames: int = Field(description="Number of Frames")
    frame_time_ms: float = Field(description="Frame Time: milliseconds from one frame to the next")
    duration_seconds: float
    size: int = Field(description="Bytes of JPEG frame data")


class RecordingPublic(BaseModel):
    session_id: str
    consult_id: str
    status: RecordingStatus = Field(
        description=(
            "recording (the session runs), complete, interrupted (the server stopped while "
            "recording: playable up to its last seconds), failed (see error)"
        )
    )
    started_at: datetime
    ended_at: datetime | None
    duration_seconds: float
    frames: int
    dropped_frames: int = Field(description="Frames the encoder could not keep up with")
    width: int
    height: int
    size: int = Field(description="Bytes of the file")
    media_type: str = Field(MEDIA_TYPE, description="video/mp4: H.264 video, AAC audio (fragmented MP4)")
    download_path: str = Field(description="GET it for the file (Range requests supported)")
    error: str | None = None


def recording_public(info: RecordingInfo, *, running: bool) -> RecordingPublic:
    status = info.status
    if status is RecordingStatus.RECORDING and not running:
        status = RecordingStatus.INTERRUPTED
    return RecordingPublic(
        session_id=info.session_id,
        consult_id=info.consult_id,
        status=status,
        started_at=info.started_at,
        ended_at=info.ended_at,
        duration_seconds=info.duration_seconds,
        frames=info.frames,
        dropped_frames=info.dropped_frames,
        width=info.width,
        height=info.height,
        size=info.size,
        media_type=info.media_type,
        download_path=f"/api/live-sessions/{info.session_id}/recording",
        error=info.error,
    )


def clip_public(clip: StoredClip) -> ClipPublic:
    return ClipPublic(
        sop_instance_uid=clip.sop_instance_uid,
        series_instance_uid=clip.series_instance_uid,
        study_instance_uid=clip.study_instance_uid,
        sop_class_uid=clip.sop_class_uid,
        rows=clip.rows,
        columns=clip.columns,
        frames=clip.frames,
        frame_time_ms=clip.frame_time_ms,
        duration_seconds=clip.duration_seconds,
        size=clip.size,
    )


def _ice(server: IceServer) -> IceServerPublic:
    return IceServerPublic(urls=list(server.urls), username=server.username, credential=server.credential)


def live_public(session: LiveSession, participant: str | None = None) -> LiveSessionPublic:
    """The session as ``participant`` (a username; None: nobody in particular) is shown it.

    ``participant`` gets TURN credentials of its own (``session.ice_servers_for``); without one, only
    the configured ICE servers are shown. Runs on the session's event loop.
    """
    view = session.view()
    servers = session.ice_servers if participant is None else session.ice_servers_for(participant)
    return LiveSessionPublic(
        id=view.session_id,
        consult_id=view.consult_id,
        status=view.status,
        ice_servers=[_ice(server) for server in servers],
        signal_path=f"/api/live-sessions/{view.session_id}/signal",
        created_at=view.created_at,
        started_by=view.started_by,
        sender=view.sender,
        viewers=list(view.viewers),
        frames_received=view.frames_received,
        has_frame=view.has_frame,
        ended_at=view.ended_at,
        end_reason=view.end_reason,
        recorded=view.recorded,
    )


def snapshot_public(snapshot: Snapshot) -> SnapshotPublic:
    return SnapshotPublic(
        sop_instance_uid=snapshot.sop_instance_uid,
        series_instance_uid=snapshot.series_instance_uid,
        study_instance_uid=snapshot.study_instance_uid,
        sop_class_uid=snapshot.sop_class_uid,
        rows=snapshot.rows,
        columns=snapshot.columns,
    )
