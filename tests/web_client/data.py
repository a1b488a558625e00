"""Synthetic DICOM for the browser tests: an 8 MB DR, an ultrasound cine, a 12-lead ECG."""

from __future__ import annotations

from datetime import datetime

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from device_adapters.ecg.record import EcgFormat, EcgRecord, Lead, Patient, WaveformGroup
from device_adapters.ecg.to_dicom import build_ecg_waveform
from tests.device_adapters.writers import synthetic_leads
from tests.factories import DX_PRESENTATION, US_MULTIFRAME, make_image

DR_SIZE = 2048
DR_PIXEL_SPACING_MM = 0.139
US_FRAMES = 24
US_FRAME_TIME_MS = 40.0  # 25 frames per second


def today() -> str:
    return datetime.now().strftime("%Y%m%d")


def make_dr(*, patient_name: str, patient_id: str) -> Dataset:
    """A 2048 x 2048, 12-bit-in-16 chest DR (8 MB of pixels) with Pixel Spacing and a window."""
    ds = make_image(
        DX_PRESENTATION,
        modality="DX",
        charset="ISO_IR 192",
        patient_name=patient_name,
        patient_id=patient_id,
        rows=4,
        columns=4,
    )
    ds.StudyDate = today()
    ds.StudyDescription = "Chest PA"
    y, x = np.mgrid[0:DR_SIZE, 0:DR_SIZE]
    # A ramp over the full 12 bits, a bright disc and dark bars: every window shows structure.
    pixels = (x * 4095 // (DR_SIZE - 1)).astype(np.uint16)
    pixels[(x - 1024) ** 2 + (y - 1024) ** 2 < 400**2] = 3500
    pixels[(y // 128) % 4 == 0] //= 4
    ds.Rows = ds.Columns = DR_SIZE
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelSpacing = [DR_PIXEL_SPACING_MM, DR_PIXEL_SPACING_MM]
    ds.ImagerPixelSpacing = [DR_PIXEL_SPACING_MM, DR_PIXEL_SPACING_MM]
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def make_us_cine(*, patient_name: str, patient_id: str) -> Dataset:
    """An 8-bit ultrasound loop: a bright bar sweeps down, one row band per frame, at 25 fps."""
    ds = make_image(
        US_MULTIFRAME, modality="US", patient_name=patient_name, patient_id=patient_id, rows=4, columns=4
    )
    ds.StudyDate = today()
    ds.StudyDescription = "Abdominal ultrasound"
    rows, columns = 240, 320
    frames = np.zeros((US_FRAMES, rows, columns), dtype=np.uint8)
    y, x = np.mgrid[0:rows, 0:columns]
    base = ((x + y) % 64 * 2).astype(np.uint8)
    for index in range(US_FRAMES):
        frame = base.copy()
        top = index * rows // US_FRAMES
        frame[top : top + rows // US_FRAMES + 4, :] = 250
        frames[index] = frame
    ds.Rows, ds.Columns = rows, columns
    ds.NumberOfFrames = US_FRAMES
    ds.FrameTime = US_FRAME_TIME_MS
    ds.CineRate = round(1000 / US_FRAME_TIME_MS)
    ds.FrameIncrementPointer = 0x00181063
    ds.PixelData = frames.tobytes()
    return ds


def make_twelve_lead_ecg(*, family: str, given: str, patient_id: str) -> Dataset:
    """A 10 s, 500 Hz 12-lead ECG made by the product's own builder (device_adapters.ecg.to_dicom)."""
    leads = synthetic_leads(rate=500, seconds=10.0, amplitude=300)
    group = WaveformGroup(
        "RHYTHM", 500.0, tuple(Lead(name, values, 5.0) for name, values in leads.items())
    )  # 5 uV per count: 300 counts = 1.5 mV
    record = EcgRecord(
        EcgFormat.CSV,
        Patient(patient_id, family, given, None, "F"),
        (group,),
        acquired_at=datetime.now(),
    )
    ds = build_ecg_waveform(
        record,
        source_sha256=generate_uid().replace(".", "")[:64],
        organisation="TOWN01",
        uid_root=None,
        imported_at=datetime.now(),
    )
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds
