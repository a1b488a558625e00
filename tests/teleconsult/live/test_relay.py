"""Media through the server: one sender, viewers, annotations, audio both ways, and what disturbs whom."""

from __future__ import annotations

import asyncio
import json

from tests.teleconsult.live.conftest import (
    BLUE,
    RED,
    WAIT,
    ColourTrack,
    Participant,
    Served,
    ToneTrack,
    close_code,
    frame_where,
    join,
    looks_like,
    loud_audio,
    negotiate,
    new_peer,
    open_socket,
    problem_of,
    renegotiate,
)


def test_two_viewers_see_the_senders_video(served: Served) -> None:
    session = served.start_session()

    async def scenario() -> None:
        sender = await join(served, "sono1", session["id"], "sender", video=ColourTrack(RED))
        viewers = [
            await join(served, user, session["id"], "viewer") for user in ("specialist", "specialist2")
        ]
        for viewer in viewers:
            await frame_where(await viewer.track("video"), looks_like(RED))
        state = (await served.acall("GET", "specialist", f"/api/live-sessions/{session['id']}")).json()
        assert (state["status"], state["sender"]) == ("live", "sono1")
        assert state["viewers"] == ["specialist", "specialist2"]
        assert state["frames_received"] > 0
        assert state["has_frame"] is True
        for participant in (sender, *viewers):
            await participant.close()

    asyncio.run(scenario())


def test_audio_goes_both_ways(served: Served) -> None:
    """The sender hears the specialists (mixed), and the specialists hear the sender."""
    session = served.start_session()

    async def scenario() -> None:
        sender = await join(served, "sono1", session["id"], "sender", audio=ToneTrack())
        viewer = await join(served, "specialist", session["id"], "viewer", audio=ToneTrack())
        assert await loud_audio(await viewer.track("audio")) > 500
        assert await loud_audio(await sender.track("audio")) > 500
        await sender.close()
        await viewer.close()

    asyncio.run(scenario())


def test_annotations_and_chat_reach_every_other_participant(served: Served) -> None:
    session = served.start_session()

    async def scenario() -> None:
        sender = await join(served, "sono1", session["id"], "sender")
        one = await join(served, "specialist", session["id"], "viewer")
        two = await join(served, "specialist2", session["id"], "viewer")
        for participant in (sender, one, two):
            await participant.channel_open()
        arrow = {"type": "arrow", "id": "a1", "start": {"x": 0.2, "y": 0.3}, "end": {"x": 0.5, "y": 0.5}}
        one.channel.send(json.dumps(arrow))
        for other in (sender, two):
            got = await other.annotation()
            assert got["type"] == "arrow"
            assert (got["start"], got["end"], got["colour"]) == (arrow["start"], arrow["end"], "#ffcc00")
            assert got["from"] == {"username": "specialist", "role": "viewer"}
            assert got["time"].endswith("Z")
        sender.channel.send(json.dumps({"type": "chat", "text": "探头往左移一点？"}))
        for other in (one, two):
            got = await other.annotation()
            assert (got["type"], got["text"], got["from"]["username"]) == (
                "chat",
                "探头往左移一点？",
                "sono1",
            )
        two.channel.send(json.dumps({"type": "pointer", "x": 0.5, "y": 0.25}))
        assert (await sender.annotation())["type"] == "pointer"
        assert (await one.annotation())["type"] == "pointer"
        await asyncio.sleep(0.3)
        assert two.annotations.empty()  # nobody receives their own messages
        for participant in (sender, one, two):
            await participant.close()

    asyncio.run(scenario())


def test_garbage_on_the_annotation_channel_is_refused_there_and_nothing_else_happens(served: Served) -> None:
    session = served.start_session()

    async def scenario() -> None:
        sender = await join(served, "sono1", session["id"], "sender")
        viewer = await join(served, "specialist", session["id"], "viewer")
        await sender.channel_open()
        await viewer.channel_open()
        for garbage, why in (
            ("not json", "message"),
            (json.dumps({"type": "circle", "centre": {"x": 2, "y": 0}, "radius": 0.1}), "centre.x"),
            (json.dumps({"type": "chat", "text": "hi", "from": {"username": "specialist"}}), "from"),
            (json.dumps({"type": "explode"}), ""),
            (json.dumps([1, 2]), ""),
            (b"\x00\x01", "binary"),
        ):
            viewer.channel.send(garbage)
            error = await viewer.annotation()
            assert (error["type"], error["code"]) == ("error", "invalid-annotation"), error
            assert why in error["detail"]
        viewer.channel.send(json.dumps({"type": "text", "at": {"x": 0.1, "y": 0.9}, "text": "胆囊"}))
        got = await sender.annotation()  # the first thing the sender hears: no garbage came through
        assert (got["type"], got["text"]) == ("text", "胆囊")
        # the media kept flowing through all this
        await frame_where(await viewer.track("video"), looks_like(RED))
        await sender.close()
        await viewer.close()

    asyncio.run(scenario())


