"""Live exams: sessions over REST, signalling over WebSocket, captures into the consult's study.

The REST routes are plain functions (FastAPI runs them in its threadpool,
where the consult lookups, the audit rows and the DICOM capture may block)
and reach the ``MediaHub`` on the event loop through ``anyio.from_thread``:
peer connections, tracks and sessions are only ever touched on the loop.
The hub lives on ``app.state.media`` for as long as the app runs (this
router's lifespan), and its end closes every session.

A session the caller may not see answers 404 like one that does not
exist, and the attempt is audited as denied. Audit actions: ``live.start``,
``live.read``, ``live.end``, ``live.snapshot``, ``live.clip``,
``live.recording.search`` (a consult's recordings listed),
``live.recording.read`` (a recording downloaded) (HTTP), ``live.connect``,
``live.join``, ``live.leave`` (WebSocket); an end on a timer or at shutdown
is ``live.end`` by ``system``, a recording deleted for its age
``live.recording.delete`` by ``system``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from anyio import from_thread
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response, WebSocket, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.websockets import WebSocketDisconnect

from device_adapters.video.clip import Clip, NotEnoughFramesError, collect_clip
from teleconsult.api.consulting import ConsultsDep, audited, consult_service
from teleconsult.api.deps import PrincipalDep, SettingsDep, StoreDep, principal_from_token
from teleconsult.api.live_relay import LIVE_PATH, relay_client, relay_now, relayed_from, remote_list
from teleconsult.api.live_schemas import (
    ClipCreate,
    ClipPublic,
    LiveSessionCreate,
    LiveSessionPublic,
    RecordingPublic,
    SnapshotPublic,
    clip_public,
    live_public,
    recording_public,
    snapshot_public,
)
from teleconsult.api.openapi import problem_response
from teleconsult.api.problems import problem
from teleconsult.api.sockets import accept, audit_socket, authenticate, receive_text, refuse
from teleconsult.audit import AuditEvent, AuditLog, AuditOutcome, Interface
from teleconsult.consults import ConsultService, HiddenError
from teleconsult.domain.consults import CLOSED, Consult
from teleconsult.domain.identity import Principal, Role
from teleconsult.errors import (
    ConflictError,
    ConsultStateError,
    NotFoundError,
    PermissionDeniedError,
    TeleconsultError,
)
from teleconsult.events import Event, EventType
from teleconsult.media import SYSTEM, LiveSession, MediaHub, MediaOptions, ParticipantRole, allowed_roles
from teleconsult.media.capture import SnapshotTarget, clip_from_recent, store_clip, store_snapshot
from teleconsult.media.errors import LiveError
from teleconsult.media.recording import (
    MEDIA_TYPE,
    RecordingInfo,
    RecordingStatus,
    find_recording,
    list_recordings,
    recording_paths,
)
from teleconsult.media.registry import SessionRegistry
from teleconsult.media.signalling import SignallingClosedError, serve_peer
from teleconsult.notifications.protocol import Closing

__all__ = ["live_lifespan", "router"]

logger = logging.getLogger(__name__)

_READY = json.dumps({"type": "ready"})

# Close codes of the signalling socket besides 4001 (unauthenticated) and 1000 (after "bye").
NOT_FOUND = 4004  # no such session, or not visible to the caller
FORBIDDEN = 4003  # visible, but the caller takes no part (admin; declined or cancelled consult)
ENDED = 4010  # the session has ended

PROTOCOL = """\
**This path is a WebSocket** (OpenAPI cannot describe one): open
`ws(s)://<host>/api/live-sessions/{id}/signal`; a plain GET is answered 426. Protocol (details,
annotation schema and examples in `docs/live.md`):

1. Within 5 seconds send `{"type": "auth", "token": "<access token>"}`; the server answers
   `{"type": "ready"}`.
2. Send `{"type": "offer", "sdp": "<SDP>", "role": "sender" | "viewer"}`; the server answers
   `{"type": "answer", "sdp": "<SDP>"}` (all its candidates are in the answer). Only the consult's
   requesting side may be the sender; others who see the consult may be viewers. A new offer
   replaces this connection's peer connection (a sender reconnecting resumes the video every
   viewer sees).
