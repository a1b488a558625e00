"""The signalling and annotation messages, and one session served over the in-memory ``Signalling``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiortc import RTCSessionDescription
from hypothesis import given
from hypothesis import strategies as st

from teleconsult.domain.consults import Consult, ConsultStatus, Target, Urgency
from teleconsult.domain.identity import Principal, Role
from teleconsult.media import LiveSession, ParticipantRole, SignallingClosedError, memory_pair, serve_peer
from teleconsult.media.annotations import AnnotationError, parse_annotation
from teleconsult.media.errors import InvalidCandidateError, InvalidMessageError
from teleconsult.media.signalling import Candidate, Offer, ice_candidate, parse_client_message
from teleconsult.notifications.protocol import ProtocolError
from teleconsult.notifications.protocol import parse_client_message as parse_events_message
from tests.teleconsult.live.conftest import RED, WAIT, ColourTrack, frame_where, looks_like, new_peer

JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
TYPES = st.sampled_from(["offer", "candidate", "bye", "ping", "answer", "auth", "pointer", "chat", "circle"])


@given(
    st.one_of(
        JSON,
        st.dictionaries(st.just("type"), TYPES).flatmap(
            lambda head: st.dictionaries(st.text(max_size=12), JSON, max_size=4).map(
                lambda rest: {**rest, **head}
            )
        ),
    )
)
def test_any_json_is_a_message_or_a_sentence_saying_why_not(value: Any) -> None:
    """Nothing a client sends makes the parsers raise anything but their own error, with a reason."""
    text = json.dumps(value)
    parsers: tuple[tuple[Callable[[str], object], type[Exception]], ...] = (
        (parse_client_message, InvalidMessageError),
        (parse_annotation, AnnotationError),
    )
    for parse, error in parsers:
        try:
            parse(text)
        except error as exc:
            why = str(exc)
        else:
            why = "parsed"
        assert why


def test_messages_parse_as_documented() -> None:
    offer = parse_client_message('{"type": "offer", "sdp": "v=0", "role": "viewer"}')
    assert offer == Offer(type="offer", sdp="v=0", role=ParticipantRole.VIEWER)
    browser = parse_client_message(
        '{"type": "candidate", "candidate": "candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host",'
        ' "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}'
    )
    aiortc_style = parse_client_message(
        '{"type": "candidate", "candidate": "candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host",'
        ' "id": "0", "label": 0}'
    )
    assert browser == aiortc_style
    assert isinstance(browser, Candidate)
    candidate = ice_candidate(browser)
    assert candidate is not None
    assert (candidate.ip, candidate.port, candidate.sdpMid, candidate.sdpMLineIndex) == (
        "10.0.0.5",
        50000,
        "0",
        0,
    )
    assert ice_candidate(Candidate(type="candidate", candidate="")) is None  # end of candidates
    with pytest.raises(InvalidCandidateError, match="sdpMid or sdpMLineIndex"):
        ice_candidate(Candidate(type="candidate", candidate="candidate:1 1 udp 1 10.0.0.1 9 typ host"))
    with pytest.raises(InvalidMessageError, match="unknown message type 'answer'"):
        parse_client_message('{"type": "answer", "sdp": "v=0"}')  # answers are the server's
    with pytest.raises(InvalidMessageError, match="offer message, role"):
        parse_client_message('{"type": "offer", "sdp": "v=0", "role": "admin"}')


def test_annotations_parse_as_documented() -> None:
    circle = parse_annotation('{"type": "circle", "id": "c1", "centre": {"x": 0.5, "y": 0.5}, "radius": 0.2}')
    assert circle.type == "circle"
    for bad, where in (
        ('{"type": "pointer", "x": 1.5, "y": 0}', "x"),
        ('{"type": "pointer", "x": NaN, "y": 0}', "x"),
        ('{"type": "arrow", "start": {"x": 0, "y": 0}, "end": {"x": 1, "y": 1}, "colour": "red"}', "colour"),
        ('{"type": "chat", "text": ""}', "text"),
        ('{"type": "text", "at": {"x": 0, "y": 0}, "text": "' + "x" * 201 + '"}', "text"),
        ('{"type": "clear", "id": "has space"}', "id"),
    ):
        with pytest.raises(AnnotationError, match=where):
            parse_annotation(bad)


def _consult() -> Consult:
    now = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    return Consult(
        consult_id="8f8e2a52-6b4e-4b76-9a39-3f0f1f9a5e10",
        study_instance_uid="1.2.3",
        patient_id="P0001",
        issuer_of_patient_id="TOWN01",
        source_organisation="TOWN01",
        requested_by="sono1",
        requested_at=now,
        urgency=Urgency.URGENT,
        question="?",
        target=Target("COUNTY"),
        assignee=None,
        status=ConsultStatus.REQUESTED,
        status_reason=None,
        due_at=now,
        overdue_at=None,
        updated_at=now,
    )


def test_a_session_served_over_the_in_memory_signalling() -> None:
    """The same loop as behind the WebSocket, without HTTP: offer, answer, media, bye."""
    sono = Principal("sono1", Role.SONOGRAPHER, "TOWN01", frozenset({"TOWN01"}))
    spec = Principal("specialist", Role.SPECIALIST, "COUNTY", frozenset({"COUNTY", "TOWN01"}))

    async def connect(
        session: LiveSession, principal: Principal, role: ParticipantRole, received: asyncio.Queue[Any]
    ) -> tuple[Any, Any, asyncio.Future[str]]:
        server_end, client_end = memory_pair()
        peer = session.join(principal, {role})
        served = asyncio.ensure_future(serve_peer(session, peer, server_end, instance="/memory"))
        pc = new_peer()
        pc.on("track", received.put_nowait)
        if role is ParticipantRole.SENDER:
            pc.addTrack(ColourTrack(RED))
        else:
            pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        await client_end.send({"type": "offer", "sdp": pc.localDescription.sdp, "role": role.value})
        answer = json.loads(await client_end.receive())
        assert answer["type"] == "answer"
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        return pc, client_end, served

    async def scenario() -> None:
        session = LiveSession("0f0e0d0c-0000-4000-8000-000000000001", _consult(), sono)
        received: asyncio.Queue[Any] = asyncio.Queue()
        sender_pc, sender_end, sender_served = await connect(session, sono, ParticipantRole.SENDER, received)
        viewer_pc, viewer_end, viewer_served = await connect(session, spec, ParticipantRole.VIEWER, received)
        await frame_where(await asyncio.wait_for(received.get(), WAIT), looks_like(RED))
        await viewer_end.send({"type": "bye"})
        assert await asyncio.wait_for(viewer_served, WAIT) == "said bye"
        assert session.peer_connections() == 1  # the viewer left; the sender is untouched
        await session.end("test over", by="test")
        assert json.loads(await sender_end.receive()) == {
            "type": "bye",
            "reason": f"live session {session.session_id} ended: test over",
        }
        assert await asyncio.wait_for(sender_served, WAIT) == "dropped: session-ended"
        with pytest.raises(SignallingClosedError):  # and the server closed its end
            await sender_end.receive()
        assert session.peer_connections() == 0
        for pc in (sender_pc, viewer_pc):
            await pc.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 50_000, "[" * 5000 + "]" * 5000])
def test_json_nested_past_the_parsers_depth_is_refused_with_a_reason(text: str) -> None:
    """json.loads raises RecursionError, not ValueError, on deep nesting: it used to kill the socket."""
    for parse, error in ((parse_client_message, InvalidMessageError), (parse_annotation, AnnotationError)):
        with pytest.raises(error) as refused:
            parse(text[: 120 * 1024])
        assert str(refused.value)
    with pytest.raises(ProtocolError) as closing:
        parse_events_message(text[:16_000], expect_auth=False)
    assert "JSON" in closing.value.closing.detail
