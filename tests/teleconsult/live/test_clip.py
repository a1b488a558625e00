"""Clips of a live session: the last and the next seconds as multi-frame Secondary Captures in the study."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import JPEGBaseline8Bit, MultiFrameTrueColorSecondaryCaptureImageStorage

from teleconsult.audit import AuditLog
from teleconsult.config import Settings
from teleconsult.media import MediaOptions
from tests.conftest import RecordingBus, require_tool
from tests.teleconsult.live.conftest import OPTIONS, RED, Served, frame_where, join, looks_like


@pytest.fixture
def media_options(app_settings: Settings) -> MediaOptions:
    return dataclasses.replace(
        OPTIONS, recordings_dir=app_settings.recordings_dir, record=True, clip_max_seconds=10
    )


def _check(served: Served, clip: dict[str, Any], dciodvfy: str) -> None:
    """The stored clip: what the answer says, valid (dciodvfy), decodable, red, played at its rate."""
    assert clip["sop_class_uid"] == MultiFrameTrueColorSecondaryCaptureImageStorage
    assert (clip["rows"], clip["columns"]) == (120, 160)
    assert clip["frames"] > 5
    assert 0.5 < clip["duration_seconds"] < 2.5
    assert clip["frame_time_ms"] == pytest.approx(
        clip["duration_seconds"] * 1000 / (clip["frames"] - 1), rel=1e-3
    )
    records = {
        r.sop_instance_uid: r for r in served.store.index.instances_of_study(served.study.StudyInstanceUID)
    }
    file = served.store.files.path(records[clip["sop_instance_uid"]].file_key)
    ds = dcmread(file)
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert (ds.NumberOfFrames, ds.PhotometricInterpretation) == (clip["frames"], "YBR_FULL_422")
    assert ds.FrameIncrementPointer == 0x00181063
    assert float(ds.FrameTime) == pytest.approx(clip["frame_time_ms"], rel=1e-3)
    assert (ds.LossyImageCompression, ds.LossyImageCompressionMethod) == ("01", "ISO_10918_1")
    assert (ds.PatientID, ds.StudyInstanceUID, ds.Modality) == ("P0001", served.study.StudyInstanceUID, "US")
    pixels = ds.pixel_array
    assert pixels.shape == (clip["frames"], 120, 160, 3)
    assert all(abs(float(pixels[..., i].mean()) - RED[i]) < 40 for i in range(3))
    checked = subprocess.run([dciodvfy, str(file)], capture_output=True, text=True, timeout=60, check=False)
    lines = (checked.stdout + checked.stderr).splitlines()
    assert "MultiframeTrueColorSCImage" in lines[0]
    assert [line for line in lines if line.startswith("Error")] == []


def test_the_last_and_the_next_seconds_are_stored_in_the_consults_study(
    served: Served, bus: RecordingBus
) -> None:
    dciodvfy = require_tool("dciodvfy")
    session = served.start_session()
    path = f"/api/live-sessions/{session['id']}/clip"
    early = served.call("POST", "specialist", path, {"next_seconds": 1})
    assert (early.status_code, early.json()["code"]) == (409, "conflict")
    assert "no sender" in early.json()["detail"]

    async def scenario() -> list[dict[str, Any]]:
        sender = await join(served, "sono1", session["id"], "sender")
        viewer = await join(served, "specialist", session["id"], "viewer")
        await frame_where(await viewer.track("video"), looks_like(RED))
        await asyncio.sleep(2.5)  # the recording's encoder holds back a few frames: let it run
        taken = []
        for user, body in (("specialist", {"last_seconds": 1.5}), ("sono1", {"next_seconds": 1})):
            response = await served.acall("POST", user, path, body)
            assert response.status_code == 201, response.text
            taken.append(response.json())
        for user, body in (
            ("specialist", {"last_seconds": 1, "next_seconds": 1}),
            ("specialist", {}),
            ("specialist", {"next_seconds": 11}),  # more than TELECONSULT_LIVE_CLIP_MAX_SECONDS here
            ("specialist", {"last_seconds": 0}),
        ):
            refused = await served.acall("POST", user, path, body)
            assert refused.status_code == 422, (body, refused.text)
            assert refused.headers["content-type"].startswith("application/problem+json")
        for user, code in (("sono2", 404), ("admin", 403)):
            assert (await served.acall("POST", user, path, {"next_seconds": 1})).status_code == code
        await sender.close()
        await viewer.close()
        return taken

    last, following = asyncio.run(scenario())
    for clip in (last, following):
        _check(served, clip, dciodvfy)
    assert last["series_instance_uid"] == following["series_instance_uid"]  # the session's capture series
    instances = served.store.index.instances_of_study(served.study.StudyInstanceUID)
    numbers = {
        r.sop_instance_uid: dcmread(served.store.files.path(r.file_key)).InstanceNumber for r in instances
    }
    assert (numbers[last["sop_instance_uid"]], numbers[following["sop_instance_uid"]]) == (1, 2)

    stored = {e.data.get("sop_instance_uid") for e in bus.events if e.type == "instance.stored"}
    assert {last["sop_instance_uid"], following["sop_instance_uid"]} <= stored
    rows = [r for r in AuditLog(served.store.index.engine).query(limit=300) if r["action"] == "live.clip"]
    successes = [r for r in rows if r["outcome"] == "success"]
    assert [r["actor"] for r in successes] == ["sono1", "specialist"]
    assert last["sop_instance_uid"] in successes[1]["detail"]
    assert "the last 1.5 s" in successes[1]["detail"]
    assert {(r["actor"], r["outcome"]) for r in rows if r["outcome"] != "success"} >= {
        ("specialist", "failure"),  # 409 before the sender
        ("sono2", "denied"),
        ("admin", "denied"),
    }

    served.call("POST", "sono1", f"/api/live-sessions/{session['id']}/end")
    late = served.call("POST", "specialist", path, {"last_seconds": 1})
    assert (late.status_code, late.json()["code"]) == (409, "conflict")
