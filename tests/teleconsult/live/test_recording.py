"""Recordings: a session recorded across a reconnection, listed, downloaded (Range), authorised, audited."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.mediastreams import VideoStreamTrack
from PIL import Image

from device_adapters.video.clip import Clip
from teleconsult.audit import AuditLog
from teleconsult.config import Settings
from teleconsult.media import MediaOptions
from teleconsult.media.capture import clip_from_recent
from teleconsult.media.recording import RecordingInfo, RecordingStatus, SessionRecorder, list_recordings
from tests.teleconsult.live.conftest import (
    BLUE,
    OPTIONS,
    RED,
    ColourTrack,
    Served,
    ToneTrack,
    frame_where,
    join,
    looks_like,
    renegotiate,
)


@pytest.fixture
def media_options(app_settings: Settings) -> MediaOptions:
    return dataclasses.replace(OPTIONS, recordings_dir=app_settings.recordings_dir, record=True)


def _audit(served: Served, action: str) -> list[dict[str, object]]:
    return [r for r in AuditLog(served.store.index.engine).query(limit=500) if r["action"] == action]


def _colours(path: Path) -> tuple[int, int, float, list[tuple[float, float, float]]]:
    """(video frames, audio frames, seconds, mean RGB of each video frame) of a recording."""
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
        colours = []
        last = 0.0
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="rgb24")
            colours.append(tuple(float(image[..., i].mean()) for i in range(3)))
            last = float(frame.time or 0.0)
        container.seek(0)
        audio = sum(1 for _ in container.decode(audio=0))
    return len(colours), audio, last, colours  # type: ignore[return-value]


def test_a_session_is_recorded_across_a_reconnection_and_downloaded(served: Served) -> None:
    session = served.start_session()
    assert session["recorded"] is True
    recordings = f"/api/live-sessions/recordings?consult_id={served.consult_id}"
    download = f"/api/live-sessions/{session['id']}/recording"

    async def scenario() -> None:
        sender = await join(
            served, "sono1", session["id"], "sender", video=ColourTrack(RED), audio=ToneTrack()
        )
        viewer = await join(served, "specialist", session["id"], "viewer", audio=ToneTrack())
        track = await viewer.track("video")
        await frame_where(track, looks_like(RED))
        await asyncio.sleep(1.5)
        listed = (await served.acall("GET", "specialist", recordings)).json()
        assert [(r["session_id"], r["status"]) for r in listed] == [(session["id"], "recording")]
        early = await served.acall("GET", "specialist", download)
        assert (early.status_code, early.json()["code"]) == (409, "conflict")
        # the sender's network changes: a new peer connection, the same recording
        reply = await renegotiate(sender, "sender", video=ColourTrack(BLUE))
        assert reply["type"] == "answer"
        await frame_where(track, looks_like(BLUE))
        await asyncio.sleep(1.5)
        ended = await served.acall("POST", "sono1", f"/api/live-sessions/{session['id']}/end")
        assert ended.json()["status"] == "ended"
        await sender.pc.close()
        await viewer.pc.close()

    asyncio.run(scenario())

    listed = served.call("GET", "specialist", recordings)
    assert listed.status_code == 200, listed.text
    [recording] = listed.json()
    assert recording["status"] == "complete"
    assert (recording["width"], recording["height"], recording["media_type"]) == (160, 120, "video/mp4")
    assert 2.0 < recording["duration_seconds"] < 30.0
    assert recording["frames"] > 30
    assert recording["download_path"] == download

    response = served.call("GET", "specialist", download)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["accept-ranges"] == "bytes"
    assert len(response.content) == recording["size"]
    path = served.store.settings.recordings_dir / served.consult_id / f"{session['id']}.mp4"
    assert response.content == path.read_bytes()
    frames, audio, seconds, colours = _colours(path)
    assert frames > 30
    assert audio > 50
    assert 2.0 < seconds < 30.0
    assert looks_like(RED)(_frame(colours[0]))
    assert looks_like(BLUE)(_frame(colours[-1]))

    ranged = served.call_with("GET", "specialist", download, {"Range": "bytes=100-199"})
    assert ranged.status_code == 206
    assert ranged.headers["content-range"] == f"bytes 100-199/{recording['size']}"
    assert ranged.content == path.read_bytes()[100:200]

    # who may not: another township (404, as for no such session), an admin (403)
    for user, code in (("sono2", 404), ("admin", 403)):
        assert served.call("GET", user, download).status_code == code
        assert served.call("GET", user, recordings).status_code == code
    assert (
        served.call(
            "GET", "specialist", "/api/live-sessions/00000000-0000-4000-8000-000000000000/recording"
        ).status_code
        == 404
    )

    reads = _audit(served, "live.recording.read")
    outcomes = [(r["actor"], r["outcome"]) for r in reads]
    assert ("specialist", "success") in outcomes
    assert ("sono2", "denied") in outcomes
    assert ("admin", "denied") in outcomes
    success = next(r for r in reads if r["outcome"] == "success")
    assert success["study_instance_uid"] == served.study.StudyInstanceUID
    assert success["patient_id"] == "P0001"
    assert any("bytes=100-199" in str(r["detail"]) for r in reads)
    assert [r["outcome"] for r in _audit(served, "live.recording.search")].count("success") >= 2


def _frame(colour: tuple[float, float, float]) -> av.VideoFrame:
    image = np.empty((8, 8, 3), dtype=np.uint8)
    image[:] = [round(c) for c in colour]
    return av.VideoFrame.from_ndarray(image, format="rgb24")


def test_old_recordings_are_deleted_after_the_retention(served: Served) -> None:
    session = served.start_session()

    async def scenario() -> None:
        sender = await join(served, "sono1", session["id"], "sender")
        viewer = await join(served, "specialist", session["id"], "viewer")
        await frame_where(await viewer.track("video"), looks_like(RED))
        await asyncio.sleep(0.5)
        await served.acall("POST", "sono1", f"/api/live-sessions/{session['id']}/end")
        await sender.pc.close()
        await viewer.pc.close()

    asyncio.run(scenario())
    root = served.store.settings.recordings_dir
    [info] = list_recordings(root, served.consult_id)
    assert info.status is RecordingStatus.COMPLETE
    hub = served.hub
    assert served.on_server(lambda: hub.options.retention_days) == 0
    hub.options = dataclasses.replace(hub.options, retention_days=1)
    assert served.on_server_async(hub.sweep) == []  # a day has not passed
    hub.options = dataclasses.replace(hub.options, retention_days=1e-9)
    [deleted] = served.on_server_async(hub.sweep)
    assert deleted.session_id == session["id"]
    assert list_recordings(root, served.consult_id) == []
    assert not (root / served.consult_id).exists()
    [row] = _audit(served, "live.recording.delete")
    assert (row["actor"], row["outcome"], row["patient_id"]) == ("system", "success", "P0001")


class _Ramp(VideoStreamTrack):
    """160x120 frames at 30 fps whose red value climbs by 2 a frame (frames in order are told apart)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = np.zeros((120, 160, 3), dtype=np.uint8)
        image[..., 0] = min(255, self.count * 2)
        self.count += 1
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


