"""Parts (a) and (b): the screen's sensitivity and specificity on labelled synthetic ECGs, and its cost.

Each record is made by ``synthetic.synthesise`` with a random heart (rate
45-130/min, PR, QRS, axis), random noise, mains hum and baseline wander,
sampled at 250, 500 or 1000 Hz, and a random patient (sex and age, or
unknown). Half carry an injury pattern over the thresholds (inferior,
anterior or lateral STEMI), half none, one that is not contiguous (V1, V4,
V6) or one under the thresholds. The label is the screen's own criteria
applied to the *true* ST levels, so what is measured is the measurement
chain (DICOM, filters, beats, delineation), not a definition.

Every record goes through the stored form: built as the importer builds a
CSV cart's file (``to_dicom``), encoded, then timed from ``dcmread`` of the
bytes to the screen's answer, as the analyser does.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO

import numpy as np
from pydicom import dcmread

from bench.ecg.synthetic import (
    SyntheticEcg,
    anterior_stemi,
    inferior_stemi,
    lateral_stemi,
    non_contiguous_elevation,
    synthesise,
    to_csv,
)
from device_adapters.ecg.formats import read_ecg
from device_adapters.ecg.to_dicom import build_ecg_waveform, encode
from device_adapters.ecg.triage import NotAnalysableError, PatientFacts, ScreenThresholds, measure, screen
from device_adapters.ecg.triage.screen import _chest_runs
from device_adapters.ecg.triage.waveform import patient_of, read_leads

__all__ = ["Case", "Outcome", "make_cases", "run_case"]

_PATTERNS = {"inferior": inferior_stemi, "anterior": anterior_stemi, "lateral": lateral_stemi}


@dataclass(frozen=True, slots=True)
class Case:
    ecg: SyntheticEcg
    label: bool  # STEMI by the criteria on the true ST levels
    kind: str
    birth_date: str


@dataclass(frozen=True, slots=True)
class Outcome:
    case: Case
    stemi: bool | None  # None: not analysable
    seconds: float  # dcmread to screen
    errors: dict[str, float]  # measured - true, ms (or bpm, degrees)


def _truth_label(ecg: SyntheticEcg, patient: PatientFacts, thresholds: ScreenThresholds) -> bool:
    v2v3, _ = thresholds.v2v3(patient)
    over = {
        lead
        for lead, level in ecg.truth.st_mv.items()
        if level >= (v2v3 if lead in ("V2", "V3") else thresholds.st_mv)
    }
    limb = any(len(over & set(group)) >= 2 for group in (("II", "III", "aVF"), ("I", "aVL")))
    return limb or bool(_chest_runs(over))


def make_cases(count: int, seed: int = 2026) -> list[Case]:
    """``count`` records, the first half with an injury pattern, the second half without."""
    rng = np.random.default_rng(seed)
    thresholds = ScreenThresholds()
    cases = []
    for index in range(count):
        positive = index < count // 2
        sex = str(rng.choice(["M", "F", ""]))
        age = int(rng.integers(25, 90))
        birth_date = f"{2026 - age - 1}-06-15" if sex else ""
        patient = PatientFacts(sex, age if sex else None)
        if positive:
            kind = str(rng.choice(list(_PATTERNS)))
            v2v3, _ = thresholds.v2v3(patient)
            # the pattern's weakest counted lead clears its threshold by at least 0.03 mV
            low = {"inferior": 0.13, "anterior": max(0.13, v2v3 + 0.03), "lateral": 0.18}[kind]
            offsets = _PATTERNS[kind](float(rng.uniform(low, 0.45)))
        else:
            kind = str(rng.choice(["normal", "non-contiguous", "sub-threshold"], p=[0.4, 0.3, 0.3]))
            if kind == "normal":
                offsets = {}
            elif kind == "non-contiguous":
                offsets = non_contiguous_elevation(float(rng.uniform(0.13, 0.3)))
            else:
                offsets = _PATTERNS[str(rng.choice(list(_PATTERNS)))](float(rng.uniform(0.02, 0.06)))
        ecg = synthesise(
            heart_rate=float(rng.uniform(45, 130)),
            pr_ms=float(rng.uniform(120, 210)),
            qrs_ms=float(rng.uniform(75, 120)),
            axis_deg=float(rng.uniform(-30, 100)),
            st_offsets=offsets,
            sampling_rate=int(rng.choice([250, 500, 1000])),
            noise_mv=float(rng.uniform(0, 0.03)),
            mains_mv=float(rng.uniform(0, 0.05)),
            wander_mv=float(rng.uniform(0, 0.4)),
            rr_jitter=float(rng.uniform(0, 0.08)),
            sex=sex,
            age=age if sex else None,
            seed=int(rng.integers(2**31)),
        )
        cases.append(Case(ecg, _truth_label(ecg, patient, thresholds), kind, birth_date))
    return cases


def _stored_bytes(case: Case, index: int) -> bytes:
    content = to_csv(case.ecg, patient_id=f"B{index:05d}", birth_date=case.birth_date)
    ds = build_ecg_waveform(
        read_ecg({"ecg.csv": content}),
        source_sha256=hashlib.sha256(content).hexdigest(),
        organisation="TOWN01",
        uid_root=None,
        imported_at=datetime(2026, 11, 27, 9, 30, tzinfo=UTC),
    )
    return encode(ds)


def run_case(case: Case, index: int) -> Outcome:
    data = _stored_bytes(case, index)
    started = time.perf_counter()
    ds = dcmread(BytesIO(data), force=True)
    try:
        m = measure(read_leads(ds))
    except NotAnalysableError:
        return Outcome(case, None, time.perf_counter() - started, {})
    result = screen(m, patient_of(ds))
    seconds = time.perf_counter() - started
    truth = case.ecg.truth
    errors = {"heart rate (bpm)": m.heart_rate_bpm - truth.heart_rate, "QRS (ms)": m.qrs_ms - truth.qrs_ms}
    if m.pr_ms is not None:
        errors["PR (ms)"] = m.pr_ms - truth.pr_ms
    if m.qt_ms is not None:
        errors["QT (ms)"] = m.qt_ms - truth.qt_ms
    if m.qrs_axis_deg is not None:
        errors["axis (deg)"] = m.qrs_axis_deg - truth.axis_deg
    st = m.st_j60_mv if result.st_point_ms == 60 else m.st_j40_mv
    errors["ST at screen point (mV, worst lead)"] = max(
        (st[lead] - level for lead, level in truth.st_mv.items()), key=abs
    )
    return Outcome(case, result.stemi, seconds, errors)
