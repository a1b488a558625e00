"""Viewers share one VP8 encoding of the session's video; a viewer without VP8 gets its own encoder."""

from __future__ import annotations

import asyncio

from aiortc import RTCRtpSender

from teleconsult.media.shared_video import EncodedVideoTrack
from tests.teleconsult.live.conftest import (
    BLUE,
    RED,
    ColourTrack,
    Participant,
    Served,
    _prepare,
    frame_where,
    join,
    looks_like,
    negotiate,
    new_peer,
    open_socket,
)


def _session(served: Served, session_id: str):  # type: ignore[no-untyped-def]
    return served.on_server(lambda: served.hub.get(session_id))


def test_viewers_share_one_encoding_and_a_late_one_starts_at_a_keyframe(served: Served) -> None:
    session = served.start_session()

    async def scenario() -> None:
        participants: list[Participant] = []
        try:
            await body(participants)
        finally:  # an assertion that fails must not leave peers decoding into the next test
            for participant in participants:
                await participant.close()

    async def body(participants: list[Participant]) -> None:
        colour = ColourTrack(RED)
        sender = await join(served, "sono1", session["id"], "sender", video=colour)
        participants.append(sender)
        one = await join(served, "specialist", session["id"], "viewer")
        participants.append(one)
        await frame_where(await one.track("video"), looks_like(RED))
        live = _session(served, session["id"])
        shared = live.shared_video
        assert shared is not None
        keyframes = served.on_server(lambda: shared.keyframes)
        # a second viewer, minutes later in real life: it is sent a keyframe and sees the picture
        colour.colour = BLUE
        two = await join(served, "specialist2", session["id"], "viewer")
        participants.append(two)
        for viewer in (one, two):
            await frame_where(await viewer.track("video"), looks_like(BLUE))
        assert served.on_server(lambda: shared.subscribers) == 2
        assert served.on_server(lambda: shared.keyframes) > keyframes
        outputs = served.on_server(lambda: [type(peer.outputs[0]) for peer in live.viewers()])
        assert outputs == [EncodedVideoTrack, EncodedVideoTrack], "no viewer has an encoder of its own"
        frames = served.on_server(lambda: shared.frames)
        async with asyncio.timeout(10):  # the one encoding goes on while both watch
            while served.on_server(lambda: shared.frames) <= frames:
                await asyncio.sleep(0.05)
        await one.close()
        async with asyncio.timeout(10):
            while served.on_server(lambda: shared.subscribers) != 1:
                await asyncio.sleep(0.05)
        await frame_where(await two.track("video"), looks_like(BLUE))  # the other one goes on

    asyncio.run(scenario())


def test_a_viewer_without_vp8_gets_its_own_encoder(served: Served) -> None:
    session = served.start_session()

    async def scenario() -> None:
        sender = await join(served, "sono1", session["id"], "sender", video=ColourTrack(RED))
        ws = await open_socket(served, "specialist", session["id"])
        viewer = Participant("specialist", ws, new_peer())
        transceiver = viewer.pc.addTransceiver("video", direction="recvonly")
        transceiver.setCodecPreferences(
            [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"]
        )
        viewer.pc.addTransceiver("audio", direction="recvonly")
        _prepare(viewer)
        reply = await negotiate(viewer, "viewer")
        assert reply["type"] == "answer", reply
        assert "H264/90000" in reply["sdp"]
        assert "VP8/90000" not in reply["sdp"]
        await frame_where(await viewer.track("video"), looks_like(RED))
        live = _session(served, session["id"])
        outputs = served.on_server(lambda: [type(peer.outputs[0]) for peer in live.viewers()])
        assert EncodedVideoTrack not in outputs
        for participant in (sender, viewer):
            await participant.close()

    asyncio.run(scenario())
