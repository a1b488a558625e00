"""The one in-memory ECG every reader produces and the DICOM builder consumes.

Samples are kept as the integers the device wrote, with the scale that
turns them into microvolts (``sample * sensitivity_uv + baseline_uv``, the
DICOM Waveform Module's own rule), so a file whose values are already
integer counts (SCP-ECG, WFDB, aECG digits) reaches DICOM without being
requantised. Formats that carry physical values (CSV) are quantised once,
when read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from device_adapters.ecg.errors import EcgImportError, UnsupportedEcgError

__all__ = [
    "Device",
    "EcgFormat",
    "EcgRecord",
    "Filters",
    "Lead",
    "Patient",
    "WaveformGroup",
    "quantise",
]


class EcgFormat(StrEnum):
    SCP_ECG = "scp-ecg"
    HL7_AECG = "hl7-aecg"
    WFDB = "wfdb"
    CSV = "csv"

    @property
    def label(self) -> str:
        return {"scp-ecg": "SCP-ECG", "hl7-aecg": "HL7 aECG", "wfdb": "WFDB", "csv": "CSV"}[self.value]


@dataclass(frozen=True, slots=True)
class Lead:
    """One channel: integer samples and their scale to microvolts."""

    name: str  # as leads.canonical_lead_name spells it: I, II, aVR, V1 ...; else the source's own
    samples: npt.NDArray[np.int64]
    sensitivity_uv: float  # microvolts per count
    baseline_uv: float = 0.0  # microvolts added after scaling

    def __post_init__(self) -> None:
        if self.samples.ndim != 1 or self.samples.size == 0:
            raise EcgImportError(f"lead {self.name!r} has no samples")
        if not np.isfinite(self.sensitivity_uv) or self.sensitivity_uv <= 0:
            raise EcgImportError(f"lead {self.name!r} has no usable scale ({self.sensitivity_uv!r} uV/count)")
        if not np.isfinite(self.baseline_uv):
            raise EcgImportError(f"lead {self.name!r} has no usable baseline")

    def microvolts(self) -> npt.NDArray[np.float64]:
        return self.samples.astype(np.float64) * self.sensitivity_uv + self.baseline_uv


@dataclass(frozen=True, slots=True)
class Filters:
    """Acquisition filters as the device states them, in Hz (None: not stated)."""

    low_hz: float | None = None  # high-pass (baseline) cut-off
    high_hz: float | None = None  # low-pass cut-off
    notch_hz: float | None = None


@dataclass(frozen=True, slots=True)
class WaveformGroup:
    """Leads sampled together at one rate: the rhythm strip, or median beats."""

    label: str  # "RHYTHM" or "MEDIAN BEAT"
    sampling_frequency: float
    leads: tuple[Lead, ...]
    derived: bool = False  # median beats are computed from the rhythm
    filters: Filters = field(default_factory=Filters)

    def __post_init__(self) -> None:
        if not self.leads:
            raise EcgImportError(f"the {self.label.lower()} waveform has no leads")
        if not np.isfinite(self.sampling_frequency) or self.sampling_frequency <= 0:
            raise EcgImportError(f"the sampling rate {self.sampling_frequency!r} Hz is not usable")
        lengths = {lead.samples.size for lead in self.leads}
        if len(lengths) > 1:
            raise UnsupportedEcgError(
                f"the leads of the {self.label.lower()} waveform have different numbers of samples "
                f"({', '.join(str(n) for n in sorted(lengths))}); only leads recorded together are supported"
            )
        names = [lead.name for lead in self.leads]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise EcgImportError(f"lead {duplicates[0]!r} appears twice in the {self.label.lower()} waveform")

    @property
    def samples_per_lead(self) -> int:
        return int(self.leads[0].samples.size)

    @property
    def seconds(self) -> float:
        return self.samples_per_lead / self.sampling_frequency


@dataclass(frozen=True, slots=True)
class Patient:
    patient_id: str
    family_name: str = ""
    given_name: str = ""
    birth_date: date | None = None
    sex: str = ""  # M, F, O or empty

    @property
    def dicom_name(self) -> str:
        """PN value: family^given, as the source wrote them (Chinese names included)."""
        return f"{self.family_name}^{self.given_name}".rstrip("^") if self.given_name else self.family_name


@dataclass(frozen=True, slots=True)
class Device:
    manufacturer: str = ""
    model: str = ""
    serial_number: str = ""
    software_version: str = ""
    institution: str = ""
    department: str = ""


@dataclass(frozen=True, slots=True)
class EcgRecord:
    source_format: EcgFormat
    patient: Patient
    groups: tuple[WaveformGroup, ...]  # the rhythm first, then any median beats
    acquired_at: datetime | None = None  # local time of the device; aware if it stated its zone
    device: Device = field(default_factory=Device)
    referring_physician: str = ""

    def __post_init__(self) -> None:
        if not self.patient.patient_id.strip():
            raise EcgImportError(
                f"the {self.source_format.label} file has no patient ID; an ECG that names no patient "
                "cannot be filed (set the patient ID on the device)"
            )
        if not self.groups:
            raise EcgImportError(f"the {self.source_format.label} file has no waveform")

    @property
    def rhythm(self) -> WaveformGroup:
        return self.groups[0]


# One volt: a thousand times a large QRS, far above any electrode's range; what is larger is
# not an ECG in microvolts (and would overflow the 64-bit sample counts below).
_MAX_MICROVOLTS = 1e6


def quantise(values_uv: npt.NDArray[np.float64], name: str) -> Lead:
    """A lead of physical values: the coarsest decimal step that keeps them exact, else 0.1 uV.

    Steps run from 1 mV down to 0.001 uV; the first step every value is a
    multiple of (to 1e-6 of a step) gives a lossless lead. Values with no
    such step are rounded to 0.1 uV, far below an ECG's noise. A lead too
    large for 16-bit samples at that step is scaled again by the builder.
    """
    if values_uv.size == 0 or not np.all(np.isfinite(values_uv)):
        raise EcgImportError(f"lead {name!r} has missing or non-numeric values")
    peak = float(np.max(np.abs(values_uv)))
    if peak > _MAX_MICROVOLTS:
        raise EcgImportError(
            f"lead {name!r} reaches {peak:.3g} uV, beyond any ECG (at most {_MAX_MICROVOLTS:g} uV): "
            "wrong units or a damaged file"
        )
    for step in (1000.0, 100.0, 10.0, 5.0, 1.0, 0.5, 0.1, 0.05, 0.01, 0.005, 0.001):
        counts = np.rint(values_uv / step)
        if np.all(np.abs(counts * step - values_uv) <= step * 1e-6 + 1e-9):
            return Lead(name, counts.astype(np.int64), step)
    return Lead(name, np.rint(values_uv / 0.1).astype(np.int64), 0.1)