3. Optionally `{"type": "candidate", "candidate": "candidate:...", "sdpMid": "0", "sdpMLineIndex": 0}`,
   `{"type": "ping"}` (answered `{"type": "pong"}`), `{"type": "bye"}` to leave.
4. Open a data channel named `annotations` for pointer, drawings and chat (JSON; checked and
   forwarded to every other participant).

A message the server cannot act on (not JSON, unknown type, malformed SDP, a role the caller
may not take, a full session) is answered `{"type": "error", "problem": {...}}`; the socket and
the session stay up. The server closes with **4001** (authentication), **4004** (no such
session, or not visible), **4003** (the caller takes no part in live exams of this consult),
**4010** (the session has ended), **4009** (another connection took over as sender, after an
`error`), **1000** after `{"type": "bye", "reason": ...}` when the session ends.
"""


# -- the hub's lifespan -----------------------------------------------------------------


def _audit_system_end(app: FastAPI, session: LiveSession) -> None:
    audit: AuditLog = app.state.audit
    audit.record(
        AuditEvent(
            action="live.end",
            outcome=AuditOutcome.SUCCESS,
            interface=Interface.WEBSOCKET,
            actor=SYSTEM,
            resource=f"LIVE {LIVE_PATH}/{session.session_id}",
            study_instance_uid=session.study_instance_uid,
            patient_id=session.patient_id,
            detail=f"live session {session.session_id} of consult {session.consult_id} ended: "
            f"{session.end_reason}",
        )
    )


def _audit_deleted_recording(app: FastAPI, info: RecordingInfo) -> None:
    audit: AuditLog = app.state.audit
    audit.record(
        AuditEvent(
            action="live.recording.delete",
            outcome=AuditOutcome.SUCCESS,
            interface=Interface.HTTP,
            actor=SYSTEM,
            resource=f"DELETE {LIVE_PATH}/{info.session_id}/recording",
            study_instance_uid=info.study_instance_uid,
            patient_id=info.patient_id,
            detail=f"recording of live session {info.session_id} of consult {info.consult_id} deleted: "
            f"older than TELECONSULT_LIVE_RECORDING_RETENTION_DAYS",
        )
    )


def _end_with_consult(hub: MediaHub, event: Event) -> None:
    """A consult cancelled or declined has no live exam: its running session ends, everyone told why.

    Called on the thread that published (a request's, or the broker reader's
    for a consult changed through another replica); the end runs on the hub's loop.
    """
    consult_id = event.data.get("consult_id")
    if hub.loop is None or not isinstance(consult_id, str):
        return
    verb = "cancelled" if event.type == EventType.CONSULT_CANCELLED else "declined"
    reason = f"the consult was {verb} by {event.data.get('actor', 'someone')}"
    asyncio.run_coroutine_threadsafe(hub.end_consult(consult_id, reason), hub.loop)


@asynccontextmanager
async def live_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One media hub per app, for as long as it serves; closing it ends every session."""
    options: MediaOptions = getattr(app.state, "media_options", None) or MediaOptions.from_settings(
        app.state.settings
    )

    async def ended(session: LiveSession) -> None:
        await asyncio.to_thread(_audit_system_end, app, session)

    async def deleted(info: RecordingInfo) -> None:
        await asyncio.to_thread(_audit_deleted_recording, app, info)

    registry: SessionRegistry | None = getattr(app.state, "live_registry", None)
    if registry is not None:
        try:  # sessions do not outlive their process: whatever the last one held has ended
            released = await asyncio.to_thread(registry.release_all)
            if released:
                logger.info("live: %d sessions this replica held before its restart marked ended", released)
        except TeleconsultError as exc:
            logger.warning("live: the registry cannot be cleaned at start (%s); leases lapse", exc.message)
        app.state.live_relay_client = relay_client()
    hub = MediaHub(options, on_ended=ended, on_deleted=deleted, registry=registry)
    hub.start()
    app.state.media = hub
    closing = functools.partial(_end_with_consult, hub)
    unsubscribe = [
        bus.subscribe(closing, kind)
        for bus in (app.state.store.bus, app.state.store.remote_bus)
        for kind in (EventType.CONSULT_CANCELLED, EventType.CONSULT_DECLINED)
    ]
    try:
        yield
    finally:
        for stop in unsubscribe:
            stop()
        await hub.close()
        if registry is not None:
            await app.state.live_relay_client.aclose()


