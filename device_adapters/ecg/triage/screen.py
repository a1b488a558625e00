"""The triage screen: STEMI voltage criteria in contiguous leads, and a rate that cannot wait.

STEMI (after the Fourth Universal Definition of Myocardial Infarction,
2018): ST elevation in at least two contiguous leads of at least 1 mm
(0.1 mV) in every lead but V2-V3, where it must reach 2 mm in men of 40 or
more, 2.5 mm in men under 40 and 1.5 mm in women. Where sex or age is not
known the screen takes the lowest threshold that could apply (1.5 mm;
2 mm for a man of unknown age): a screen that alerts a physician should
rather ask once too often than stay silent.

Contiguous leads: II, III and aVF (inferior); I and aVL (lateral); and
neighbouring chest leads (V1-V2, V2-V3 ... V5-V6).

Where ST is read: the criteria name the J point, but the QRS end is the
least certain point of the complex, and there the filters smear the S wave
into the ST segment. The screen reads the level 60 ms after the J point
(40 ms above 100/min, where J+60 ms reaches the T wave's upstroke), as
automated ECG programs commonly do; both it and the J-point level are
reported.

Rate: under ``bradycardia_bpm`` or over ``tachycardia_bpm`` (40 and 150 by
default, TELECONSULT_ECG_TRIAGE_*_BPM).

Every finding is a suspicion for a physician to confirm on the tracing,
and every reason says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from device_adapters.ecg.triage.measure import EcgMeasurements
from device_adapters.ecg.triage.waveform import PatientFacts

__all__ = ["CONFIRMATION", "ScreenResult", "ScreenThresholds", "screen"]

CONFIRMATION = "needs physician confirmation"
_CHEST = ("V1", "V2", "V3", "V4", "V5", "V6")
_LIMB_GROUPS = (("inferior", ("II", "III", "aVF")), ("lateral", ("I", "aVL")))


@dataclass(frozen=True, slots=True)
class ScreenThresholds:
    """ST thresholds in mV (1 mm = 0.1 mV at standard gain) and the rate limits in beats per minute."""

    st_mv: float = 0.1
    v2v3_men_mv: float = 0.2  # men aged 40 or more
    v2v3_young_men_mv: float = 0.25  # men under 40
    v2v3_women_mv: float = 0.15
    bradycardia_bpm: float = 40.0
    tachycardia_bpm: float = 150.0

    def __post_init__(self) -> None:
        for name in ("st_mv", "v2v3_men_mv", "v2v3_young_men_mv", "v2v3_women_mv"):
            if not 0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be over 0 and at most 1 mV, not {getattr(self, name)}")
        if not 0 < self.bradycardia_bpm < self.tachycardia_bpm:
            raise ValueError(
                f"bradycardia_bpm ({self.bradycardia_bpm}) must be positive and below tachycardia_bpm "
                f"({self.tachycardia_bpm})"
            )

    def v2v3(self, patient: PatientFacts) -> tuple[float, str]:
        """The V2-V3 threshold for this patient, and on what it rests."""
        if patient.sex == "F":
            return self.v2v3_women_mv, "woman"
        if patient.sex == "M" and patient.age is not None:
            if patient.age >= 40:
                return self.v2v3_men_mv, "man of 40 or more"
            return self.v2v3_young_men_mv, "man under 40"
        if patient.sex == "M":
            return self.v2v3_men_mv, "man of unknown age: the lower of the men's thresholds"
        lowest = min(self.v2v3_women_mv, self.v2v3_men_mv, self.v2v3_young_men_mv)
        return lowest, "sex not recorded: the lowest threshold"


@dataclass(frozen=True, slots=True)
class ScreenResult:
    stemi: bool
    territories: dict[str, list[str]]  # e.g. {"inferior": ["II", "III", "aVF"]}
    elevated_mv: dict[str, float]  # every lead at or over its threshold, with its level
    st_point_ms: int  # where after the J point ST was read (60, or 40 above 100/min)
    v2v3_threshold_mv: float
    v2v3_basis: str
    rhythm: str | None  # "bradycardia" or "tachycardia" when the rate cannot wait
    reason: str  # one sentence per finding, or that none was found; always CONFIRMATION
    thresholds: ScreenThresholds = field(default_factory=ScreenThresholds)

    @property
    def positive(self) -> bool:
        return self.stemi or self.rhythm is not None

    def as_json(self) -> dict[str, Any]:
        return {
            "positive": self.positive,
            "stemi": self.stemi,
            "territories": self.territories,
            "elevated_mv": {lead: round(level, 3) for lead, level in self.elevated_mv.items()},
            "st_point_ms": self.st_point_ms,
            "v2v3_threshold_mv": self.v2v3_threshold_mv,
            "v2v3_basis": self.v2v3_basis,
            "st_threshold_mv": self.thresholds.st_mv,
            "rhythm": self.rhythm,
            "bradycardia_bpm": self.thresholds.bradycardia_bpm,
            "tachycardia_bpm": self.thresholds.tachycardia_bpm,
            "reason": self.reason,
        }


def _chest_runs(elevated: set[str]) -> list[list[str]]:
    runs: list[list[str]] = []
    current: list[str] = []
    for lead in _CHEST:
        if lead in elevated:
            current.append(lead)
        else:
            if len(current) >= 2:
                runs.append(current)
            current = []
    if len(current) >= 2:
        runs.append(current)
    return runs


def _chest_territory(run: list[str]) -> str:
    numbers = {int(lead[1]) for lead in run}
    if numbers <= {1, 2}:
        return "septal"
    if numbers <= {5, 6}:
        return "lateral chest"
    if numbers <= {1, 2, 3, 4}:
        return "anterior"
    return "anterolateral"


def screen(
    measurements: EcgMeasurements, patient: PatientFacts, thresholds: ScreenThresholds | None = None
) -> ScreenResult:
    """Screen one measured ECG; pure, so the same numbers always give the same answer."""
    thresholds = thresholds or ScreenThresholds()
    v2v3, basis = thresholds.v2v3(patient)
    st_point = 60 if measurements.heart_rate_bpm <= 100 else 40
    levels = measurements.st_j60_mv if st_point == 60 else measurements.st_j40_mv
    elevated = {
        lead: level
        for lead, level in levels.items()
        if level >= (v2v3 if lead in ("V2", "V3") else thresholds.st_mv)
    }
    territories: dict[str, list[str]] = {}
    for name, group in _LIMB_GROUPS:
        leads = [lead for lead in group if lead in elevated]
        if len(leads) >= 2:
            territories[name] = leads
    for run in _chest_runs(set(elevated)):
        territories.setdefault(_chest_territory(run), []).extend(run)
    rate = measurements.heart_rate_bpm
    rhythm = None
    if rate < thresholds.bradycardia_bpm:
        rhythm = "bradycardia"
    elif rate > thresholds.tachycardia_bpm:
        rhythm = "tachycardia"
    findings = []
    if territories:
        where = " and ".join(f"{', '.join(leads)} ({name})" for name, leads in territories.items())
        findings.append(f"ST elevation in {where}: suspected STEMI")
    if rhythm == "bradycardia":
        findings.append(
            f"heart rate {rate:.0f}/min (under {thresholds.bradycardia_bpm:g}): urgent bradycardia"
        )
    elif rhythm == "tachycardia":
        findings.append(
            f"heart rate {rate:.0f}/min (over {thresholds.tachycardia_bpm:g}): urgent tachycardia"
        )
    if findings:
        reason = "; ".join(findings) + f" — {CONFIRMATION}"
    else:
        reason = f"no STEMI criteria and no urgent rate found by the automated screen — {CONFIRMATION}"
    return ScreenResult(
        stemi=bool(territories),
        territories=territories,
        elevated_mv=elevated,
        st_point_ms=st_point,
        v2v3_threshold_mv=v2v3,
        v2v3_basis=basis,
        rhythm=rhythm,
        reason=reason,
        thresholds=thresholds,
    )
