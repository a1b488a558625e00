"""Fixtures of the image export tests: synthetic pictures (numpy + Pillow), sidecars, dciodvfy.

Every picture is made up here: gradients with noise, never a patient's image.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from device_adapters.images.importer import ImageImporter
from teleconsult.config import Settings
from teleconsult.storage.store import InstanceStore
from tests.conftest import require_tool
from tests.teleconsult.consults.conftest import _cheap_password_hashing  # noqa: F401 - autouse fixture

ROWS, COLUMNS = 50, 70  # not multiples of a JPEG block
SIDECAR: dict[str, Any] = {
    "patient_id": "IMG0001",
    "patient_name": "王^小明",
    "sex": "M",
    "birth_date": "1962-03-04",
    "modality": "DX",
    "body_part": "CHEST",
    "study_date": "2026-11-24",
    "study_time": "09:30:15",
    "accession_number": "A20261124001",
    "study_description": "胸部正位",
}


def grey8(rows: int = ROWS, columns: int = COLUMNS, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(rows) * 2, np.arange(columns) * 3) % 200
    return (ramp + rng.integers(0, 56, (rows, columns))).astype(np.uint8)


def grey16(rows: int = ROWS, columns: int = COLUMNS, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(rows) * 40, np.arange(columns) * 25)
    return (ramp + rng.integers(0, 1000, (rows, columns))).astype(np.uint16)  # a 12-bit DR's range


def rgb(rows: int = ROWS, columns: int = COLUMNS, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.stack(
        [
            grey8(rows, columns, seed),
            grey8(rows, columns, seed + 1)[::-1],
            rng.integers(0, 256, (rows, columns)),
        ],
        axis=2,
    )
    return image.astype(np.uint8)


def encode_image(array: np.ndarray, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def sidecar(**changes: Any) -> bytes:
    values = {**SIDECAR, **changes}
    return json.dumps({k: v for k, v in values.items() if v is not None}, ensure_ascii=False).encode()


def dciodvfy_errors(part10: bytes, folder: Path) -> list[str]:
    """dicom3tools' IOD check of a stored Part 10 file, as stored: its "Error" lines."""
    tool = require_tool("dciodvfy")
    path = folder / "stored.dcm"
    path.write_bytes(part10)
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60, check=False)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def dcmcjpeg_bitstream(pixels: np.ndarray, option: str, bits_stored: int, folder: Path) -> bytes:
    """A JPEG bitstream by DCMTK's dcmcjpeg (+ee 12-bit extended, +el lossless): Pillow writes neither."""
    tool = require_tool("dcmcjpeg")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    source, target = folder / "in.dcm", folder / "out.dcm"
    ds.save_as(source, enforce_file_format=True)
    subprocess.run([tool, option, str(source), str(target)], check=True, capture_output=True, timeout=60)
    from pydicom import dcmread
    from pydicom.encaps import get_frame

    encoded = dcmread(target)
    return bytes(get_frame(encoded.PixelData, 0, number_of_frames=1)).rstrip(b"\x00")


@pytest.fixture
def image_importer(app_settings: Settings, store: InstanceStore) -> ImageImporter:
    return ImageImporter(app_settings, store)
