"""Measurements against synthetic ECGs whose intervals, axis and ST levels are known exactly.

Tolerances follow what IEC 60601-2-25 asks of global interval measurement
on its test set (mean differences of about 10 ms for PR and QRS, 25 ms for
QT) and what the screen needs (ST within 0.03 mV, a third of a millimetre).
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from pydicom import dcmread

from bench.ecg.synthetic import SyntheticEcg, anterior_stemi, inferior_stemi, synthesise
from device_adapters.ecg.to_dicom import encode
from device_adapters.ecg.triage import EcgLeads, NotAnalysableError, measure, patient_of, read_leads
from tests.device_adapters.triage.conftest import ecg_dataset

NOISY = {"noise_mv": 0.02, "wander_mv": 0.3, "mains_mv": 0.03, "rr_jitter": 0.05}


def _measured(ecg: SyntheticEcg):  # type: ignore[no-untyped-def]
    return measure(EcgLeads(float(ecg.sampling_rate), ecg.leads_mv))


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"heart_rate": 50, "qrs_ms": 110, "pr_ms": 200, "axis_deg": 80},
        {"heart_rate": 100, "qrs_ms": 80, "pr_ms": 140, "axis_deg": -20},
        {"heart_rate": 65, "qrs_ms": 120, "pr_ms": 180, "axis_deg": 10, **NOISY, "seed": 1},
        {"heart_rate": 88, "qrs_ms": 95, "pr_ms": 150, "axis_deg": 60, **NOISY, "seed": 2},
        {"heart_rate": 72, "sampling_rate": 250, **NOISY, "seed": 3},
        {"heart_rate": 60, "sampling_rate": 1000, "st_offsets": inferior_stemi(), **NOISY, "seed": 4},
    ],
    ids=["normal", "slow-wide", "fast-left-axis", "noisy-wide", "noisy", "250-Hz", "1000-Hz-stemi"],
)
def test_intervals_axis_and_st_are_within_tolerance_of_the_truth(params: dict[str, object]) -> None:
    ecg = synthesise(**params)  # type: ignore[arg-type]
    truth = ecg.truth
    m = _measured(ecg)
    assert m.heart_rate_bpm == pytest.approx(truth.heart_rate, abs=1.5)
    assert m.rr_ms == pytest.approx(truth.rr_ms, rel=0.03)
    assert m.qrs_ms == pytest.approx(truth.qrs_ms, abs=12)
    assert m.pr_ms is not None
    assert m.pr_ms == pytest.approx(truth.pr_ms, abs=15)
    assert m.qt_ms is not None
    assert m.qt_ms == pytest.approx(truth.qt_ms, abs=20)
    assert m.qtc_bazett_ms == pytest.approx(m.qt_ms / np.sqrt(m.rr_ms / 1000))
    assert m.qtc_fridericia_ms == pytest.approx(m.qt_ms / (m.rr_ms / 1000) ** (1 / 3))
    assert m.qrs_axis_deg is not None
    assert m.qrs_axis_deg == pytest.approx(truth.axis_deg, abs=10)
    for lead, level in truth.st_mv.items():
        assert m.st_j60_mv[lead] == pytest.approx(level, abs=0.03), lead


@pytest.mark.parametrize("rate", [35, 170])
def test_extreme_rates_are_counted_right(rate: int) -> None:
    m = _measured(synthesise(heart_rate=rate, pr_ms=120 if rate > 100 else 160, **NOISY))
    assert m.heart_rate_bpm == pytest.approx(rate, abs=2)
    assert m.beats >= 3


def test_the_stored_dicom_is_read_back_in_millivolts_with_the_patient() -> None:
    ecg = synthesise(st_offsets=anterior_stemi(0.3), sex="F")
    ds = dcmread(BytesIO(encode(ecg_dataset(ecg, birth_date="1990-05-06"))), force=True)
    leads = read_leads(ds)
    assert leads.sampling_rate == 500
    assert list(leads.leads_mv) == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    for name, values in ecg.leads_mv.items():
        np.testing.assert_allclose(leads.leads_mv[name], values, atol=0.0011)  # 1 uV counts
    facts = patient_of(ds)
    assert (facts.sex, facts.age) == ("F", 36)  # acquired 2026-11-27
    assert measure(leads).st_j60_mv["V3"] == pytest.approx(0.3, abs=0.03)


def _with_leads(ecg: SyntheticEcg, **changes: np.ndarray | None) -> SyntheticEcg:
    leads = {name: values for name, values in ecg.leads_mv.items() if changes.get(name, values) is not None}
    leads.update({name: values for name, values in changes.items() if values is not None})
    return SyntheticEcg(ecg.sampling_rate, leads, ecg.truth)


def test_a_set_without_the_twelve_leads_is_not_analysable() -> None:
    ecg = _with_leads(synthesise(), V6=None)  # 11 leads: stored as General ECG
    with pytest.raises(NotAnalysableError, match=r"not a 12-lead ECG.*V6"):
        read_leads(ecg_dataset(ecg))


def test_a_short_record_is_not_analysable() -> None:
    with pytest.raises(NotAnalysableError, match=r"3\.0 s long; at least 5 s"):
        read_leads(ecg_dataset(synthesise(seconds=3.0)))


def test_a_flat_lead_is_not_analysable() -> None:
    ecg = synthesise()
    flat = _with_leads(ecg, V4=np.zeros_like(ecg.leads_mv["V4"]))
    with pytest.raises(NotAnalysableError, match=r"lead\(s\) V4 are flat"):
        read_leads(ecg_dataset(flat))


def test_noise_without_beats_is_not_analysable() -> None:
    rng = np.random.default_rng(7)
    ecg = synthesise()
    noise = SyntheticEcg(500, {name: rng.normal(0, 0.2, 5000) for name in ecg.leads_mv}, ecg.truth)
    with pytest.raises(NotAnalysableError):
        _measured(noise)
