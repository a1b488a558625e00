"""Synthetic DICOM for tests: never real patients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
TWELVE_LEAD_ECG = "1.2.840.10008.5.1.4.1.1.9.1.1"


def _base(
    sop_class_uid: str,
    *,
    patient_name: str,
    patient_id: str,
    charset: str | list[str] | None,
    study_instance_uid: str | None,
    series_instance_uid: str | None,
    sop_instance_uid: str | None,
    modality: str,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.StudyDate = "20261123"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "A0001"
    ds.Modality = modality
    ds.InstitutionName = "Township Health Centre 1"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Abdomen"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.StudyInstanceUID = study_instance_uid or generate_uid()
    ds.SeriesInstanceUID = series_instance_uid or generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    return ds


def make_image(
    sop_class_uid: str = US_IMAGE,
    *,
    patient_name: str = "Wang^XiaoMing=王^小明",
    patient_id: str = "P0001",
    charset: str | list[str] | None = "GB18030",
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    modality: str = "US",
    rows: int = 32,
    columns: int = 32,
    seed: int = 0,
) -> Dataset:
    ds = _base(
        sop_class_uid,
        patient_name=patient_name,
        patient_id=patient_id,
        charset=charset,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        sop_instance_uid=sop_instance_uid,
        modality=modality,
    )
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(seed)
    ds.PixelData = rng.integers(0, 255, (rows, columns), dtype=np.uint8).tobytes()
    return ds


def make_ecg(
    *, patient_name: str = "Li^Hua=李^华", patient_id: str = "P0002", charset: str = "ISO_IR 192"
) -> Dataset:
    ds = _base(
        TWELVE_LEAD_ECG,
        patient_name=patient_name,
        patient_id=patient_id,
        charset=charset,
        study_instance_uid=None,
        series_instance_uid=None,
        sop_instance_uid=None,
        modality="ECG",
    )
    samples = 5000
    group = Dataset()
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = 12
    group.NumberOfWaveformSamples = samples
    group.SamplingFrequency = 500
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.ChannelDefinitionSequence = []
    for lead in range(12):
        channel = Dataset()
        channel.ChannelSensitivity = 1
        channel.ChannelSampleSkew = 0
        channel.WaveformBitsStored = 16
        group.ChannelDefinitionSequence.append(channel)
        del lead
    t = np.arange(samples) / 500
    data = (np.sin(2 * np.pi * 1.2 * t)[:, None] * 500 * np.ones((1, 12))).astype("<i2")
    group.WaveformData = data.tobytes()
    ds.WaveformSequence = [group]
    return ds


def encode(ds: Dataset, transfer_syntax_uid: str = ExplicitVRLittleEndian) -> bytes:
    """The data set as a C-STORE carries it: no preamble, no File Meta."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = transfer_syntax_uid == ImplicitVRLittleEndian
    ds.set_original_encoding(fp.is_implicit_VR, True, None)
    write_dataset(fp, ds)
    return fp.getvalue()


def part10(
    ds: Dataset,
    transfer_syntax_uid: str = ExplicitVRLittleEndian,
    *,
    claimed_sop_class_uid: str | None = None,
) -> bytes:
    """A Part 10 file; ``claimed_sop_class_uid`` puts another SOP class in its File Meta."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = claimed_sop_class_uid or ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax_uid
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1"
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_file_meta_info(fp, meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + fp.getvalue() + encode(ds, transfer_syntax_uid)


def write_part10(ds: Dataset, path: Path, transfer_syntax_uid: str = ExplicitVRLittleEndian) -> Path:
    path.write_bytes(part10(ds, transfer_syntax_uid))
    return path