CONSULT = "11111111-1111-4111-8111-111111111111"
SESSION = "22222222-2222-4222-8222-222222222222"


def test_the_recorder_keeps_the_last_seconds_for_clips(tmp_path: Path) -> None:
    async def scenario() -> tuple[Clip, RecordingInfo | None, int]:
        track = _Ramp()
        recorder = SessionRecorder(
            tmp_path,
            session_id=SESSION,
            consult_id=CONSULT,
            study_instance_uid=None,
            video=track,
            audio=[],
            keep_seconds=1.0,
        )
        recorder.start()
        await asyncio.sleep(3.0)
        recent = recorder.recent(1.0)
        assert recent is not None
        assert recent.packets[0][0] <= recent.newest - 1.0  # from the keyframe before the window
        assert recent.packets[0][0] > recent.newest - 1.0 - 2.5  # older groups of pictures are dropped
        clip = await asyncio.to_thread(clip_from_recent, recent, 1.0)
        return clip, await recorder.stop(), track.count

    clip, info, sent = asyncio.run(scenario())
    assert 20 <= len(clip.frames) <= 32  # about a second at 30 fps
    assert 0.8 <= clip.duration <= 1.05
    reds = [int(np.asarray(Image.open(io.BytesIO(frame)))[..., 0].mean()) for frame in clip.frames]
    assert reds == sorted(reds)
    assert reds[-1] - reds[0] >= 30  # a second of a ramp of 2 a frame (capped at 255)
    assert info is not None
    assert info.status is RecordingStatus.COMPLETE
    assert sent - 5 <= info.frames <= sent
    assert (tmp_path / CONSULT / f"{SESSION}.json").is_file()


def test_a_recording_that_cannot_be_written_fails_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / CONSULT).write_text("a file where the consult's folder should be")

    async def scenario() -> SessionRecorder:
        recorder = SessionRecorder(
            tmp_path, session_id=SESSION, consult_id=CONSULT, study_instance_uid=None, video=_Ramp(), audio=[]
        )
        recorder.start()
        await asyncio.sleep(0.3)
        assert await recorder.stop() is None  # no manifest: nowhere to write it
        return recorder

    recorder = asyncio.run(scenario())
    assert recorder.status is RecordingStatus.FAILED
    assert recorder.error is not None
    assert "the recording failed and stops" in caplog.text
    with pytest.raises(ValueError, match="must be a lower-case UUID"):
        SessionRecorder(
            tmp_path, session_id="../x", consult_id=CONSULT, study_instance_uid=None, video=_Ramp(), audio=[]
        )
