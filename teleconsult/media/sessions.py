"""One live exam: its participants, their peer connections with the server, and the media between them.

Every participant holds one ``RTCPeerConnection`` with the server (no mesh):

- the **sender** (the township side: a sonographer's capture card or a
  browser's camera) sends video and, optionally, audio; it receives the
  viewers' voices mixed into one audio track (``VoiceMix``);
- each **viewer** (a county specialist) receives the sender's video and
  audio through ``MediaRelay`` subscriptions to the session's switching
  tracks (``sources.py``), and sends its voice to the mix.

aiortc decodes what it receives, so each viewer's peer connection encodes
the relayed frames itself (in aiortc's worker threads, off the event
loop); no viewer's encoder waits for another's (``buffered=False``: a slow
viewer skips frames instead of queueing them). An ``annotations`` data
channel opened by any participant carries checked JSON (``annotations.py``)
to every other participant.

A new offer on the same signalling connection makes a new peer connection
and only then closes the old one; a new sender connection takes the video
over from the previous one, which is told so and dropped. Viewers keep
their peer connections across both. Ending the session closes every peer
connection and stops every track, which ends the relay's and the mix's
tasks.

When recordings are on, the first sender's connection starts the session's
``SessionRecorder`` (``recording.py``) on the same switching tracks, so the
recording goes on across reconnections; ending the session finishes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from aiortc import (
    RTCConfiguration,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from teleconsult.media.annotations import (
    ANNOTATIONS_LABEL,
    AnnotationError,
    annotation_error,
    forwarded,
    parse_annotation,
)
from teleconsult.media.errors import (
    InvalidCandidateError,
    InvalidOfferError,
    RoleDeniedError,
    SessionEndedError,
    SessionFullError,
)
from teleconsult.media.recording import RecentVideo, RecordingInfo, SessionRecorder
from teleconsult.media.shared_video import SharedVp8Video
from teleconsult.media.sources import SwitchingTrack
from teleconsult.media.tracks import VoiceMix
from teleconsult.notifications.protocol import Closing

if TYPE_CHECKING:
    from pathlib import Path

    from aiortc import RTCDataChannel
    from av import VideoFrame

    from teleconsult.config import IceServer
    from teleconsult.domain.consults import Consult
    from teleconsult.domain.identity import Principal
    from teleconsult.media.turn import TurnIssuer

__all__ = [
    "REPLACED",
    "SESSION_ENDED",
    "LiveSession",
    "ParticipantRole",
    "Peer",
    "SessionStatus",
    "SessionView",
]

logger = logging.getLogger(__name__)

SESSION_ENDED = 1000  # normal closure, after a "bye" message
REPLACED = 4009  # another sender connection took over


class ParticipantRole(StrEnum):
    SENDER = "sender"
    VIEWER = "viewer"


class SessionStatus(StrEnum):
    WAITING = "waiting"  # no sender connected (yet, or any more)
    LIVE = "live"  # a sender's peer connection is up
    ENDED = "ended"


@dataclass(eq=False)
class Peer:
    """One signalling connection, what its user may be, and the peer connection it negotiated."""

    peer_id: int
    principal: Principal
    roles: frozenset[ParticipantRole]
    joined_at: datetime
    role: ParticipantRole | None = None
    pc: RTCPeerConnection | None = None
    channel: RTCDataChannel | None = None
    outputs: list[MediaStreamTrack] = field(default_factory=list)
    dropped: asyncio.Event = field(default_factory=asyncio.Event)
    farewell: Closing | None = None
    # the loop time ``pc`` was put in place, and whether it has connected since
    negotiated_at: float = 0.0
    connected: bool = False

    def drop(self, farewell: Closing) -> None:
        """Tell the signalling connection to say ``farewell`` and close (the session let go of it)."""
        if self.farewell is None:
            self.farewell = farewell
        self.dropped.set()


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session as the API shows it."""

    session_id: str
    consult_id: str
    status: SessionStatus
    created_at: datetime
    started_by: str
    sender: str | None
    viewers: tuple[str, ...]
    frames_received: int
    has_frame: bool
    ended_at: datetime | None
    end_reason: str | None
    recorded: bool


def _now() -> datetime:
    return datetime.now(UTC)


