"""The twelve standard leads of a stored DICOM ECG, in millivolts, or why they cannot be had.

The analyser works on what was stored, whatever route it came in by, so it
reads the DICOM Waveform module rather than the device file: the rhythm
multiplex group (the first original group with the twelve standard leads;
median beats a device computed are ignored, we compute our own), each
channel scaled by pydicom's ``waveform_array`` (sensitivity, correction
factor, baseline) and converted from its UCUM unit (uV, mV, V) to mV.
Leads are recognised by their CID 3001 code (SCPECG ``5.6.3-9-N``) or,
failing that, by their label or code meaning (``Lead II``, ``AVR``).

Anything that cannot be measured soundly raises ``NotAnalysableError``
with a sentence naming what is missing: fewer than the twelve leads, too
short a record, a flat (disconnected) lead, an unknown unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from device_adapters.ecg.leads import STANDARD_12_LEADS, canonical_lead_name, scp_lead_name

__all__ = [
    "ECG_SOP_CLASS_UIDS",
    "MIN_SECONDS",
    "EcgLeads",
    "NotAnalysableError",
    "PatientFacts",
    "patient_of",
    "read_leads",
]

ECG_SOP_CLASS_UIDS = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.9.1.1",  # 12-Lead ECG Waveform Storage
        "1.2.840.10008.5.1.4.1.1.9.1.2",  # General ECG Waveform Storage
    }
)
MIN_SECONDS = 5.0  # three beats even at 40/min; standard carts record 10 s
MAX_SECONDS = 60.0  # a longer rhythm is measured on its first minute
FLAT_MV = 0.05  # a lead whose whole record spans less than this is not connected
_MIN_RATE = 100.0
_TO_MV = {"uV": 1e-3, "mV": 1.0, "V": 1e3}


class NotAnalysableError(Exception):
    """The ECG cannot be measured; ``reason`` says why (no patient data in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EcgLeads:
    sampling_rate: float
    leads_mv: dict[str, npt.NDArray[np.float64]]  # the twelve, in STANDARD_12_LEADS order

    @property
    def seconds(self) -> float:
        return len(self.leads_mv["I"]) / self.sampling_rate


@dataclass(frozen=True, slots=True)
class PatientFacts:
    """What the screen's sex- and age-dependent thresholds need; both may be unknown."""

    sex: str  # "M", "F" or "" (unknown, or O)
    age: int | None


def _lead_name(channel: Dataset) -> str | None:
    for item in channel.get("ChannelSourceSequence", []):
        value = str(item.get("CodeValue", ""))
        if str(item.get("CodingSchemeDesignator", "")) == "SCPECG" and value.startswith("5.6.3-9-"):
            number = value.removeprefix("5.6.3-9-")
            if number.isdigit():
                name = scp_lead_name(int(number))
                if name in STANDARD_12_LEADS:
                    return name
        meaning = canonical_lead_name(str(item.get("CodeMeaning", "")).removeprefix("Lead ").split(" ")[0])
        if meaning in STANDARD_12_LEADS:
            return meaning
    label = canonical_lead_name(str(channel.get("ChannelLabel", "")))
    return label if label in STANDARD_12_LEADS else None


def _unit_factor(channel: Dataset, name: str) -> float:
    units = channel.get("ChannelSensitivityUnitsSequence")
    if not units:
        raise NotAnalysableError(f"lead {name} has no sensitivity unit: its voltages cannot be known")
    unit = str(units[0].get("CodeValue", ""))
    if unit not in _TO_MV:
        raise NotAnalysableError(f"lead {name} is in {unit!r}; only uV, mV and V are understood")
    return _TO_MV[unit]


def _group_leads(group: Dataset) -> dict[str, int]:
    names: dict[str, int] = {}
    for index, channel in enumerate(group.get("ChannelDefinitionSequence", [])):
        name = _lead_name(channel)
        if name is not None and name not in names:
            names[name] = index
    return names


def read_leads(ds: Dataset) -> EcgLeads:
    """The twelve leads of the rhythm of ``ds`` in mV, or ``NotAnalysableError``."""
    groups = list(ds.get("WaveformSequence", []))
    if not groups:
        raise NotAnalysableError("the instance has no waveform")
    chosen: tuple[int, dict[str, int]] | None = None
    seen: list[str] = []
    for index, group in enumerate(groups):
        if str(group.get("WaveformOriginality", "ORIGINAL")) == "DERIVED":
            continue
        names = _group_leads(group)
        seen = seen or list(names)
        if set(STANDARD_12_LEADS) <= set(names):
            chosen = (index, names)
            break
    if chosen is None:
        missing = [name for name in STANDARD_12_LEADS if name not in seen]
        raise NotAnalysableError(
            f"not a 12-lead ECG: the rhythm lacks lead(s) {', '.join(missing)}; the screen needs all "
            "twelve standard leads"
        )
    index, names = chosen
    group = groups[index]
    rate = float(group.get("SamplingFrequency", 0) or 0)
    if rate < _MIN_RATE:
        raise NotAnalysableError(f"a sampling rate of {rate:g} Hz is too low (at least {_MIN_RATE:g} Hz)")
    try:
        samples = ds.waveform_array(index)
    except (AttributeError, ValueError, KeyError) as exc:
        raise NotAnalysableError(f"the waveform data cannot be read ({exc})") from None
    seconds = samples.shape[0] / rate
    if seconds < MIN_SECONDS:
        raise NotAnalysableError(f"the record is {seconds:.1f} s long; at least {MIN_SECONDS:g} s are needed")
    keep = min(samples.shape[0], int(MAX_SECONDS * rate))
    channels = group.ChannelDefinitionSequence
    leads: dict[str, npt.NDArray[np.float64]] = {}
    for name in STANDARD_12_LEADS:
        column = names[name]
        values = samples[:keep, column].astype(np.float64) * _unit_factor(channels[column], name)
        if not np.all(np.isfinite(values)):
            raise NotAnalysableError(f"lead {name} has samples that are not numbers")
        leads[name] = values
    flat = [name for name, values in leads.items() if np.ptp(values) < FLAT_MV]
    if flat:
        raise NotAnalysableError(
            f"lead(s) {', '.join(flat)} are flat (under {FLAT_MV:g} mV peak to peak): electrode off or "
            "not recorded"
        )
    return EcgLeads(rate, leads)


def _da(value: object) -> date | None:
    text = str(value or "").strip()
    try:
        return datetime.strptime(text[:8], "%Y%m%d").date() if len(text) >= 8 else None
    except ValueError:
        return None


def _age_string(value: object) -> int | None:
    """PS3.5 AS: ``nnnY`` (also D, W, M, which mean under a year old here)."""
    text = str(value or "").strip()
    if len(text) == 4 and text[:3].isdigit() and text[3] in "DWMY":
        return int(text[:3]) if text[3] == "Y" else 0
    return None


def patient_of(ds: Dataset) -> PatientFacts:
    """Sex and age in years at acquisition: Patient's Age, else birth date against the acquisition date."""
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    age = _age_string(ds.get("PatientAge"))
    if age is None:
        born = _da(ds.get("PatientBirthDate"))
        taken = _da(ds.get("AcquisitionDateTime")) or _da(ds.get("ContentDate")) or _da(ds.get("StudyDate"))
        if born is not None and taken is not None and taken >= born:
            age = taken.year - born.year - ((taken.month, taken.day) < (born.month, born.day))
    return PatientFacts(sex if sex in ("M", "F") else "", age)
