"""Request and response bodies of the live-session routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from teleconsult.config import IceServer
from teleconsult.media.capture import Snapshot
from teleconsult.media.sessions import LiveSession, SessionStatus

__all__ = ["IceServerPublic", "LiveSessionCreate", "LiveSessionPublic", "SnapshotPublic", "live_public"]


class LiveSessionCreate(BaseModel):
    consult_id: str = Field(min_length=1, max_length=64, description="The consult examined live (a UUID)")


class IceServerPublic(BaseModel):
    """An ``RTCIceServer`` for the client's ``RTCPeerConnection`` (TELECONSULT_ICE_SERVERS)."""

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
        description="Give these to RTCPeerConnection({iceServers}); empty = host candidates only"
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


class SnapshotPublic(BaseModel):
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    sop_class_uid: str = Field(description="Secondary Capture Image Storage")
    rows: int
    columns: int


def _ice(server: IceServer) -> IceServerPublic:
    return IceServerPublic(urls=list(server.urls), username=server.username, credential=server.credential)


def live_public(session: LiveSession) -> LiveSessionPublic:
    view = session.view()
    return LiveSessionPublic(
        id=view.session_id,
        consult_id=view.consult_id,
        status=view.status,
        ice_servers=[_ice(server) for server in session.ice_servers],
        signal_path=f"/api/live-sessions/{view.session_id}/signal",
        created_at=view.created_at,
        started_by=view.started_by,
        sender=view.sender,
        viewers=list(view.viewers),
        frames_received=view.frames_received,
        has_frame=view.has_frame,
        ended_at=view.ended_at,
        end_reason=view.end_reason,
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