router = APIRouter(prefix=LIVE_PATH, tags=["live exams"], lifespan=live_lifespan)


async def _hub(request: Request) -> MediaHub:
    hub: MediaHub = request.app.state.media
    return hub


MediaDep = Annotated[MediaHub, Depends(_hub)]
SessionId = Annotated[str, Path(max_length=64, description="the live session's id (a UUID)")]

_NOT_FOUND = problem_response("No such live session, or not visible to the caller (the same answer)")
_FORBIDDEN = problem_response("Visible, but the caller takes no part in live exams (admins)")
_UNREACHABLE = problem_response(
    "With several replicas: the replica holding the session cannot be reached (replica-unreachable)"
)


# -- helpers (run in the threadpool) ------------------------------------------------------


def _session(
    hub: MediaHub, service: ConsultService, principal: Principal, session_id: str
) -> tuple[LiveSession, Consult]:
    """The session and its consult if the caller may see the consult; 404 (the same) otherwise."""
    session = from_thread.run_sync(hub.get, session_id)
    if session is None:
        raise NotFoundError(_hidden(principal, session_id))
    return session, _consult_of(service, principal, session.consult_id, session_id)


def _hidden(principal: Principal, session_id: str) -> str:
    return f"live session {session_id[:40]} does not exist or is not visible to {principal.username}"


def _consult_of(service: ConsultService, principal: Principal, consult_id: str, session_id: str) -> Consult:
    """The consult of a session, if the caller sees it; 404 as for no session otherwise."""
    message = _hidden(principal, session_id)
    try:
        return service.get(principal, consult_id)
    except HiddenError as exc:
        raise HiddenError(
            message,
            study_instance_uid=exc.study_instance_uid,
            patient_id=exc.patient_id,
            detail=f"live session {session_id}: {exc.detail}",
        ) from None
    except NotFoundError:
        raise NotFoundError(message) from None


def _roles(service: ConsultService, principal: Principal, consult: Consult) -> frozenset[ParticipantRole]:
    """What the caller may be in the consult's session; 403/409 if nothing."""
    roles = allowed_roles(consult, service.viewer(principal))
    if roles:
        return roles
    if consult.status in CLOSED:
        raise ConsultStateError(
            f"consult {consult.consult_id} is {consult.status.value}; it has no live exam any more"
        )
    raise PermissionDeniedError(
        f"{principal.username} is {principal.role.value}; live exams are for the consult's clinicians"
    )


def _may_watch(service: ConsultService, principal: Principal) -> None:
    """Recordings are the consult's clinicians' (a closed consult's too); admins manage accounts (403)."""
    if service.viewer(principal).role is Role.ADMIN:
        raise PermissionDeniedError(
            f"{principal.username} is {principal.role.value}; recordings of live exams are for the "
            "consult's clinicians"
        )


def _public(session: LiveSession, principal: Principal) -> LiveSessionPublic:
    """The session as the caller sees it, with TURN credentials of their own (not for admins: no part)."""
    participant = None if principal.role is Role.ADMIN else principal.username
    public: LiveSessionPublic = from_thread.run_sync(live_public, session, participant)
    return public


