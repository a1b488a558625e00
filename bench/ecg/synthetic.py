"""Synthetic 12-lead ECGs whose intervals, axis and ST shifts are known exactly.

The heart is a dipole: each wave (P, Q, R, S, T) is a 3-D vector times a
pulse of compact support, so every wave starts and ends at a known sample.
The limb leads follow Einthoven and Goldberger (``I = x``,
``II = x/2 + y·√3/2``, ``III = II - I``, ``aVR = -(I + II)/2``, ``aVL = I - II/2``,
``aVF = II - I/2``) and the chest leads are projections on six horizontal
directions, so the set is as internally consistent as a real one and the
frontal QRS axis is known: the angle of the mean QRS vector.

Truths, as the analyser defines them:

- PR: P onset to QRS onset (Q onset); QRS: Q onset to S end (the J point);
- QT: QRS onset to T end, where the T wave's descent (a quarter cosine)
  meets the baseline, i.e. where the tangent at its steepest point does;
- ST: an injury current added to the independent leads (I, II, V1-V6; the
  others follow from them): it rises during the last 30 % of the QRS, is
  flat from the J point to the T peak and falls with the T wave, so the
  deviation at J and at J+60 ms equals the offset given (the T wave starts
  70 ms after J, or 45 % of the way to the T end at fast rates).

Noise: white noise, 50 Hz mains, baseline wander (two slow sines per lead)
and a little beat-to-beat RR variation, each chosen per record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = [
    "INDEPENDENT_LEADS",
    "LEADS",
    "SyntheticEcg",
    "Truth",
    "anterior_stemi",
    "inferior_stemi",
    "lateral_stemi",
    "non_contiguous_elevation",
    "synthesise",
]

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
INDEPENDENT_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
_SQRT3_2 = math.sqrt(3) / 2
# Chest lead directions in the horizontal plane (degrees from the patient's left towards the front),
# with a small inferior component: R-wave progression from rS in V1 to qR in V6.
_CHEST = {"V1": 115.0, "V2": 95.0, "V3": 75.0, "V4": 55.0, "V5": 30.0, "V6": 5.0}


@dataclass(frozen=True, slots=True)
class Truth:
    """What the record was made with (ms, bpm, degrees, mV)."""

    heart_rate: float
    rr_ms: float
    pr_ms: float
    qrs_ms: float
    qt_ms: float
    axis_deg: float
    st_mv: dict[str, float]  # every lead's ST offset (J and J+60 ms alike)

    @property
    def qtc_bazett_ms(self) -> float:
        return self.qt_ms / math.sqrt(self.rr_ms / 1000)


@dataclass(frozen=True, slots=True)
class SyntheticEcg:
    sampling_rate: int
    leads_mv: dict[str, npt.NDArray[np.float64]]
    truth: Truth
    sex: str = ""  # M, F or empty
    age: int | None = None

    @property
    def seconds(self) -> float:
        return len(self.leads_mv["I"]) / self.sampling_rate

    def counts(self, microvolts_per_count: float = 1.0) -> dict[str, npt.NDArray[np.int64]]:
        """The leads as integer counts (what a device file carries)."""
        return {
            name: np.rint(values * 1000.0 / microvolts_per_count).astype(np.int64)
            for name, values in self.leads_mv.items()
        }


def inferior_stemi(mv: float = 0.25) -> dict[str, float]:
    """Injury towards +90°: II, III, aVF up by ``mv``; aVL and aVR down by half of it."""
    return {"I": 0.0, "II": mv}


def anterior_stemi(mv: float = 0.3) -> dict[str, float]:
    """V2-V4 up by ``mv``, V1 and V5 by a quarter of it."""
    return {"V1": mv / 4, "V2": mv, "V3": mv, "V4": mv, "V5": mv / 4}


def lateral_stemi(mv: float = 0.2) -> dict[str, float]:
    """I by ``mv`` and aVL by 3/4 of it (III down by half), V5-V6 by ``mv``."""
    return {"I": mv, "II": mv / 2, "V5": mv, "V6": mv}


def non_contiguous_elevation(mv: float = 0.18) -> dict[str, float]:
    """V1, V4 and V6 up by ``mv``: above every threshold outside V2-V3, but no two adjacent."""
    return {"V1": mv, "V4": mv, "V6": mv}


def _limb_and_chest(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], z: npt.NDArray[np.float64]
) -> dict[str, npt.NDArray[np.float64]]:
    lead_i = x
    lead_ii = 0.5 * x + _SQRT3_2 * y
    leads = {"I": lead_i, "II": lead_ii}
    for name, angle in _CHEST.items():
        radians = math.radians(angle)
        leads[name] = math.cos(radians) * x + 0.15 * y + math.sin(radians) * z
    return leads


def _derive(independent: Mapping[str, npt.NDArray[np.float64]]) -> dict[str, npt.NDArray[np.float64]]:
    lead_i, lead_ii = independent["I"], independent["II"]
    derived = {
        "I": lead_i,
        "II": lead_ii,
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2,
        "aVL": lead_i - lead_ii / 2,
        "aVF": lead_ii - lead_i / 2,
    }
    derived.update({name: independent[name] for name in _CHEST})
    return {name: derived[name] for name in LEADS}


def _half_sine(t: npt.NDArray[np.float64], start: float, end: float) -> npt.NDArray[np.float64]:
    inside = (t >= start) & (t <= end)
    out = np.zeros_like(t)
    out[inside] = np.sin(np.pi * (t[inside] - start) / (end - start))
    return out


def _t_wave(t: npt.NDArray[np.float64], onset: float, peak: float, end: float) -> npt.NDArray[np.float64]:
    """Slow rise (half Hann) to the peak, quarter-cosine fall whose tangent meets zero at ``end``."""
    out = np.zeros_like(t)
    rise = (t >= onset) & (t < peak)
    out[rise] = (1 - np.cos(np.pi * (t[rise] - onset) / (peak - onset))) / 2
    fall = (t >= peak) & (t <= end)
    out[fall] = np.cos(np.pi / 2 * (t[fall] - peak) / (end - peak))
    return out


def _plateau(
    t: npt.NDArray[np.float64], ramp_start: float, j: float, peak: float, end: float
) -> npt.NDArray[np.float64]:
    """The injury current's time course: up during the QRS end, flat to the T peak, down with the T."""
    out = np.zeros_like(t)
    ramp = (t >= ramp_start) & (t < j)
    out[ramp] = (1 - np.cos(np.pi * (t[ramp] - ramp_start) / (j - ramp_start))) / 2
    out[(t >= j) & (t < peak)] = 1.0
    fall = (t >= peak) & (t <= end)
    out[fall] = np.cos(np.pi / 2 * (t[fall] - peak) / (end - peak))
    return out


