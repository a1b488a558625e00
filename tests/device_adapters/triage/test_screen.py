"""The screen on measured synthetic ECGs: STEMI patterns, what is not one, urgent rates, thresholds."""

from __future__ import annotations

import pytest

from bench.ecg.synthetic import (
    anterior_stemi,
    inferior_stemi,
    lateral_stemi,
    non_contiguous_elevation,
    synthesise,
)
from device_adapters.ecg.triage import CONFIRMATION, EcgLeads, PatientFacts, ScreenThresholds, measure, screen

UNKNOWN = PatientFacts(sex="", age=None)
NOISY = {"noise_mv": 0.02, "wander_mv": 0.3, "mains_mv": 0.03, "rr_jitter": 0.05, "seed": 11}


def _screened(patient: PatientFacts = UNKNOWN, **params: object):  # type: ignore[no-untyped-def]
    ecg = synthesise(**params)  # type: ignore[arg-type]
    return screen(measure(EcgLeads(float(ecg.sampling_rate), ecg.leads_mv)), patient)


def test_inferior_stemi_is_positive_and_named() -> None:
    result = _screened(st_offsets=inferior_stemi(0.2), **NOISY)
    assert result.stemi
    assert result.positive
    assert result.territories == {"inferior": ["II", "III", "aVF"]}
    assert result.reason == (f"ST elevation in II, III, aVF (inferior): suspected STEMI — {CONFIRMATION}")
    assert result.rhythm is None


def test_anterior_stemi_is_positive() -> None:
    result = _screened(PatientFacts("M", 55), st_offsets=anterior_stemi(0.3), **NOISY)
    assert result.stemi
    assert result.territories == {"anterior": ["V2", "V3", "V4"]}
    assert "needs physician confirmation" in result.reason


def test_lateral_stemi_is_positive() -> None:
    result = _screened(st_offsets=lateral_stemi(0.2), **NOISY)
    assert result.territories == {"lateral": ["I", "aVL"], "lateral chest": ["V5", "V6"]}


@pytest.mark.parametrize("heart_rate", [55, 75, 95])
def test_a_normal_ecg_is_negative(heart_rate: int) -> None:
    result = _screened(heart_rate=heart_rate, **NOISY)
    assert not result.positive
    assert result.elevated_mv == {}
    assert result.reason.endswith(CONFIRMATION)


def test_elevation_in_leads_that_are_not_contiguous_is_negative() -> None:
    result = _screened(st_offsets=non_contiguous_elevation(0.18), **NOISY)
    assert set(result.elevated_mv) == {"V1", "V4", "V6"}  # each over its threshold ...
    assert not result.stemi  # ... but no two of them neighbours
    assert not result.positive


@pytest.mark.parametrize(("rate", "rhythm"), [(35, "bradycardia"), (170, "tachycardia")])
def test_urgent_rates_are_positive(rate: int, rhythm: str) -> None:
    result = _screened(heart_rate=rate, pr_ms=120, **NOISY)
    assert result.rhythm == rhythm
    assert result.positive
    assert not result.stemi
    assert f"urgent {rhythm} — {CONFIRMATION}" in result.reason


def test_rate_limits_come_from_the_thresholds() -> None:
    ecg = synthesise(heart_rate=45)
    m = measure(EcgLeads(500.0, ecg.leads_mv))
    assert not screen(m, UNKNOWN).positive
    assert screen(m, UNKNOWN, ScreenThresholds(bradycardia_bpm=50)).rhythm == "bradycardia"


@pytest.mark.parametrize(
    ("patient", "positive", "basis"),
    [
        (PatientFacts("F", 60), True, "woman"),  # 1.5 mm
        (PatientFacts("M", 60), False, "man of 40 or more"),  # 2 mm
        (PatientFacts("M", 30), False, "man under 40"),  # 2.5 mm
        (PatientFacts("", None), True, "sex not recorded: the lowest threshold"),  # conservative: 1.5 mm
    ],
)
def test_v2_v3_thresholds_follow_sex_and_age(patient: PatientFacts, positive: bool, basis: str) -> None:
    # 1.8 mm in V2-V3 only: STEMI for a woman (or anyone not known to be a man), not for a man.
    result = _screened(patient, st_offsets={"V2": 0.18, "V3": 0.18})
    assert result.stemi is positive
    assert result.v2v3_basis == basis


def test_thresholds_are_checked() -> None:
    with pytest.raises(ValueError, match="bradycardia_bpm"):
        ScreenThresholds(bradycardia_bpm=160, tachycardia_bpm=150)