# -- REST ---------------------------------------------------------------------------------


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=LiveSessionPublic,
    summary="Start the live exam of a consult (or get the one running)",
    description=(
        "Starts a live session for the consult: 201 with its `id`, the ICE servers for the "
        "client's RTCPeerConnection and the signalling path. If the consult already has a running "
        "session, that one is answered (200), so both sides may simply ask. Anyone who sees the "
        "consult and takes part in it may start it (not admins; not a declined or cancelled "
        "consult). The session ends on `POST .../end`, after TELECONSULT_LIVE_IDLE_TIMEOUT_SECONDS "
        "without a sender, or after TELECONSULT_LIVE_MAX_SECONDS. With several replicas "
        "(TELECONSULT_REPLICA_URL), a session another replica holds is answered from there."
    ),
    responses={
        200: {"description": "The consult's running session", "model": LiveSessionPublic},
        400: problem_response("The body is not JSON"),
        403: _FORBIDDEN,
        404: problem_response("No such consult, or not visible to the caller (the same answer)"),
        409: problem_response("The consult is declined or cancelled"),
        422: problem_response("Invalid fields"),
        503: problem_response("The index, or the replica holding the consult's session, cannot be reached"),
    },
)
def start_session(
    body: LiveSessionCreate,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    service: ConsultsDep,
    hub: MediaDep,
) -> LiveSessionPublic:
    with audited(request, principal, "live.start") as note:
        consult = service.get(principal, body.consult_id)
        note.consult(consult)
        _roles(service, principal, consult)
        session_id = None
        if hub.registry is not None:
            holder = hub.registry.claim(str(uuid.uuid4()), consult.consult_id)
            if not hub.registry.is_mine(holder):  # another replica started it at the same moment
                note.detail = f"live session {holder.session_id} of consult {consult.consult_id} is held by "
                note.detail += f"{holder.replica_url}: answered from there"
                relayed = relay_now(request, holder, hub.registry, body.model_dump_json().encode())
                return relayed  # type: ignore[return-value]
            session_id = holder.session_id
        session, created = from_thread.run_sync(hub.open, consult, principal, session_id)
        verb = "started" if created else "asked for while running"
        note.detail = f"live session {session.session_id} of consult {consult.consult_id} {verb}"
    if not created:
        response.status_code = status.HTTP_200_OK
    return _public(session, principal)


@router.get(
    "",
    response_model=list[LiveSessionPublic],
    summary="The running live session of a consult, if any (without starting one)",
    description=(
        "A list with the consult's running session (waiting or live), or an empty list when none "
        "runs: how the other side learns that a live exam can be joined, since `POST` would start "
        "one. A consult the caller may not see answers 404."
    ),
    responses={
        404: problem_response("No such consult, or not visible to the caller (the same answer)"),
        503: _UNREACHABLE,
    },
)
def running_sessions(
    consult_id: Annotated[str, Query(min_length=1, max_length=64, description="the consult (a UUID)")],
    request: Request,
    principal: PrincipalDep,
    service: ConsultsDep,
    hub: MediaDep,
) -> list[LiveSessionPublic]:
    with audited(request, principal, "live.read") as note:
        consult = service.get(principal, consult_id)
        note.consult(consult)
        running = [s for s in from_thread.run_sync(hub.running) if s.consult_id == consult.consult_id]
        names = ", ".join(session.session_id for session in running) or "none"
        note.detail = f"running live sessions of consult {consult.consult_id}: {names}"
    return [_public(session, principal) for session in running]


@router.get(
    "/recordings",
    response_model=list[RecordingPublic],
    summary="The recordings of a consult's live sessions",
    description=(
        "Every recording of the consult's live sessions, oldest first (`[]` when none), with its "
        "status, duration, size and the path to download it. Sessions are recorded when "
        "TELECONSULT_LIVE_RECORDING is on (the default). Readable by whoever sees the consult and "
        "takes part in it (not admins); a consult the caller may not see answers 404."
    ),
    responses={
        403: _FORBIDDEN,
        404: problem_response("No such consult, or not visible to the caller (the same answer)"),
    },
)
def consult_recordings(
    consult_id: Annotated[str, Query(min_length=1, max_length=64, description="the consult (a UUID)")],
    request: Request,
    principal: PrincipalDep,
    service: ConsultsDep,
    hub: MediaDep,
) -> list[RecordingPublic]:
    with audited(request, principal, "live.recording.search") as note:
        consult = service.get(principal, consult_id)
        note.consult(consult)
        _may_watch(service, principal)
        root = hub.options.recordings_dir
        found = list_recordings(root, consult.consult_id) if root is not None else []
        running = {session.session_id for session in from_thread.run_sync(hub.running)}
        listed = [recording_public(info, running=info.session_id in running) for info in found]
        elsewhere: list[Any] = []
        if hub.registry is not None and relayed_from(request.headers) is None:
            others = hub.registry.replicas_of(consult.consult_id)
            elsewhere = remote_list(request, hub.registry, others) if others else []
        names = ", ".join(info.session_id for info in found) or "none"
        note.detail = f"recordings of consult {consult.consult_id}: {names}"
        if elsewhere:
            note.detail += f", and {len(elsewhere)} on other replicas"
    merged = listed + [RecordingPublic.model_validate(item) for item in elsewhere]
    return sorted(merged, key=lambda item: item.started_at)


