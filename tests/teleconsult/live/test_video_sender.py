"""device_adapters.video: a capture source (a synthetic video file here) sent to a live session."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import pytest

from device_adapters.video.__main__ import main as video_main
from device_adapters.video.capture import CaptureError, CaptureSource
from device_adapters.video.sender import LiveServer, run_sender
from tests.conftest import PASSWORD
from tests.teleconsult.live.conftest import RED, WAIT, ColourTrack, Served, frame_where, join, looks_like

GREEN = (40, 200, 40)


def _video(path: Path, rgb: tuple[int, int, int], frames: int = 20) -> Path:
    """A short MJPEG file of one colour, as a capture card's picture would be."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (160, 120))
    assert writer.isOpened()
    image = np.empty((120, 160, 3), dtype=np.uint8)
    image[:] = rgb[::-1]  # OpenCV is BGR
    for _ in range(frames):
        writer.write(image)
    writer.release()
    return path


def test_a_capture_source_is_opened_once_and_shared(tmp_path: Path) -> None:
    source = CaptureSource(_video(tmp_path / "us.avi", GREEN), loop=True)

    async def scenario() -> None:
        one, two = source.subscribe(), source.subscribe()
        for track in (one, two):
            frame = await asyncio.wait_for(track.recv(), WAIT)
            assert looks_like(GREEN)(frame)
        assert source.fps == 15
        one.stop()
        two.stop()

    try:
        asyncio.run(scenario())
    finally:
        source.close()
    with pytest.raises(CaptureError, match="cannot be opened"):
        CaptureSource(tmp_path / "missing.avi").subscribe()
    with pytest.raises(ValueError, match="device index"):
        CaptureSource(-1)


def test_the_sender_client_sends_a_capture_file_and_stops_when_asked(served: Served, tmp_path: Path) -> None:
    source = CaptureSource(_video(tmp_path / "us.avi", GREEN), loop=True)
    session = served.start_session("specialist")  # the specialist opened it; the township device joins
    server = LiveServer(served.base, "sono1", PASSWORD)

    async def scenario() -> None:
        stop = asyncio.Event()
        sending = asyncio.ensure_future(
            run_sender(server, source.subscribe, consult_id=served.consult_id, stop=stop)
        )
        viewer = await join(served, "specialist", session["id"], "viewer")
        await frame_where(await viewer.track("video"), looks_like(GREEN))
        stop.set()
        result = await asyncio.wait_for(sending, WAIT)
        assert (result.reason, result.final) == ("stopped", True)
        # another sender connection takes over: the device is told, and does not fight back
        sending = asyncio.ensure_future(run_sender(server, source.subscribe, session_id=session["id"]))
        await frame_where(await viewer.track("video"), looks_like(GREEN))
        other = await join(served, "sono1", session["id"], "sender")
        result = await asyncio.wait_for(sending, WAIT)
        assert (result.close_code, result.final) == (4009, True)
        await frame_where(await viewer.track("video"), looks_like(RED))
        await other.close()
        await viewer.close()

    try:
        asyncio.run(scenario())
    finally:
        source.close()


def test_the_sender_retries_an_unreachable_server_and_stops_at_a_refusal(served: Served) -> None:
    async def scenario() -> None:
        stop = asyncio.Event()
        stop.set()  # one attempt only
        unreachable = LiveServer("http://127.0.0.1:9", "sono1", PASSWORD, timeout=5)
        result = await run_sender(unreachable, lambda: ColourTrack(), consult_id=served.consult_id, stop=stop)
        assert result.reason.startswith("the server cannot be reached")
        assert result.final is False
        wrong = LiveServer(served.base, "sono1", "not the password")
        result = await run_sender(wrong, lambda: ColourTrack(), consult_id=served.consult_id)
        assert (result.reason, result.final) == ("the server answered HTTP 401", True)
        outsider = LiveServer(served.base, "sono2", PASSWORD)
        result = await run_sender(outsider, lambda: ColourTrack(), consult_id=served.consult_id)
        assert (result.reason, result.final) == ("the server answered HTTP 404", True)

    asyncio.run(scenario())


def test_the_command_sends_until_the_session_ends(served: Served, tmp_path: Path) -> None:
    video = _video(tmp_path / "us.avi", GREEN)
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    session = served.start_session()
    argv = ["--server", served.base, "--username", "sono1", "--password-file", str(password)]
    argv += ["--session", session["id"], "--source", str(video), "--loop"]

    async def scenario() -> int:
        command = asyncio.ensure_future(asyncio.to_thread(video_main, argv))
        viewer = await join(served, "specialist", session["id"], "viewer")
        await frame_where(await viewer.track("video"), looks_like(GREEN))
        await served.acall("POST", "specialist", f"/api/live-sessions/{session['id']}/end")
        code = await asyncio.wait_for(command, WAIT)
        await viewer.pc.close()
        return code

    assert asyncio.run(scenario()) == 0
