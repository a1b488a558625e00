"""Snapshots: the sender's latest frame as a Secondary Capture in the consult's study, valid and findable."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import SecondaryCaptureImageStorage

from device_adapters.video.to_dicom import build_video_capture
from teleconsult.audit import AuditLog
from tests.conftest import RecordingBus, require_tool
from tests.factories import make_image
from tests.teleconsult.live.conftest import RED, Served, frame_where, join, looks_like


def test_a_snapshot_is_stored_in_the_consults_study(served: Served, bus: RecordingBus) -> None:
    dciodvfy = require_tool("dciodvfy")
    session = served.start_session()
    path = f"/api/live-sessions/{session['id']}/snapshot"
    early = served.call("POST", "specialist", path)
    assert (early.status_code, early.json()["code"]) == (409, "conflict")
    assert "no video frame yet" in early.json()["detail"]

    async def scenario() -> list[dict[str, object]]:
        sender = await join(served, "sono1", session["id"], "sender")
        viewer = await join(served, "specialist", session["id"], "viewer")
        await frame_where(await viewer.track("video"), looks_like(RED))
        taken = []
        for user in ("specialist", "sono1"):
            response = await served.acall("POST", user, path)
            assert response.status_code == 201, response.text
            taken.append(response.json())
        await sender.close()
        await viewer.close()
        return taken

    first, second = asyncio.run(scenario())
    study_uid = served.study.StudyInstanceUID
    assert first["study_instance_uid"] == second["study_instance_uid"] == study_uid
    assert first["series_instance_uid"] == second["series_instance_uid"]  # one series per session
    assert first["sop_instance_uid"] != second["sop_instance_uid"]
    assert (first["sop_class_uid"], first["rows"], first["columns"]) == (
        SecondaryCaptureImageStorage,
        120,
        160,
    )

    records = {r.sop_instance_uid: r for r in served.store.index.instances_of_study(study_uid)}
    file = served.store.files.path(records[first["sop_instance_uid"]].file_key)
    ds = dcmread(file)
    assert ds.SOPClassUID == SecondaryCaptureImageStorage
    assert (ds.PatientID, ds.StudyInstanceUID, ds.AccessionNumber) == ("P0001", study_uid, "A0001")
    assert str(ds.PatientName) == str(served.study.PatientName)
    assert (ds.Modality, ds.ConversionType, ds.LossyImageCompression) == ("US", "DV", "01")
    assert (ds.InstanceNumber, ds.OperatorsName) == (1, "specialist^")
    pixels = ds.pixel_array
    assert pixels.shape == (120, 160, 3)
    assert all(abs(float(pixels[..., i].mean()) - RED[i]) < 40 for i in range(3))
    assert dcmread(served.store.files.path(records[second["sop_instance_uid"]].file_key)).InstanceNumber == 2

    checked = subprocess.run([dciodvfy, str(file)], capture_output=True, text=True, timeout=60, check=False)
    lines = (checked.stdout + checked.stderr).splitlines()
    assert "SCImage" in lines[0]
    assert [line for line in lines if line.startswith("Error")] == []

    stored = [e for e in bus.events if e.type == "instance.stored"]
    assert first["sop_instance_uid"] in {e.data.get("sop_instance_uid") for e in stored}
    rows = [r for r in AuditLog(served.store.index.engine).query(limit=200) if r["action"] == "live.snapshot"]
    assert [(r["actor"], r["outcome"]) for r in rows[:2]] == [("sono1", "success"), ("specialist", "success")]
    assert first["sop_instance_uid"] in rows[1]["detail"]
    assert rows[1]["study_instance_uid"] == study_uid

    served.call("POST", "sono1", f"/api/live-sessions/{session['id']}/end")
    late = served.call("POST", "specialist", path)
    assert (late.status_code, late.json()["code"]) == (409, "conflict")


def test_the_builder_checks_its_input() -> None:
    header = make_image()
    good = np.zeros((4, 6, 3), dtype=np.uint8)
    common = {
        "series_instance_uid": "2.25.1",
        "sop_instance_uid": "2.25.2",
        "instance_number": 1,
        "captured_at": datetime(2026, 11, 24, 8, 0, tzinfo=UTC),
        "manufacturer": "teleconsult",
        "software_versions": "1",
    }
    ds = build_video_capture(header, good, **common)  # type: ignore[arg-type]
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (4, 6, 3)
    with pytest.raises(ValueError, match="pixels must be an RGB frame"):
        build_video_capture(header, np.zeros((4, 6), dtype=np.uint8), **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype uint8"):
        build_video_capture(header, good.astype(np.uint16), **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aware"):
        build_video_capture(header, good, **{**common, "captured_at": datetime(2026, 1, 1)})  # type: ignore[arg-type]
    del header.StudyInstanceUID
    with pytest.raises(ValueError, match="StudyInstanceUID"):
        build_video_capture(header, good, **common)  # type: ignore[arg-type]


def test_a_frame_of_a_non_ultrasound_study_is_filed_as_its_modality_and_keeps_the_time_zone() -> None:
    header = make_image(modality="DX")
    header.TimezoneOffsetFromUTC = "+0800"
    ds = build_video_capture(
        header,
        np.zeros((2, 2, 3), dtype=np.uint8),
        series_instance_uid="2.25.1",
        sop_instance_uid="2.25.2",
        instance_number=3,
        captured_at=datetime(2026, 11, 24, 1, 30, tzinfo=UTC),
        manufacturer="teleconsult",
        software_versions="1",
    )
    assert (ds.Modality, ds.TimezoneOffsetFromUTC) == ("DX", "+0800")
    assert (str(ds.ContentDate), str(ds.ContentTime)[:4]) == ("20261124", "0930")


def test_without_recording_only_the_next_seconds_can_be_clipped(served: Served) -> None:
    """The last seconds come from the recording: a session that is not recorded has none to give."""
    session = served.start_session()
    assert session["recorded"] is False
    path = f"/api/live-sessions/{session['id']}/clip"

    async def scenario() -> None:
        sender = await join(served, "sono1", session["id"], "sender")
        viewer = await join(served, "specialist", session["id"], "viewer")
        await frame_where(await viewer.track("video"), looks_like(RED))
        last = await served.acall("POST", "specialist", path, {"last_seconds": 1})
        assert (last.status_code, last.json()["code"]) == (409, "conflict")
        assert "not recorded" in last.json()["detail"]
        following = await served.acall("POST", "specialist", path, {"next_seconds": 0.5})
        assert following.status_code == 201, following.text
        assert following.json()["frames"] >= 2
        await sender.close()
        await viewer.close()

    asyncio.run(scenario())
    listed = served.call("GET", "specialist", f"/api/live-sessions/recordings?consult_id={served.consult_id}")
    assert (listed.status_code, listed.json()) == (200, [])
    missing = served.call("GET", "specialist", f"/api/live-sessions/{session['id']}/recording")
    assert missing.status_code == 404