@router.get(
    "/{session_id}",
    response_model=LiveSessionPublic,
    summary="One live session: status, participants, whether a frame can be captured",
    responses={404: _NOT_FOUND, 503: _UNREACHABLE},
)
def read_session(
    session_id: SessionId, request: Request, principal: PrincipalDep, service: ConsultsDep, hub: MediaDep
) -> LiveSessionPublic:
    with audited(request, principal, "live.read") as note:
        session, consult = _session(hub, service, principal, session_id)
        note.consult(consult)
        note.detail = f"live session {session_id}"
    return _public(session, principal)


@router.post(
    "/{session_id}/end",
    response_model=LiveSessionPublic,
    summary="End a live session: every participant is told and every peer connection closed",
    description="Ending a session that has ended already answers it as it is.",
    responses={403: _FORBIDDEN, 404: _NOT_FOUND, 503: _UNREACHABLE},
)
def end_session(
    session_id: SessionId, request: Request, principal: PrincipalDep, service: ConsultsDep, hub: MediaDep
) -> LiveSessionPublic:
    with audited(request, principal, "live.end") as note:
        session, consult = _session(hub, service, principal, session_id)
        note.consult(consult)
        # Admins take no part; the consult's clinicians may end a session even once the consult
        # was cancelled or declined (it has no live exam any more, but one may still be running).
        if service.viewer(principal).role is Role.ADMIN and not session.ended:
            raise PermissionDeniedError(
                f"{principal.username} takes no part in live session {session_id} and cannot end it"
            )
        reason = f"ended by {principal.username}"
        ended = from_thread.run(functools.partial(hub.end, session, reason, by=principal.username))
        note.detail = f"live session {session_id} " + (reason if ended else "had ended already")
    return _public(session, principal)


@router.post(
    "/{session_id}/snapshot",
    status_code=status.HTTP_201_CREATED,
    response_model=SnapshotPublic,
    summary="Store the sender's latest video frame as DICOM in the consult's study",
    description=(
        "The frame becomes a Secondary Capture Image (RGB, conversion type DV, lossy compression "
        "01: it crossed WebRTC) with the patient and study attributes of the consult's study and "
        "the study's modality, one series per session, stored like any instance (notifications "
        "and forwarding rules apply). 409 while no frame has arrived, once the session has "
        "ended, or if the consult's study is not stored."
    ),
    responses={
        403: _FORBIDDEN,
        404: _NOT_FOUND,
        503: _UNREACHABLE,
        409: problem_response("No frame yet, the session has ended, or the consult has no stored study"),
    },
)
def take_snapshot(
    session_id: SessionId,
    request: Request,
    principal: PrincipalDep,
    service: ConsultsDep,
    hub: MediaDep,
    store: StoreDep,
    settings: SettingsDep,
) -> SnapshotPublic:
    with audited(request, principal, "live.snapshot") as note:
        session, consult = _session(hub, service, principal, session_id)
        note.consult(consult)
        _roles(service, principal, consult)
        if session.ended:
            raise ConflictError(f"live session {session_id} has ended; start a new one to capture")
        frame = from_thread.run_sync(session.latest_frame)
        if frame is None:
            raise ConflictError(
                f"live session {session_id} has no video frame yet; capture once the sender's video shows"
            )
        target = SnapshotTarget(
            session_id=session.session_id,
            consult_id=consult.consult_id,
            study_instance_uid=consult.study_instance_uid,
            source_organisation=consult.source_organisation,
            instance_number=from_thread.run_sync(session.next_snapshot),
            operator=principal.username,
        )
        snapshot = store_snapshot(store, frame, target, calling_ae_title=settings.ae_title)
        note.detail = f"live session {session_id}: frame stored as {snapshot.sop_instance_uid}"
    return snapshot_public(snapshot)