@dataclass(frozen=True, slots=True)
class _Beat:
    """Wave timings (s, from the QRS onset) and vectors of one heart."""

    pr: float
    qrs: float
    qt: float
    axis_deg: float
    r_mv: float
    t_mv: float
    p_mv: float
    st_offsets: dict[str, float] = field(default_factory=dict)


def _beat_leads(t: npt.NDArray[np.float64], beat: _Beat) -> dict[str, npt.NDArray[np.float64]]:
    """The twelve leads of one beat whose QRS starts at t = 0."""
    axis = math.radians(beat.axis_deg)
    d = beat.qrs
    p_duration = min(0.11, beat.pr * 0.7)
    p = _half_sine(t, -beat.pr, -beat.pr + p_duration) * beat.p_mv
    q = _half_sine(t, 0.0, 0.2 * d) * 0.12 * beat.r_mv
    r = _half_sine(t, 0.12 * d, 0.7 * d) * beat.r_mv
    s = _half_sine(t, 0.6 * d, d) * 0.35 * beat.r_mv
    j = d
    repolarisation = beat.qt - d
    t_onset = j + min(0.07, 0.45 * repolarisation)  # an ST segment: J+60 ms is on it up to ~150/min
    t_peak = max(j + 0.55 * repolarisation, t_onset + 0.02)
    tw = _t_wave(t, t_onset, t_peak, beat.qt) * beat.t_mv
    # Vectors: P towards +55° frontal; Q rightward-up; R along the axis, a little backwards;
    # S rightward and backwards (deep S in V1-V2); T roughly with the QRS axis, forwards.
    x = p * math.cos(math.radians(55)) - q * math.cos(axis) + r * math.cos(axis) - s * 0.6
    y = p * math.sin(math.radians(55)) - q * math.sin(axis) + r * math.sin(axis) - s * 0.3
    z = -0.3 * r - 0.9 * s
    tx, ty, tz = math.cos(axis - 0.3), math.sin(axis - 0.3), 0.4
    x = x + tw * tx
    y = y + tw * ty
    z = z + tw * tz
    independent = _limb_and_chest(x, y, z)
    injury = _plateau(t, 0.7 * d, j, t_peak, beat.qt)
    for name, offset in beat.st_offsets.items():
        independent[name] = independent[name] + offset * injury
    return _derive(independent)