def _configuration(ice_servers: Iterable[IceServer]) -> RTCConfiguration:
    # An empty list, not None: aiortc's default is Google's public STUN server, which a
    # county network may not reach (and patient sessions should not announce themselves to).
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=list(server.urls), username=server.username, credential=server.credential)
            for server in ice_servers
        ]
    )


class LiveSession:
    """A live exam of one consult; lives in the ``MediaHub`` until it ends."""

    def __init__(
        self,
        session_id: str,
        consult: Consult,
        started_by: Principal,
        *,
        ice_servers: Iterable[IceServer] = (),
        turn: TurnIssuer | None = None,
        max_viewers: int = 8,
        video_bitrate: int = 600_000,
        recordings: Path | None = None,
        keep_seconds: float = 30.0,
    ) -> None:
        if max_viewers < 1:
            raise ValueError(f"max_viewers must be at least 1, not {max_viewers}")
        loop = asyncio.get_running_loop()
        self.session_id = session_id
        self.consult_id = consult.consult_id
        self.study_instance_uid = consult.study_instance_uid
        self.patient_id = consult.patient_id
        self.source_organisation = consult.source_organisation
        self.started_by = started_by.username
        self.created_at = _now()
        self.started = loop.time()
        self.idle_since = loop.time()  # when the session last had no sender (for the idle timeout)
        self.status = SessionStatus.WAITING
        self.ended_at: datetime | None = None
        self.end_reason: str | None = None
        self.ended_by: str | None = None
        self.snapshots = 0
        self.ice_servers = tuple(ice_servers)  # TELECONSULT_ICE_SERVERS, the same for everyone
        self.turn = turn
        self.max_viewers = max_viewers
        self.video = SwitchingTrack("video", depth=2, name=session_id)
        self.audio = SwitchingTrack("audio", depth=10, name=session_id)
        self.voices = VoiceMix(name=session_id)
        self.relay = MediaRelay()
        self.video_bitrate = video_bitrate
        self.shared_video: SharedVp8Video | None = None  # made for the first VP8 viewer
        self.recordings = recordings  # where the session is recorded; None: not recorded
        self.keep_seconds = keep_seconds
        self.recorder: SessionRecorder | None = None
        self.recording: RecordingInfo | None = None  # the recording's manifest once finished
        self._peers: dict[int, Peer] = {}
        self._sender: Peer | None = None
        self._next_peer = 1

    # -- reading -----------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.status is SessionStatus.ENDED

    @property
    def sender(self) -> Peer | None:
        return self._sender

    def peers(self) -> list[Peer]:
        return list(self._peers.values())

    def peer_connections(self) -> int:
        return sum(1 for peer in self._peers.values() if peer.pc is not None)

    def viewers(self) -> list[Peer]:
        return [p for p in self._peers.values() if p.role is ParticipantRole.VIEWER and p.pc is not None]

    def latest_frame(self) -> VideoFrame | None:
        """The newest video frame the current (or last) sender sent; None before the first."""
        return self.video.latest

    def recent_video(self, seconds: float) -> RecentVideo | None:
        """The recording's last ``seconds`` of encoded video (clips); None when not recorded."""
        return self.recorder.recent(seconds) if self.recorder is not None else None

    def ice_servers_for(self, participant: str) -> tuple[IceServer, ...]:
        """The ICE servers for ``participant``'s peer connection: TURN credentials of its own, then the rest.

        No credentials once the session has ended (nothing is left to relay).
        """
        if self.turn is None or self.ended:
            return self.ice_servers
        return (self.turn.issue(self.session_id, participant), *self.ice_servers)

    def server_ice_servers(self) -> tuple[IceServer, ...]:
        """The ICE servers of the server's own peer connections (first TURN entry is the one aiortc uses)."""
        if self.turn is None or not self.turn.for_server:
            return self.ice_servers
        return (self.turn.issue(self.session_id), *self.ice_servers)

    def next_snapshot(self) -> int:
        """The instance number of the session's next capture (1, 2, ...)."""
        self.snapshots += 1
        return self.snapshots

    def view(self) -> SessionView:
        return SessionView(
            session_id=self.session_id,
            consult_id=self.consult_id,
            status=self.status,
            created_at=self.created_at,
            started_by=self.started_by,
            sender=self._sender.principal.username if self._sender is not None else None,
            viewers=tuple(sorted({p.principal.username for p in self.viewers()})),
            frames_received=self.video.received,
            has_frame=self.video.latest is not None,
            ended_at=self.ended_at,
            end_reason=self.end_reason,
            recorded=self.recordings is not None,
        )

    # -- joining and negotiating --------------------------------------------------

    def join(self, principal: Principal, roles: Iterable[ParticipantRole]) -> Peer:
        """A new signalling connection of ``principal``, who may take ``roles``; no media yet."""
        if self.ended:
            raise SessionEndedError(f"live session {self.session_id} has ended")
        peer = Peer(self._next_peer, principal, frozenset(roles), _now())
        self._next_peer += 1
        self._peers[peer.peer_id] = peer
        return peer

    async def offer(self, peer: Peer, role: ParticipantRole, sdp: str) -> str:
        """Answer ``peer``'s offer to take ``role``: a new peer connection replacing its previous one.

        Raises ``LiveError`` subclasses (the session and the peer's previous
        connection stay as they were): the role is not the user's, the
        session is full or ended, the SDP cannot be used.
        """
        role = ParticipantRole(role)
        self._check_offer(peer, role)
        pc = RTCPeerConnection(_configuration(self.server_ice_servers()))
        incoming: dict[str, MediaStreamTrack] = {}
        pc.on("track", lambda track: incoming.setdefault(track.kind, track))
        pc.on("datachannel", lambda channel: self._channel_opened(peer, pc, channel))
        outputs: list[MediaStreamTrack] = []
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except Exception as exc:  # aiortc's parser raises many kinds; none of them is ours
                raise InvalidOfferError(f"the offer's SDP cannot be used: {_short(exc)}") from exc
            outputs = self._attach_outputs(pc, role, incoming, vp8=_offers_vp8(sdp))
            try:
                await pc.setLocalDescription(await pc.createAnswer())
            except Exception as exc:
                raise InvalidOfferError(f"no answer can be made to this offer: {_short(exc)}") from exc
            if self.ended:
                raise SessionEndedError(f"live session {self.session_id} has ended")
        except BaseException:
            await self._close(pc, outputs)
            raise
        old_pc, old_outputs = self._swap(peer, role, pc, outputs, incoming)

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState == "connected" and peer.pc is pc:
                peer.connected = True
            if pc.connectionState == "failed":
                logger.info("live %s: peer %d's connection failed", self.session_id, peer.peer_id)
                await self.detach(peer, pc)

        if old_pc is not None:
            await self._close(old_pc, old_outputs)
        logger.info(
            "live %s: %s is %s (peer %d)", self.session_id, peer.principal.username, role.value, peer.peer_id
        )
        return str(pc.localDescription.sdp)

    def _check_offer(self, peer: Peer, role: ParticipantRole) -> None:
        if self.ended:
            raise SessionEndedError(f"live session {self.session_id} has ended")
        if role not in peer.roles:
            may = " or ".join(sorted(r.value for r in peer.roles)) or "nothing"
            raise RoleDeniedError(
                f"{peer.principal.username} may not be the {role.value} of live session "
                f"{self.session_id} (only the consult's requesting side sends); offer as {may}"
            )
        joining = role is ParticipantRole.VIEWER and peer.role is not ParticipantRole.VIEWER
        if joining and len(self.viewers()) >= self.max_viewers:
            raise SessionFullError(
                f"live session {self.session_id} has {self.max_viewers} viewers, as many as it takes; "
                "try again when one leaves"
            )

    def _attach_outputs(
        self,
        pc: RTCPeerConnection,
        role: ParticipantRole,
        incoming: dict[str, MediaStreamTrack],
        *,
        vp8: bool = False,
    ) -> list[MediaStreamTrack]:
        """What the server sends on this connection, on the m-lines the offer has.

        A viewer whose offer has VP8 gets the session's one shared encoding
        (``shared_video``); any other gets its own encoder of the relayed frames.
        """
        kinds = {transceiver.kind for transceiver in pc.getTransceivers()}
        outputs: list[MediaStreamTrack] = []
        if role is ParticipantRole.SENDER:
            if "video" not in incoming:
                raise InvalidOfferError(
                    "a sender's offer must send video (a video m-line, sendonly or sendrecv)"
                )
            if "audio" in kinds:
                outputs.append(self.relay.subscribe(self.voices, buffered=False))
        else:
            if "video" not in kinds:
                raise InvalidOfferError("a viewer's offer must receive video (a video m-line, recvonly)")
            if vp8 and self.video_bitrate > 0:
                outputs.append(self._shared().subscribe())
                for transceiver in pc.getTransceivers():
                    if transceiver.kind == "video":
                        transceiver.setCodecPreferences(_VP8_CODECS)
            else:
                outputs.append(self.relay.subscribe(self.video, buffered=False))
            if "audio" in kinds:
                outputs.append(self.relay.subscribe(self.audio, buffered=False))
        for track in outputs:
            pc.addTrack(track)
        return outputs

    def _shared(self) -> SharedVp8Video:
        if self.shared_video is None:
            self.shared_video = SharedVp8Video(
                self.relay.subscribe(self.video, buffered=False),
                bitrate=self.video_bitrate,
                name=self.session_id[:8],
            )
        return self.shared_video

    def _swap(
        self,
        peer: Peer,
        role: ParticipantRole,
        pc: RTCPeerConnection,
        outputs: list[MediaStreamTrack],
        incoming: dict[str, MediaStreamTrack],
    ) -> tuple[RTCPeerConnection | None, list[MediaStreamTrack]]:
        """Put the new connection in place (no await: nothing sees it half done); returns the old one."""
        old_pc, old_outputs = peer.pc, peer.outputs
        peer.pc, peer.outputs, peer.role, peer.channel = pc, outputs, role, None
        peer.negotiated_at, peer.connected = asyncio.get_running_loop().time(), False
        self.voices.remove(peer.peer_id)
        if role is ParticipantRole.SENDER:
            previous, self._sender = self._sender, peer
            self.video.switch(incoming["video"])
            self.audio.switch(incoming.get("audio"))
            self.status = SessionStatus.LIVE
            if self.recorder is None and self.recordings is not None:
                self._record(self.recordings)
            if previous is not None and previous is not peer:
                previous.drop(
                    Closing(
                        REPLACED,
                        "sender-replaced",
                        f"another connection of {peer.principal.username} took over as the sender of live "
                        f"session {self.session_id}",
                        409,
                    )
                )
        else:
            if self._sender is peer:
                self._lose_sender()
            if "audio" in incoming:
                self.voices.add(peer.peer_id, incoming["audio"])
        return old_pc, old_outputs

    def _record(self, root: Path) -> None:
        """Start the recording: the switching video, and the sender's audio mixed with the viewers' mix."""
        self.recorder = SessionRecorder(
            root,
            session_id=self.session_id,
            consult_id=self.consult_id,
            study_instance_uid=self.study_instance_uid,
            patient_id=self.patient_id,
            video=self.relay.subscribe(self.video, buffered=False),
            audio=[
                self.relay.subscribe(self.audio, buffered=False),
                self.relay.subscribe(self.voices, buffered=False),
            ],
            keep_seconds=self.keep_seconds,
        )
        self.recorder.start()

    def _lose_sender(self) -> None:
        self._sender = None
        self.video.switch(None)
        self.audio.switch(None)
        if not self.ended:
            self.status = SessionStatus.WAITING
            self.idle_since = asyncio.get_running_loop().time()

    async def candidate(self, peer: Peer, candidate: RTCIceCandidate | None) -> None:
        """A remote ICE candidate of ``peer`` (None: the end of its candidates)."""
        if peer.pc is None:
            raise InvalidCandidateError("send an offer before candidates: there is no connection to add to")
        try:
            await peer.pc.addIceCandidate(candidate)
        except Exception as exc:
            raise InvalidCandidateError(f"the candidate cannot be added: {_short(exc)}") from exc

    # -- annotations ----------------------------------------------------------------

    def _channel_opened(self, peer: Peer, pc: RTCPeerConnection, channel: RTCDataChannel) -> None:
        if channel.label != ANNOTATIONS_LABEL:
            logger.debug("live %s: data channel %r ignored", self.session_id, channel.label)
            return
        if peer.pc is not pc:
            return
        peer.channel = channel
        channel.on("message", lambda message: self._annotate(peer, channel, message))

    def _annotate(self, peer: Peer, channel: RTCDataChannel, message: str | bytes) -> None:
        if peer.channel is not channel or peer.role is None:
            return
        try:
            annotation = parse_annotation(message)
        except AnnotationError as exc:
            channel.send(annotation_error(str(exc)))
            return
        text = forwarded(annotation, username=peer.principal.username, role=peer.role.value, time=_now())
        for other in self._peers.values():
            if other is not peer and other.channel is not None and other.channel.readyState == "open":
                other.channel.send(text)

    # -- leaving and ending -----------------------------------------------------------

    async def detach(self, peer: Peer, pc: RTCPeerConnection | None = None) -> None:
        """Close ``peer``'s connection (only ``pc``, if given: a newer one is left alone); it stays joined."""
        if peer.pc is None or (pc is not None and peer.pc is not pc):
            return
        closing, outputs = peer.pc, peer.outputs
        peer.pc, peer.outputs, peer.channel = None, [], None
        self.voices.remove(peer.peer_id)
        if self._sender is peer:
            self._lose_sender()
        await self._close(closing, outputs)

    async def drop_unconnected(self, now: float, timeout: float) -> int:
        """Close the peer connections still not connected ``timeout`` seconds after they were negotiated.

        aiortc reports an ICE failure late or never: a viewer whose
        candidates nothing can reach (a firewall, a NAT without TURN) stays
        "checking" for minutes, holding its UDP sockets and tasks here. Its
        peer stays joined and may offer again (with TURN, say); returns how
        many were closed.
        """
        stale = [
            (peer, peer.pc)
            for peer in self._peers.values()
            if peer.pc is not None and not peer.connected and now - peer.negotiated_at >= timeout
        ]
        for peer, pc in stale:
            logger.info(
                "live %s: peer %d's connection did not connect in %g s (ICE failed); closed",
                self.session_id,
                peer.peer_id,
                timeout,
            )
            await self.detach(peer, pc)
        return len(stale)

    async def leave(self, peer: Peer) -> None:
        """The signalling connection ended: its peer connection goes with it; nobody else notices."""
        self._peers.pop(peer.peer_id, None)
        await self.detach(peer)

    async def end(self, reason: str, *, by: str) -> bool:
        """End the session: every peer is told and dropped, every connection and track closed.

        Returns False if it had ended already.
        """
        if self.ended:
            return False
        self.status = SessionStatus.ENDED
        self.ended_at, self.end_reason, self.ended_by = _now(), reason, by
        farewell = Closing(
            SESSION_ENDED, "session-ended", f"live session {self.session_id} ended: {reason}", 410
        )
        peers = list(self._peers.values())
        self._peers.clear()
        self._sender = None
        for peer in peers:
            peer.drop(farewell)
        self.video.stop()
        self.audio.stop()
        self.voices.stop()
        closing = []
        if self.shared_video is not None:
            closing.append(self.shared_video.close())
        for peer in peers:
            if peer.pc is not None:
                closing.append(self._close(peer.pc, peer.outputs))
                peer.pc, peer.outputs, peer.channel = None, [], None
        await asyncio.gather(*closing)
        if self.recorder is not None:
            try:
                self.recording = await self.recorder.stop()
            except Exception:
                logger.exception("live %s: finishing the recording failed", self.session_id)
        # The hub remembers ended sessions (their state and recording, for the API) by the
        # hundred: what they held for the media goes now, or each kept megabytes (the shared
        # encoder's buffers, the recorder's last seconds of video).
        self.shared_video = None
        self.recorder = None
        logger.info("live %s ended by %s: %s", self.session_id, by, reason)
        return True

    async def _close(self, pc: RTCPeerConnection, outputs: list[MediaStreamTrack]) -> None:
        for track in outputs:
            track.stop()
        try:
            await pc.close()
        except Exception:  # a transport that failed half-way; it is gone either way
            logger.warning("live %s: closing a peer connection failed", self.session_id, exc_info=True)


def _offers_vp8(sdp: str) -> bool:
    """Whether the offer's video can be VP8 (every browser's can)."""
    return "VP8/90000" in sdp


_VP8_CODECS = [
    codec for codec in RTCRtpSender.getCapabilities("video").codecs if codec.mimeType == "video/VP8"
]


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]