async def _next_seconds(session: LiveSession, seconds: float) -> Clip:
    """The next ``seconds`` of the session's video, read on the loop through its own subscription."""
    track = session.relay.subscribe(session.video, buffered=False)
    try:
        return await collect_clip(track, seconds)
    finally:
        track.stop()


@router.post(
    "/{session_id}/clip",
    status_code=status.HTTP_201_CREATED,
    response_model=ClipPublic,
    summary="Store the last or the next seconds of the sender's video as multi-frame DICOM in the study",
    description=(
        '`{"last_seconds": N}` stores what was just seen (from the session\'s recording, which '
        "keeps the last TELECONSULT_LIVE_CLIP_MAX_SECONDS in memory: 409 when the session is not "
        'recorded); `{"next_seconds": N}` the video from now on (the request answers after N '
        "seconds, sooner if the sender leaves). N is at most TELECONSULT_LIVE_CLIP_MAX_SECONDS "
        "(30). The clip becomes a Multi-frame True Color Secondary Capture Image (JPEG Baseline "
        "frames, YBR_FULL_422, Cine module at the recorded frame rate) with the patient and study "
        "attributes of the consult's study, in the session's capture series, stored like any "
        "instance (notifications and forwarding rules apply). 409 without a sender or video, "
        "once the session has ended, or if the consult has no stored study."
    ),
    responses={
        403: _FORBIDDEN,
        404: _NOT_FOUND,
        503: _UNREACHABLE,
        409: problem_response(
            "No video, no sender, not recorded (last_seconds), the session has ended, or the consult "
            "has no stored study"
        ),
        422: problem_response("Not exactly one of last_seconds and next_seconds, or more than the most"),
    },
)
def take_clip(
    session_id: SessionId,
    body: ClipCreate,
    request: Request,
    principal: PrincipalDep,
    service: ConsultsDep,
    hub: MediaDep,
    store: StoreDep,
    settings: SettingsDep,
) -> ClipPublic:
    seconds, most = body.seconds, hub.options.clip_max_seconds
    if seconds > most:
        field = "last_seconds" if body.last_seconds is not None else "next_seconds"
        raise RequestValidationError(
            [
                {
                    "type": "less_than_equal",
                    "loc": ("body", field),
                    "msg": f"a clip is at most {most:g} s (TELECONSULT_LIVE_CLIP_MAX_SECONDS)",
                    "input": seconds,
                }
            ]
        )
    with audited(request, principal, "live.clip") as note:
        session, consult = _session(hub, service, principal, session_id)
        note.consult(consult)
        _roles(service, principal, consult)
        which = "last" if body.last_seconds is not None else "next"
        note.detail = f"live session {session_id}: the {which} {seconds:g} s"
        if session.ended:
            raise ConflictError(f"live session {session_id} has ended; start a new one to capture")
        if which == "last":
            if session.recordings is None:
                raise ConflictError(
                    f"live session {session_id} is not recorded (TELECONSULT_LIVE_RECORDING is off), so "
                    "the last seconds are not kept; ask for next_seconds instead"
                )
            recent = from_thread.run_sync(session.recent_video, seconds)
            if recent is None:
                raise ConflictError(f"live session {session_id} has no recorded video yet")
            clip_of = functools.partial(clip_from_recent, recent, seconds)
        else:
            if from_thread.run_sync(lambda: session.sender) is None:
                raise ConflictError(
                    f"live session {session_id} has no sender connected; capture once the video shows"
                )
            clip_of = functools.partial(from_thread.run, _next_seconds, session, seconds)
        try:
            clip = clip_of()
        except NotEnoughFramesError as exc:
            raise ConflictError(f"live session {session_id}: no clip to store, {exc}") from None
        target = SnapshotTarget(
            session_id=session.session_id,
            consult_id=consult.consult_id,
            study_instance_uid=consult.study_instance_uid,
            source_organisation=consult.source_organisation,
            instance_number=from_thread.run_sync(session.next_snapshot),
            operator=principal.username,
        )
        stored = store_clip(store, clip, target, calling_ae_title=settings.ae_title)
        note.detail += (
            f": {stored.frames} frames ({stored.duration_seconds:g} s) stored as {stored.sop_instance_uid}"
        )
    return clip_public(stored)


