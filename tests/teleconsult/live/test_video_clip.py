"""device_adapters.video clip: a capture file made an Ultrasound Multi-frame Image and stored over STOW-RS."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import (
    JPEGBaseline8Bit,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from device_adapters.video.__main__ import main as video_main
from device_adapters.video.to_dicom import build_video_clip, encode_jpeg_frame
from teleconsult.audit import AuditLog
from tests.conftest import PASSWORD, require_tool
from tests.factories import make_image
from tests.teleconsult.live.conftest import Served

FPS = 15


def _video(path: Path, frames: int = 40) -> Path:
    """An MJPEG file whose picture brightens frame by frame (so frames differ and keep their order)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (160, 120))
    assert writer.isOpened()
    for index in range(frames):
        image = np.zeros((120, 160, 3), dtype=np.uint8)
        image[:, :, 1] = 40 + index * 5  # green, in OpenCV's BGR
        image[40:80, 60:100] = 255
        writer.write(image)
    writer.release()
    return path


def _instances(served: Served, sop_class: str) -> list[Path]:
    records = served.store.index.instances_of_study(served.study.StudyInstanceUID)
    return [served.store.files.path(r.file_key) for r in records if r.sop_class_uid == sop_class]


def _argv(served: Served, tmp_path: Path, *more: str) -> list[str]:
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    base = ["--server", served.base, "--username", "sono1", "--password-file", str(password)]
    return ["clip", *base, "--source", str(_video(tmp_path / "us.avi")), *more]


def test_a_clip_of_the_capture_card_joins_the_study_as_ultrasound(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dciodvfy = require_tool("dciodvfy")
    argv = _argv(served, tmp_path, "--study", served.study.StudyInstanceUID, "--seconds", "1.5")
    assert asyncio.run(asyncio.to_thread(video_main, argv)) == 0
    sop_instance_uid = capsys.readouterr().out.strip()

    [file] = _instances(served, UltrasoundMultiFrameImageStorage)
    ds = dcmread(file)
    assert ds.SOPInstanceUID == sop_instance_uid
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert (ds.Modality, ds.PatientID, ds.AccessionNumber) == ("US", "P0001", "A0001")
    assert str(ds.PatientName) == str(served.study.PatientName)
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY"]  # straight off the device, not through WebRTC
    assert (ds.SeriesNumber, ds.OperatorsName) == (9102, "sono1^")
    frames = int(ds.NumberOfFrames)
    assert 15 <= frames <= 30  # 1.5 s at 15 fps, give or take the pacing of a busy machine
    assert 40 < float(ds.FrameTime) < 130
    assert ds.CineRate == round(1000 / float(ds.FrameTime))
    pixels = ds.pixel_array
    assert pixels.shape == (frames, 120, 160, 3)
    greens = [float(frame[:, :, 1][:30].mean()) for frame in pixels]
    assert greens == sorted(greens)  # in the order they were captured
    assert abs(float(pixels[0][60, 80].mean()) - 255) < 20

    checked = subprocess.run([dciodvfy, str(file)], capture_output=True, text=True, timeout=60, check=False)
    lines = (checked.stdout + checked.stderr).splitlines()
    assert "USMultiFrameImage" in lines[0]
    assert [line for line in lines if line.startswith("Error")] == []
    stored = [
        r for r in AuditLog(served.store.index.engine).query(limit=100) if r["action"] == "instance.store"
    ]
    assert any(r["actor"] == "sono1" and sop_instance_uid in str(r["detail"]) for r in stored)


def test_a_clip_can_name_the_consult_and_be_a_secondary_capture(served: Served, tmp_path: Path) -> None:
    argv = _argv(served, tmp_path, "--consult", served.consult_id, "--seconds", "0.5", "--sop-class", "sc")
    assert asyncio.run(asyncio.to_thread(video_main, argv)) == 0
    [file] = _instances(served, MultiFrameTrueColorSecondaryCaptureImageStorage)
    ds = dcmread(file)
    assert (ds.StudyInstanceUID, ds.ConversionType, ds.Modality) == (
        served.study.StudyInstanceUID,
        "DV",
        "US",
    )
    assert int(ds.NumberOfFrames) >= 2


def test_a_clip_refused_by_the_server_fails_the_command(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _argv(served, tmp_path, "--study", "1.2.3.4.5.6", "--seconds", "0.5")
    assert asyncio.run(asyncio.to_thread(video_main, argv)) == 1
    assert "HTTP 404" in capsys.readouterr().err


def _jpegs(count: int, size: tuple[int, int] = (6, 8)) -> list[bytes]:
    return [encode_jpeg_frame(np.full((*size, 3), 10 * i, dtype=np.uint8)) for i in range(count)]


COMMON = {
    "frame_time_ms": 40.0,
    "series_instance_uid": "2.25.1",
    "sop_instance_uid": "2.25.2",
    "instance_number": 1,
    "captured_at": datetime(2026, 11, 24, 8, 0, tzinfo=UTC),
    "manufacturer": "teleconsult",
    "software_versions": "1",
}


@pytest.mark.parametrize("kind", ["sc", "us"])
def test_the_clip_builder_round_trips(kind: str) -> None:
    ds = build_video_clip(make_image(modality="US"), _jpegs(3), kind=kind, **COMMON)  # type: ignore[arg-type]
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    back = dcmread(BytesIO(buffer.getvalue()))
    assert (back.NumberOfFrames, back.Rows, back.Columns, back.FrameTime) == (3, 6, 8, 40)
    assert (back.CineRate, back.PhotometricInterpretation) == (25, "YBR_FULL_422")
    assert back.pixel_array.shape == (3, 6, 8, 3)
    assert back.SOPClassUID == (
        UltrasoundMultiFrameImageStorage if kind == "us" else MultiFrameTrueColorSecondaryCaptureImageStorage
    )


def test_the_clip_builder_checks_its_frames() -> None:
    header = make_image()
    with pytest.raises(ValueError, match="at least two frames"):
        build_video_clip(header, _jpegs(1), kind="sc", **COMMON)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differs from frame 0"):
        build_video_clip(header, [*_jpegs(2), *_jpegs(1, (8, 8))], kind="sc", **COMMON)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a JPEG"):
        build_video_clip(header, [b"\x00\x01", b"\x00\x01"], kind="sc", **COMMON)  # type: ignore[arg-type]
    ok, sampled_420 = cv2.imencode(".jpg", np.zeros((8, 8, 3), dtype=np.uint8))
    assert ok
    with pytest.raises(ValueError, match="4:2:2"):
        build_video_clip(header, [sampled_420.tobytes()] * 2, kind="sc", **COMMON)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'xx' is not a valid ClipKind"):
        build_video_clip(header, _jpegs(2), kind="xx", **COMMON)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="frame_time_ms"):
        build_video_clip(header, _jpegs(2), kind="sc", **{**COMMON, "frame_time_ms": 0})  # type: ignore[arg-type]