def test_malformed_sdp_and_unknown_messages_get_errors_and_the_session_stays_up(served: Served) -> None:
    session = served.start_session()

    async def scenario() -> None:
        sender = await join(served, "sono1", session["id"], "sender")
        viewer = await join(served, "specialist", session["id"], "viewer")
        video = await viewer.track("video")
        await frame_where(video, looks_like(RED))
        for bad, code in (
            ({"type": "offer", "sdp": "v=0\r\nthis is not sdp\r\n", "role": "sender"}, "invalid-offer"),
            ({"type": "offer", "sdp": "", "role": "viewer"}, "invalid-message"),
            ({"type": "offer", "sdp": "v=0", "role": "director"}, "invalid-message"),
            ({"type": "dance"}, "invalid-message"),
            ({"no": "type"}, "invalid-message"),
            ({"type": "candidate", "candidate": "candidate:garbage", "sdpMid": "0"}, "invalid-candidate"),
            (
                {"type": "candidate", "candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host"},
                "invalid-candidate",
            ),
        ):
            await sender.send(bad)
            reply = await sender.message()
            assert reply["type"] == "error", reply
            assert reply["problem"]["code"] == code, reply
            assert reply["problem"]["instance"] == f"/api/live-sessions/{session['id']}/signal"
        await sender.ws.send("{{{")
        assert (await sender.message())["problem"]["detail"] == "the message is not JSON"
        await sender.send({"type": "ping"})
        assert await sender.message() == {"type": "pong"}
        # a well-formed candidate (the sender's own, again) is taken without a word
        line = next(x for x in sender.pc.localDescription.sdp.splitlines() if x.startswith("a=candidate:"))
        await sender.send({"type": "candidate", "candidate": line[2:], "sdpMid": "0", "sdpMLineIndex": 0})
        await sender.send({"type": "ping"})
        assert await sender.message() == {"type": "pong"}
        # the video never stopped: the old connection was kept
        await frame_where(video, looks_like(RED))
        state = (await served.acall("GET", "sono1", f"/api/live-sessions/{session['id']}")).json()
        assert (state["status"], state["sender"]) == ("live", "sono1")
        await sender.close()
        await viewer.close()

    asyncio.run(scenario())


def test_a_viewer_dropping_disturbs_nobody(served: Served) -> None:
    session = served.start_session()

    async def scenario() -> None:
        sender = await join(served, "sono1", session["id"], "sender")
        staying = await join(served, "specialist", session["id"], "viewer")
        leaving = await join(served, "specialist2", session["id"], "viewer")
        video = await staying.track("video")
        await frame_where(await leaving.track("video"), looks_like(RED))
        # gone without a word: the socket is cut and the peer connection closed
        await leaving.pc.close()
        leaving.ws.transport.abort()
        async with asyncio.timeout(WAIT):
            while "specialist2" in served.on_server(lambda: served.hub.get(session["id"]).view().viewers):
                await asyncio.sleep(0.05)
        await frame_where(video, looks_like(RED))
        await staying.channel_open()
        await sender.channel_open()
        staying.channel.send(json.dumps({"type": "chat", "text": "still here"}))
        assert (await sender.annotation())["text"] == "still here"
        await sender.send({"type": "ping"})
        assert await sender.message() == {"type": "pong"}
        await sender.close()
        await staying.close()

    asyncio.run(scenario())


def test_a_sender_reconnecting_resumes_the_viewers_video(served: Served) -> None:
    """Viewers keep their peer connections: the new connection's video simply replaces the old."""
    session = served.start_session()

    async def scenario() -> None:
        sender = await join(served, "sono1", session["id"], "sender", video=ColourTrack(RED))
        viewer = await join(served, "specialist", session["id"], "viewer")
        viewer_pc = viewer.pc
        video = await viewer.track("video")
        await frame_where(video, looks_like(RED))
        # 1. the same socket, a new peer connection (the network changed)
        reply = await renegotiate(sender, "sender", video=ColourTrack(BLUE))
        assert reply["type"] == "answer"
        await frame_where(video, looks_like(BLUE))
        # 2. a new socket: the PC restarted; the old socket is told and closed with 4009
        replacement = await join(served, "sono1", session["id"], "sender", video=ColourTrack(RED))
        error = await sender.message()
        assert problem_of(error) == ("error", "sender-replaced", 409)
        assert await close_code(sender.ws) == 4009
        await frame_where(video, looks_like(RED))
        assert viewer.pc is viewer_pc
        assert viewer_pc.connectionState == "connected"
        await sender.pc.close()
        await replacement.close()
        await viewer.close()

    asyncio.run(scenario())


def test_only_the_requesting_side_may_send(served: Served) -> None:
    session = served.start_session()

    async def scenario() -> None:
        sender = await join(served, "sono1", session["id"], "sender")
        viewer = await join(served, "specialist", session["id"], "viewer")
        video = await viewer.track("video")
        await viewer.send({"type": "offer", "sdp": viewer.pc.localDescription.sdp, "role": "sender"})
        error = await viewer.message()
        assert (error["type"], error["problem"]["code"], error["problem"]["status"]) == (
            "error",
            "forbidden",
            403,
        )
        assert "requesting side" in error["problem"]["detail"]
        # nothing changed: the viewer still watches the township's video, the sender still sends
        await frame_where(video, looks_like(RED))
        state = (await served.acall("GET", "specialist", f"/api/live-sessions/{session['id']}")).json()
        assert (state["sender"], state["viewers"]) == ("sono1", ["specialist"])
        await sender.close()
        await viewer.close()

    asyncio.run(scenario())


def test_a_full_session_refuses_one_more_viewer(served: Served) -> None:
    """OPTIONS allow three viewers; the fourth is told so, and the three keep watching."""
    session = served.start_session()

    async def scenario() -> None:
        sender = await join(served, "sono1", session["id"], "sender")
        viewers = [
            await join(served, user, session["id"], "viewer")
            for user in ("specialist", "specialist2", "doctor1")
        ]
        ws = await open_socket(served, "sono1", session["id"])
        extra = Participant("sono1", ws, new_peer())
        extra.pc.addTransceiver("video", direction="recvonly")
        reply = await negotiate(extra, "viewer")
        assert (reply["type"], reply["problem"]["code"], reply["problem"]["status"]) == (
            "error",
            "session-full",
            503,
        )
        await frame_where(await viewers[0].track("video"), looks_like(RED))
        for participant in (sender, *viewers, extra):
            await participant.close()

    asyncio.run(scenario())