@router.get(
    "/{session_id}/recording",
    response_class=FileResponse,
    summary="Download the recording of a live session (video/mp4, Range requests supported)",
    description=(
        "The session's recording: MP4 (fragmented) with H.264 video at the sender's picture size "
        "and AAC audio mixing the sender's and the viewers' voices. Answers Range requests (206), "
        "so a player can seek. 409 while the session is still being recorded (the file is "
        "finished when the session ends). Readable by whoever sees the consult and takes part in "
        "it (not admins); every request is audited (`live.recording.read`)."
    ),
    responses={
        200: {"content": {MEDIA_TYPE: {}}, "description": "The recording"},
        206: {"content": {MEDIA_TYPE: {}}, "description": "The requested bytes of the recording"},
        403: _FORBIDDEN,
        404: problem_response(
            "No such session, not visible to the caller (the same answer), or the session was not recorded"
        ),
        409: problem_response("The session is still being recorded"),
        416: problem_response("The Range cannot be satisfied"),
        503: _UNREACHABLE,
    },
)
def download_recording(
    session_id: SessionId, request: Request, principal: PrincipalDep, service: ConsultsDep, hub: MediaDep
) -> FileResponse:
    with audited(request, principal, "live.recording.read") as note:
        root = hub.options.recordings_dir
        session = from_thread.run_sync(hub.get, session_id)
        consult_id = session.consult_id if session is not None else None
        info = find_recording(root, session_id, consult_id) if root is not None else None
        if info is None:
            if session is None:
                raise NotFoundError(_hidden(principal, session_id))
            consult = _consult_of(service, principal, session.consult_id, session_id)
            note.consult(consult)
            raise NotFoundError(
                f"live session {session_id} has no recording (it was not recorded, or had no video)"
            )
        consult = _consult_of(service, principal, info.consult_id, session_id)
        note.consult(consult)
        _may_watch(service, principal)
        running = session is not None and not session.ended
        if info.status is RecordingStatus.RECORDING and running:
            raise ConflictError(
                f"live session {session_id} is still being recorded; its recording can be downloaded once "
                "the session ends"
            )
        assert root is not None
        path = recording_paths(root, info.consult_id, info.session_id)[0]
        if not path.is_file():
            raise NotFoundError(
                f"the recording of live session {session_id} is missing from the data directory"
            )
        span = request.headers.get("range")
        note.detail = f"recording of live session {session_id} ({info.size} bytes" + (
            f", {span[:60]})" if span else ")"
        )
    return FileResponse(
        path,
        media_type=MEDIA_TYPE,
        filename=f"live-session-{session_id}.mp4",
        content_disposition_type="inline",
    )


# -- signalling -----------------------------------------------------------------------------


@router.get(
    "/{session_id}/signal",
    summary="Signalling of a live session (WebSocket): offer/answer, candidates, bye",
    description=PROTOCOL,
    status_code=426,
    response_class=Response,
    responses={426: problem_response("Upgrade required: this path is a WebSocket, see the description")},
)
def signal_over_http(session_id: SessionId, request: Request) -> JSONResponse:
    response = problem(
        request,
        426,
        "upgrade required",
        f"GET {LIVE_PATH}/{{id}}/signal is a WebSocket: open it with a WebSocket client and send "
        '{"type": "auth", "token": ...} first (docs/live.md)',
        "upgrade-required",
    )
    response.headers["Upgrade"] = "websocket"
    response.headers["Connection"] = "Upgrade"
    return response


def _sign_in(websocket: WebSocket, token: str) -> Principal:
    return principal_from_token(token, websocket.app.state.secret_key, websocket.app.state.identity)


