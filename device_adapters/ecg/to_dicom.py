"""The one builder of DICOM ECG waveforms: 12-Lead ECG, else General ECG Waveform Storage.

12-Lead ECG (PS3.3 A.34.3) is used when the rhythm has exactly the standard
twelve leads, at 200-1000 Hz, for at most 16 s (and 16384 samples); any
other set of at most 24 leads at 200-1000 Hz becomes General ECG (A.34.4).
Everything else is refused. Each multiplex group carries 16-bit signed
samples (WaveformBitsAllocated 16, SS), channels coded from CID 3001
(SCPECG scheme), sensitivity in microvolts (UCUM ``uV``) with correction
factor 1, the source's baseline, time skew 0 and the filters the source
states. Samples that do not fit 16 bits are divided by the smallest
integer that makes them fit, and the sensitivity multiplied by it.

UIDs derive from the source file's SHA-256 and the organisation (UUID
version 5, in the ``2.25`` form or under ``TELECONSULT_UID_ROOT``): the same
file imported twice makes the same instance, which the store takes as a
duplicate instead of filing a second study.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds

from device_adapters.ecg.errors import EcgImportError, UnsupportedEcgError
from device_adapters.ecg.leads import STANDARD_12_LEADS, lead_code
from device_adapters.ecg.record import EcgRecord, Lead, WaveformGroup

__all__ = [
    "GENERAL_ECG_WAVEFORM_STORAGE",
    "TRANSFER_SYNTAX_UID",
    "TWELVE_LEAD_ECG_WAVEFORM_STORAGE",
    "build_ecg_waveform",
    "encode",
]

TWELVE_LEAD_ECG_WAVEFORM_STORAGE = "1.2.840.10008.5.1.4.1.1.9.1.1"
GENERAL_ECG_WAVEFORM_STORAGE = "1.2.840.10008.5.1.4.1.1.9.1.2"
TRANSFER_SYNTAX_UID = ExplicitVRLittleEndian
_NAMESPACE = uuid.UUID("6f0c7e0a-3c1e-5b1a-9a53-2f8e0e6b6c1d")
_UTF8 = "ISO_IR 192"
_INT16 = 32767
_LO_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class _Iod:
    sop_class_uid: str
    name: str
    max_groups: int
    max_channels: int
    max_samples: int | None
    max_seconds: float | None


_TWELVE_LEAD = _Iod(TWELVE_LEAD_ECG_WAVEFORM_STORAGE, "12-Lead ECG", 5, 13, 16384, 16.0)
_GENERAL = _Iod(GENERAL_ECG_WAVEFORM_STORAGE, "General ECG", 4, 24, None, None)
_MIN_HZ, _MAX_HZ = 200.0, 1000.0


def _fits(iod: _Iod, record: EcgRecord) -> str | None:
    """Why ``record`` does not fit ``iod``; None if it does."""
    if len(record.groups) > iod.max_groups:
        return f"{len(record.groups)} waveforms (at most {iod.max_groups})"
    for group in record.groups:
        if not _MIN_HZ <= group.sampling_frequency <= _MAX_HZ:
            return f"a sampling rate of {group.sampling_frequency:g} Hz (200-1000 Hz)"
        if len(group.leads) > iod.max_channels:
            return f"{len(group.leads)} leads (at most {iod.max_channels})"
        if iod.max_samples is not None and group.samples_per_lead > iod.max_samples:
            return f"{group.samples_per_lead} samples per lead (at most {iod.max_samples})"
        if iod.max_seconds is not None and group.seconds > iod.max_seconds + 1e-9:
            return f"{group.seconds:g} s (at most {iod.max_seconds:g} s)"
    return None


def _iod(record: EcgRecord) -> _Iod:
    if (
        sorted(lead.name for lead in record.rhythm.leads) == sorted(STANDARD_12_LEADS)
        and _fits(_TWELVE_LEAD, record) is None
    ):
        return _TWELVE_LEAD
    reason = _fits(_GENERAL, record)
    if reason is not None:
        raise UnsupportedEcgError(f"the ECG cannot be stored as DICOM: it has {reason}")
    return _GENERAL


def _derived_uid(key: str, purpose: str, root: str | None) -> str:
    number = uuid.uuid5(_NAMESPACE, f"{key}/{purpose}").int
    if root is None:
        return f"2.25.{number}"
    return f"{root}.{number}"[:64].rstrip(".")


def _lo(value: str) -> str:
    """A LO/SH-safe value: no backslash or control characters, at most 64 characters."""
    return _LO_FORBIDDEN.sub(" ", value).strip()[:64]


def _pn(family: str, given: str = "") -> str:
    family, given = _lo(family).replace("^", " ").replace("=", " "), _lo(given).replace("^", " ")
    return f"{family}^{given}" if given else family


def _da(value: date) -> str:
    return value.strftime("%Y%m%d")


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))  # type: ignore[no-any-return]


def _code(value: str, scheme: str, meaning: str, version: str | None = None) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    if version:
        item.CodingSchemeVersion = version
    item.CodeMeaning = meaning
    return item


def _sixteen_bit(lead: Lead) -> tuple[np.ndarray, float]:
    peak = int(np.max(np.abs(lead.samples)))
    factor = max(1, math.ceil(peak / _INT16))
    if factor == 1:
        return lead.samples, lead.sensitivity_uv
    return np.rint(lead.samples / factor).astype(np.int64), lead.sensitivity_uv * factor


def _channel(lead: Lead, sensitivity: float, group: WaveformGroup) -> Dataset:
    code = lead_code(lead.name)
    channel = Dataset()
    channel.ChannelLabel = _lo(lead.name)[:16]
    channel.ChannelSourceSequence = [_code(code.value, code.scheme, code.meaning, code.version)]
    channel.ChannelSensitivity = _ds(sensitivity)
    channel.ChannelSensitivityUnitsSequence = [_code("uV", "UCUM", "microvolt")]
    channel.ChannelSensitivityCorrectionFactor = "1"
    channel.ChannelBaseline = _ds(lead.baseline_uv)
    channel.ChannelTimeSkew = "0"
    channel.WaveformBitsStored = 16
    filters = group.filters
    if filters.low_hz is not None:
        channel.FilterLowFrequency = _ds(filters.low_hz)
    if filters.high_hz is not None:
        channel.FilterHighFrequency = _ds(filters.high_hz)
    if filters.notch_hz is not None:
        channel.NotchFilterFrequency = _ds(filters.notch_hz)
    return channel


def _multiplex(group: WaveformGroup, twelve_lead: bool) -> Dataset:
    leads = list(group.leads)
    if twelve_lead:
        order = {name: index for index, name in enumerate(STANDARD_12_LEADS)}
        leads.sort(key=lambda lead: order.get(lead.name, len(order)))
    columns, channels = [], []
    for lead in leads:
        samples, sensitivity = _sixteen_bit(lead)
        columns.append(samples)
        channels.append(_channel(lead, sensitivity, group))
    item = Dataset()
    item.MultiplexGroupLabel = group.label
    item.WaveformOriginality = "DERIVED" if group.derived else "ORIGINAL"
    item.NumberOfWaveformChannels = len(leads)
    item.NumberOfWaveformSamples = group.samples_per_lead
    item.SamplingFrequency = _ds(group.sampling_frequency)
    item.ChannelDefinitionSequence = channels
    item.WaveformBitsAllocated = 16
    item.WaveformSampleInterpretation = "SS"
    interleaved = np.stack(columns, axis=1).astype("<i2")
    item.add(DataElement(0x54001010, "OW", interleaved.tobytes()))
    return item


def _check_patient_id(patient_id: str) -> str:
    if len(patient_id) > 64 or _LO_FORBIDDEN.search(patient_id):
        raise EcgImportError(
            "the patient ID is not a valid DICOM Patient ID (at most 64 characters, no backslash or "
            "control characters)"
        )
    return patient_id


def build_ecg_waveform(
    record: EcgRecord,
    *,
    source_sha256: str,
    organisation: str,
    uid_root: str | None,
    imported_at: datetime,
) -> Dataset:
    """The DICOM ECG of ``record``; ``imported_at`` stands in for an acquisition time the file lacks."""
    iod = _iod(record)
    key = f"{organisation}/{source_sha256}"
    acquired = record.acquired_at or imported_at
    ds = Dataset()
    ds.SpecificCharacterSet = _UTF8
    ds.SOPClassUID = iod.sop_class_uid
    ds.SOPInstanceUID = _derived_uid(key, "instance", uid_root)
    # Patient
    patient = record.patient
    ds.PatientName = _pn(patient.family_name, patient.given_name)
    ds.PatientID = _check_patient_id(patient.patient_id.strip())
    ds.PatientBirthDate = _da(patient.birth_date) if patient.birth_date else ""
    ds.PatientSex = patient.sex
    # General Study
    ds.StudyInstanceUID = _derived_uid(key, "study", uid_root)
    ds.StudyDate = acquired.strftime("%Y%m%d")
    ds.StudyTime = acquired.strftime("%H%M%S")
    ds.ReferringPhysicianName = _pn(record.referring_physician)
    ds.StudyID = acquired.strftime("ECG%y%m%d%H%M%S")
    ds.AccessionNumber = ""
    ds.StudyDescription = "ECG"
    # General Series
    ds.Modality = "ECG"
    ds.SeriesInstanceUID = _derived_uid(key, "series", uid_root)
    ds.SeriesNumber = "1"
    ds.SeriesDescription = f"{iod.name} from {record.source_format.label}"
    # General Equipment
    device = record.device
    ds.Manufacturer = _lo(device.manufacturer)
    for keyword, value in (
        ("InstitutionName", device.institution),
        ("InstitutionalDepartmentName", device.department),
        ("ManufacturerModelName", device.model),
        ("DeviceSerialNumber", device.serial_number),
        ("SoftwareVersions", device.software_version),
    ):
        if _lo(value):
            setattr(ds, keyword, _lo(value))
    # Waveform Identification
    ds.InstanceNumber = "1"
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.AcquisitionDateTime = acquired.strftime("%Y%m%d%H%M%S")
    offset = acquired.strftime("%z")
    if offset:
        ds.TimezoneOffsetFromUTC = offset
    # Acquisition Context: nothing known beyond the waveform itself.
    ds.AcquisitionContextSequence = []
    # Waveform
    ds.WaveformSequence = [_multiplex(group, iod is _TWELVE_LEAD) for group in record.groups]
    return ds


def encode(ds: Dataset) -> bytes:
    """The data set as the store takes it: Explicit VR Little Endian, no File Meta."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    ds.set_original_encoding(False, True, _UTF8)
    write_dataset(fp, ds)
    return fp.getvalue()
