"""Encode the corpus as tiny DICOM instances: data sets for teleconsult, Part 10 files for Orthanc.

Instances are as small as their IOD allows (8x8 pixel images, a 12-lead ECG
of 16 samples, a one-paragraph SR) because the benchmark measures the index,
not the disk: loading 100,000 of them must take minutes, not hours. The
header attributes a query can match are all real and complete.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian

from bench.query.corpus import SOP_CLASSES, Corpus, Series, Study

__all__ = ["EncodedInstance", "encode_corpus", "part10_bytes", "write_part10_files"]

_PIXELS = 8
_ECG_SAMPLES = 16
_IMPLEMENTATION_CLASS_UID = "2.25.303872133582384766611574129420353624101"


@dataclass(frozen=True, slots=True)
class EncodedInstance:
    """One instance as a C-STORE carries it: the data set without File Meta."""

    sop_class_uid: str
    sop_instance_uid: str
    study_index: int
    data_set: bytes


def _patient_study_series(study: Study, series: Series) -> Dataset:
    """The attributes every instance of a series shares (one Dataset reused for all of them)."""
    ds = Dataset()
    patient = study.patient
    if patient.charset is not None:
        ds.SpecificCharacterSet = patient.charset
    ds.SOPClassUID = SOP_CLASSES[series.modality]
    ds.SOPInstanceUID = series.sop_instance_uids[0]
    ds.StudyDate = study.study_date
    ds.SeriesDate = study.study_date
    ds.StudyTime = study.study_time
    ds.AccessionNumber = study.accession_number
    ds.Modality = series.modality
    ds.Manufacturer = "BENCH"
    ds.InstitutionName = study.institution if patient.charset else "Township Health Centre"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study.description if patient.charset else series.modality
    ds.SeriesDescription = series.modality
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.StudyID = study.accession_number[-8:]
    ds.SeriesNumber = series.number
    ds.InstanceNumber = 1
    _add_content(ds, series.modality)
    return ds


def _add_content(ds: Dataset, modality: str) -> None:
    if modality == "ECG":
        _add_waveform(ds)
    elif modality == "SR":
        _add_report(ds)
    else:
        _add_pixels(ds)


def _add_pixels(ds: Dataset) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = _PIXELS
    ds.Columns = _PIXELS
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(_PIXELS * _PIXELS))


def _add_waveform(ds: Dataset) -> None:
    group = Dataset()
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = 12
    group.NumberOfWaveformSamples = _ECG_SAMPLES
    group.SamplingFrequency = 500
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    channels = []
    for _ in range(12):
        channel = Dataset()
        channel.ChannelSensitivity = 1
        channel.ChannelSampleSkew = 0
        channel.WaveformBitsStored = 16
        channels.append(channel)
    group.ChannelDefinitionSequence = channels
    group.WaveformData = bytes(12 * _ECG_SAMPLES * 2)
    ds.WaveformSequence = [group]


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _add_report(ds: Dataset) -> None:
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic Imaging Report")]
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    text.ConceptNameCodeSequence = [_code("121071", "DCM", "Finding")]
    text.TextValue = "No abnormality detected."
    ds.ContentSequence = [text]


def _encode(ds: Dataset) -> bytes:
    """Explicit VR Little Endian, no preamble and no File Meta: what C-STORE sends."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    ds.set_original_encoding(False, True, None)
    write_dataset(buffer, ds)
    return buffer.getvalue()


def encode_corpus(corpus: Corpus) -> Iterator[EncodedInstance]:
    """Every instance of the corpus, study by study."""
    for study_index, study in enumerate(corpus.studies):
        for series in study.series:
            ds = _patient_study_series(study, series)
            for number, sop_instance_uid in enumerate(series.sop_instance_uids, start=1):
                ds.SOPInstanceUID = sop_instance_uid
                ds.InstanceNumber = number
                yield EncodedInstance(ds.SOPClassUID, sop_instance_uid, study_index, _encode(ds))


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    """One group 0002 element in Explicit VR Little Endian (PS3.5 7.1.2)."""
    if len(value) % 2:
        value += b"\x00"  # UIs are padded with NUL
    if vr == b"OB":
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _file_meta(instance: EncodedInstance) -> bytes:
    """Preamble and File Meta, by hand: pydicom's writer doubled the time to write the files."""
    body = b"".join(
        (
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", instance.sop_class_uid.encode()),
            _meta_element(0x0003, b"UI", instance.sop_instance_uid.encode()),
            _meta_element(0x0010, b"UI", ExplicitVRLittleEndian.encode()),
            _meta_element(0x0012, b"UI", _IMPLEMENTATION_CLASS_UID.encode()),
        )
    )
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return b"\x00" * 128 + b"DICM" + group_length + body


def part10_bytes(instance: EncodedInstance) -> bytes:
    """The instance as a Part 10 file: preamble, File Meta, data set."""
    return _file_meta(instance) + instance.data_set


def write_part10_files(instances: list[EncodedInstance], directory: Path, groups: int) -> list[Path]:
    """Part 10 files in ``groups`` sub-directories, whole studies per directory (one sender each)."""
    group_dirs = [directory / f"g{group}" for group in range(groups)]
    for group_dir in group_dirs:
        group_dir.mkdir(parents=True, exist_ok=True)
    for number, instance in enumerate(instances):
        path = group_dirs[instance.study_index % groups] / f"{number:07d}.dcm"
        path.write_bytes(part10_bytes(instance))
    return group_dirs