def _admit(
    app: Any, principal: Principal, session: LiveSession
) -> tuple[Consult, frozenset[ParticipantRole]]:
    """The session's consult if the caller sees it (``NotFoundError`` else), and their roles in it."""
    service = consult_service(app)
    consult = service.get(principal, session.consult_id)
    return consult, allowed_roles(consult, service.viewer(principal))


class _SocketSignalling:
    """The ``Signalling`` of one WebSocket."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    async def receive(self) -> str | None:
        try:
            return await receive_text(self.websocket)
        except WebSocketDisconnect:
            raise SignallingClosedError from None

    async def send(self, message: dict[str, Any]) -> None:
        try:
            await self.websocket.send_text(json.dumps(message))
        except (WebSocketDisconnect, RuntimeError, OSError):
            raise SignallingClosedError from None

    async def close(self, code: int, reason: str) -> None:
        try:
            await self.websocket.close(code, reason)
        except (WebSocketDisconnect, RuntimeError, OSError):
            logger.debug("live signalling: the client left before the close")


@router.websocket("/{session_id}/signal")
async def signal_socket(websocket: WebSocket, session_id: str) -> None:
    hub: MediaHub = websocket.app.state.media
    path = f"{LIVE_PATH}/{session_id[:64]}/signal"
    if not await accept(websocket, action="live.connect", resource=path, name="live signalling"):
        return
    principal = await authenticate(
        websocket,
        hub.options.auth_timeout,
        functools.partial(_sign_in, websocket),
        action="live.connect",
        resource=path,
        name="live signalling",
    )
    if principal is None:
        return
    session = hub.get(session_id)
    missing = Closing(
        NOT_FOUND,
        "not-found",
        f"live session {session_id[:40]} does not exist or is not visible to {principal.username}",
        404,
    )
    try:
        if session is None:
            raise NotFoundError(missing.detail)
        consult, roles = await asyncio.to_thread(_admit, websocket.app, principal, session)
    except NotFoundError as exc:
        hidden = exc if isinstance(exc, HiddenError) else None
        await audit_socket(
            websocket,
            "live.connect",
            AuditOutcome.DENIED if hidden else AuditOutcome.FAILURE,
            resource=path,
            principal=principal,
            detail=hidden.detail if hidden else missing.detail,
            study_instance_uid=hidden.study_instance_uid if hidden else None,
            patient_id=hidden.patient_id if hidden else None,
        )
        await refuse(websocket, missing, path)
        return
    except TeleconsultError as exc:  # the index cannot be read
        await refuse(websocket, Closing(1011, exc.code, exc.message, exc.http_status), path)
        return
    audit = functools.partial(
        audit_socket,
        websocket,
        resource=path,
        principal=principal,
        study_instance_uid=session.study_instance_uid,
        patient_id=session.patient_id,
    )
    closing = None
    if session.ended:
        closing = Closing(ENDED, "session-ended", f"live session {session_id} has ended", 410)
    elif not roles:
        closing = Closing(
            FORBIDDEN,
            "forbidden",
            f"{principal.username} takes no part in live exams of consult {consult.consult_id}",
            403,
        )
    if closing is not None:
        await audit("live.connect", AuditOutcome.DENIED, detail=closing.detail)
        await refuse(websocket, closing, path)
        return
    peer = session.join(principal, roles)
    await websocket.send_text(_READY)
    logger.info("live %s: signalling of %s opened (peer %d)", session_id, principal.username, peer.peer_id)

    async def joined(role: ParticipantRole, error: LiveError | None) -> None:
        what = f"live session {session_id} of consult {consult.consult_id} as {role.value}"
        if error is None:
            await audit("live.join", AuditOutcome.SUCCESS, detail=what)
        else:
            await audit("live.join", AuditOutcome.DENIED, detail=f"{what}: {error.detail}")

    how = "left"
    try:
        how = await serve_peer(session, peer, _SocketSignalling(websocket), instance=path, on_join=joined)
    finally:
        logger.info("live %s: signalling of %s ended (%s)", session_id, principal.username, how)
        await audit("live.leave", AuditOutcome.SUCCESS, detail=f"live session {session_id}: {how}")