def synthesise(
    *,
    heart_rate: float = 70.0,
    pr_ms: float = 160.0,
    qrs_ms: float = 90.0,
    qt_ms: float | None = None,
    axis_deg: float = 50.0,
    st_offsets: Mapping[str, float] | None = None,
    seconds: float = 10.0,
    sampling_rate: int = 500,
    noise_mv: float = 0.0,
    mains_mv: float = 0.0,
    wander_mv: float = 0.0,
    rr_jitter: float = 0.0,
    r_mv: float = 1.4,
    t_mv: float = 0.35,
    p_mv: float = 0.15,
    sex: str = "",
    age: int | None = None,
    seed: int = 0,
) -> SyntheticEcg:
    """One record. ``st_offsets`` name independent leads only (I, II, V1-V6), in mV.

    ``qt_ms`` defaults to a QTc (Bazett) of 400 ms, kept clear of the next P wave.
    """
    unknown = set(st_offsets or {}) - set(INDEPENDENT_LEADS)
    if unknown:
        raise ValueError(f"st_offsets names {sorted(unknown)}: only I, II and V1-V6 are independent")
    rng = np.random.default_rng(seed)
    rr = 60.0 / heart_rate
    if qt_ms is None:
        qt_ms = min(400.0 * math.sqrt(rr), (rr - pr_ms / 1000 - 0.03) * 1000)
    beat = _Beat(
        pr=pr_ms / 1000,
        qrs=qrs_ms / 1000,
        qt=qt_ms / 1000,
        axis_deg=axis_deg,
        r_mv=r_mv,
        t_mv=t_mv,
        p_mv=p_mv,
        st_offsets=dict(st_offsets or {}),
    )
    n = round(seconds * sampling_rate)
    t = np.arange(n) / sampling_rate
    onsets = []
    onset = 0.25 + pr_ms / 1000 + rng.uniform(0, rr * 0.5)
    while onset < seconds + rr:
        onsets.append(onset)
        onset += rr * (1 + rng.uniform(-rr_jitter, rr_jitter))
    independent = {name: np.zeros(n) for name in INDEPENDENT_LEADS}
    window = np.arange(int(-0.4 * sampling_rate), int((beat.qt + 0.05) * sampling_rate)) / sampling_rate
    template = _beat_leads(window, beat)
    for qrs_onset in onsets:
        start = round(qrs_onset * sampling_rate) + int(-0.4 * sampling_rate)
        for name in INDEPENDENT_LEADS:
            lo, hi = max(0, start), min(n, start + len(window))
            if lo < hi:
                independent[name][lo:hi] += template[name][lo - start : hi - start]
    for name in INDEPENDENT_LEADS:
        lead = independent[name]
        if noise_mv:
            lead += rng.normal(0, noise_mv, n)
        if mains_mv:
            lead += mains_mv * np.sin(2 * np.pi * 50 * t + rng.uniform(0, 2 * np.pi))
        if wander_mv:
            for frequency in (rng.uniform(0.1, 0.3), rng.uniform(0.3, 0.6)):
                lead += wander_mv / 2 * np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi))
    leads = _derive(independent)
    st_all = {
        name: float(value[0])
        for name, value in _derive(
            {name: np.array([beat.st_offsets.get(name, 0.0)]) for name in INDEPENDENT_LEADS}
        ).items()
    }
    truth = Truth(
        heart_rate=heart_rate,
        rr_ms=rr * 1000,
        pr_ms=pr_ms,
        qrs_ms=qrs_ms,
        qt_ms=qt_ms,
        axis_deg=_frontal_axis(beat),
        st_mv=st_all,
    )
    return SyntheticEcg(sampling_rate, leads, truth, sex=sex, age=age)


def _frontal_axis(beat: _Beat) -> float:
    """The angle of the mean QRS vector in the frontal plane (integral of x and y over the QRS)."""
    t = np.linspace(-0.001, beat.qrs + 0.001, 4001)
    leads = _beat_leads(t, _Beat(**{**_asdict(beat), "st_offsets": {}, "t_mv": 0.0, "p_mv": 0.0}))
    x = float(np.trapezoid(leads["I"], t))
    y = float(np.trapezoid(leads["aVF"], t)) / _SQRT3_2
    return math.degrees(math.atan2(y, x))


def _asdict(beat: _Beat) -> dict[str, object]:
    return {name: getattr(beat, name) for name in beat.__dataclass_fields__}


def to_csv(
    ecg: SyntheticEcg,
    *,
    patient_id: str,
    birth_date: str = "",
    acquired: str = "2026-11-27T09:30:00+08:00",
) -> bytes:
    """The record as the CSV layout of docs/devices.md (integer microvolts), as a cart would drop it."""
    lines = [
        f"# patient_id: {patient_id}",
        "# patient_name: Synthetic^ECG",
        f"# sampling_rate: {ecg.sampling_rate}",
        "# units: uV",
        f"# acquired: {acquired}",
        "# manufacturer: teleconsult synthetic ECG",
    ]
    if ecg.sex:
        lines.append(f"# sex: {ecg.sex}")
    if birth_date:
        lines.append(f"# birth_date: {birth_date}")
    counts = ecg.counts(1.0)
    lines.append(",".join(counts))
    table = np.stack(list(counts.values()), axis=1)
    lines.extend(",".join(str(int(value)) for value in row) for row in table)
    return ("\n".join(lines) + "\n").encode("utf-8")
