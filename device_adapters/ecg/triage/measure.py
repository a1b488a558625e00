"""Global 12-lead measurements from median beats: rate, PR, QRS, QT, QTc, frontal axis, ST levels.

How, and why this way:

1. **Filtering.** Each lead is notch-filtered at 50 Hz (zero-phase). For
   beat detection a copy is also high-passed at 0.5 Hz.
2. **R peaks** come from neurokit2 (``ecg_clean`` then ``ecg_findpeaks``,
   its default detector) run on the spatial magnitude of the eight
   independent leads, so a lead with a small or inverted QRS cannot hide a
   beat. Each beat is then aligned on the average beat of the magnitude
   (best match within ±40 ms), so that all are cut at the same point.
3. **Baseline wander** is removed by a cubic spline through every beat's
   PR-segment level, the classic correction for ST measurement: a
   high-pass filter would leave the TP, PR and ST segments at different
   levels.
4. **Median beats.** Around each peak a window of the same length is cut
   from every lead, and the sample-wise 20 % trimmed mean taken (as robust
   as a median to a minority of ectopic beats, less noisy); every interval
   is then measured once, on the twelve leads together, as IEC 60601-2-25 defines the global
   intervals (neurokit2's delineators work lead by lead and beat by beat,
   and their onsets disagree across leads by more than the tolerances here).
5. **QRS onset and end (J point)** are where the summed absolute slope of
   the twelve median beats (low-passed at 80 Hz; all else at 40 Hz) leaves and returns to a
   threshold (6 % of its QRS maximum, or four times its resting level) and
   stays there 10 ms, searched outward from the steepest up- and down-strokes
   so that the still point at an R or S peak does not end the QRS.
6. **Isoelectric level** of each lead: the flattest 20 ms of the PR segment
   (the 80 ms before the QRS). Every amplitude is taken from it.
7. **P onset**: the spatial P magnitude's peak between the previous T end
   and the QRS (at most 360 ms before it), and where it falls under 12 % of that peak before it; no P (under
   0.04 mV), or one that never settles (P on T), gives no PR.
8. **T end**: tangent method (Lepeschkin-Surawicz) per lead with a T of at
   least 0.1 mV: the steepest slope after the T peak, extended to the
   isoelectric level. QT is the median of those leads' T ends from the QRS
   onset; QTc after Bazett (QT/√RR) and Fridericia (QT/∛RR).
9. **Axis**: the angle of the mean frontal QRS vector, from the net QRS
   areas of I (x) and aVF (y·√3/2, Goldberger's scale).
10. **ST**: each lead's level at the J point, J+40 and J+60 ms (mean of ±10 ms).

Every number is decision support for a physician who reads the tracing;
none of it is a diagnosis.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import interpolate, signal, stats

from device_adapters.ecg.leads import STANDARD_12_LEADS
from device_adapters.ecg.triage.waveform import EcgLeads, NotAnalysableError

__all__ = ["ALGORITHM", "EcgMeasurements", "load_neurokit", "measure"]

ALGORITHM = "teleconsult-ecg-triage/1 (neurokit2 0.2.13 R peaks, global intervals on median beats)"
_INDEPENDENT = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
_MIN_BEATS = 3
_MIN_CORRELATION = 0.7
_MAINS_HZ = 50.0
_Array = npt.NDArray[np.float64]


def load_neurokit() -> Any:
    """neurokit2, imported on first use: its import (matplotlib, scikit-learn) takes seconds."""
    import neurokit2

    return neurokit2


@dataclass(frozen=True, slots=True)
class EcgMeasurements:
    """Global measurements (ms, bpm, degrees) and per-lead ST levels (mV above the PR segment)."""

    heart_rate_bpm: float
    rr_ms: float
    pr_ms: float | None
    qrs_ms: float
    qt_ms: float | None
    qtc_bazett_ms: float | None
    qtc_fridericia_ms: float | None
    qrs_axis_deg: float | None
    st_j_mv: dict[str, float]
    st_j40_mv: dict[str, float]
    st_j60_mv: dict[str, float]
    beats: int
    seconds: float
    sampling_rate: float

    def as_json(self) -> dict[str, Any]:
        """Rounded for people: 1 ms, 0.1 bpm, 1°, 0.01 mV."""
        values = asdict(self)
        for key in (
            "rr_ms",
            "pr_ms",
            "qrs_ms",
            "qt_ms",
            "qtc_bazett_ms",
            "qtc_fridericia_ms",
            "qrs_axis_deg",
        ):
            if values[key] is not None:
                values[key] = round(values[key])
        values["heart_rate_bpm"] = round(self.heart_rate_bpm, 1)
        values["seconds"] = round(self.seconds, 2)
        for key in ("st_j_mv", "st_j40_mv", "st_j60_mv"):
            values[key] = {lead: round(level, 3) for lead, level in values[key].items()}
        return values


def _notched(leads: EcgLeads) -> dict[str, _Array]:
    rate = leads.sampling_rate
    out = {}
    for name, values in leads.leads_mv.items():
        clean = values - np.median(values)
        if rate > 2 * _MAINS_HZ + 10:
            b, a = signal.iirnotch(_MAINS_HZ, 30.0, fs=rate)
            clean = signal.filtfilt(b, a, clean)
        out[name] = np.asarray(clean, dtype=np.float64)
    return out


def _highpassed(leads: dict[str, _Array], rate: float) -> dict[str, _Array]:
    sos = signal.butter(2, 0.5, "highpass", fs=rate, output="sos")
    return {
        name: np.asarray(signal.sosfiltfilt(sos, values), dtype=np.float64) for name, values in leads.items()
    }


def _spline_corrected(
    leads: dict[str, _Array], peaks: list[int], lead_in: int, rate: float
) -> dict[str, _Array]:
    """Each lead minus a cubic spline through its level in every beat's PR segment.

    The classic baseline-wander correction for ST measurement: unlike a
    high-pass filter it leaves the TP, PR and ST segments at one level.
    """
    half = max(1, int(0.008 * rate))
    knots = [p - lead_in - int(0.016 * rate) for p in peaks]
    knots = [k for k in knots if k - half >= 0 and k + half < len(leads["I"])]
    if len(knots) < 2:
        return leads
    x = np.arange(len(leads["I"]))
    out = {}
    for name, values in leads.items():
        levels = [float(np.mean(values[k - half : k + half + 1])) for k in knots]
        baseline = interpolate.CubicSpline(knots, levels)(np.clip(x, knots[0], knots[-1]))
        out[name] = values - baseline
    return out


def _lowpass(values: _Array, rate: float, cutoff: float) -> _Array:
    if rate <= 2 * cutoff + 5:
        return values
    sos = signal.butter(4, cutoff, "lowpass", fs=rate, output="sos")
    return np.asarray(signal.sosfiltfilt(sos, values, axis=-1), dtype=np.float64)


def _r_peaks(filtered: dict[str, _Array], rate: float) -> npt.NDArray[np.int64]:
    """Beats found by neurokit2, then aligned on one shared point by matching a template.

    Taking each beat's own maximum would put some beats on the R wave and
    others on the S wave where the two are of a size, and the median beat
    would average misaligned complexes; matching every beat to the average
    of all of them (±40 ms) aligns them on the same point.
    """
    nk = load_neurokit()
    magnitude = np.sqrt(sum(filtered[name] ** 2 for name in _INDEPENDENT))
    cleaned = nk.ecg_clean(magnitude, sampling_rate=round(rate), method="neurokit")
    found = nk.ecg_findpeaks(cleaned, sampling_rate=round(rate), method="neurokit")
    peaks = np.asarray(found["ECG_R_Peaks"], dtype=np.int64)
    half, shift = int(0.1 * rate), int(0.04 * rate)
    inside = [int(p) for p in peaks if p - half - shift >= 0 and p + half + shift < len(magnitude)]
    if len(inside) < _MIN_BEATS:
        return peaks
    template = np.median([magnitude[p - half : p + half] for p in inside], axis=0)
    template = template - template.mean()
    aligned = []
    for peak in inside:
        segment = magnitude[peak - half - shift : peak + half + shift]
        scores = np.correlate(segment, template, mode="valid")
        aligned.append(peak - shift + int(np.argmax(scores)))
    return np.unique(np.asarray(aligned, dtype=np.int64))


def _runs_below(values: _Array, start: int, step: int, threshold: float, hold: int) -> int | None:
    """From ``start`` moving by ``step``, the first index where ``values`` stays under ``threshold``."""
    index, run, first = start, 0, None
    while 0 <= index < len(values):
        if values[index] < threshold:
            if run == 0:
                first = index
            run += 1
            if run >= hold:
                return first
        else:
            run = 0
        index += step
    return None


@dataclass(frozen=True, slots=True)
class _Median:
    leads: dict[str, _Array]  # median beat per lead, low-passed at 40 Hz
    sharp: dict[str, _Array]  # the same at 80 Hz, for the QRS's edges
    fiducial: int  # the R peak's index in the beat
    peaks: list[int]  # the R peaks of the beats it is the median of

    @property
    def beats(self) -> int:
        return len(self.peaks)


def _median_beats(
    filtered: dict[str, _Array], peaks: npt.NDArray[np.int64], rate: float, rr: float
) -> _Median:
    pre = int(0.5 * rate)
    post = int(min(1.0, 0.92 * rr) * rate)
    length = len(filtered["I"])
    usable = [int(p) for p in peaks if p - pre >= 0 and p + post <= length]
    if len(usable) < _MIN_BEATS:
        raise NotAnalysableError(
            f"only {len(usable)} whole beat(s) found; at least {_MIN_BEATS} are needed to measure"
        )
    leads, sharp, stacks = {}, {}, {}
    for name in STANDARD_12_LEADS:
        stacks[name] = np.stack([filtered[name][p - pre : p + post] for p in usable])
        beat = stats.trim_mean(stacks[name], 0.2, axis=0)
        leads[name] = _lowpass(beat, rate, 40.0)
        sharp[name] = _lowpass(beat, rate, 80.0)
    _check_alike(stacks, pre, rate)
    return _Median(leads, sharp, pre, usable)


def _check_alike(stacks: dict[str, _Array], fiducial: int, rate: float) -> None:
    """Refuse beats that do not resemble their average: noise, or no ECG at all.

    Each beat's QRS (±100 ms around its peak, all twelve leads, low-passed
    at 40 Hz as everything measured is, each lead's own level removed) is
    correlated with the average's; a usable record's beats correlate at
    0.9 or more, detections in noise at about 1/√beats.
    """
    reach = int(0.1 * rate)
    window = slice(fiducial - reach, fiducial + reach)
    parts = [_lowpass(stacks[name], rate, 40.0)[:, window] for name in STANDARD_12_LEADS]
    beats = np.concatenate([part - part.mean(axis=1, keepdims=True) for part in parts], axis=1)
    template = beats.mean(axis=0)
    correlations = [float(np.corrcoef(beat, template)[0, 1]) for beat in beats]
    if float(np.median(correlations)) < _MIN_CORRELATION:
        raise NotAnalysableError(
            f"the beats found do not resemble each other (median correlation {np.median(correlations):.2f}, "
            f"under {_MIN_CORRELATION}): too noisy, or not an ECG"
        )


def _qrs_bounds(median: _Median, rate: float) -> tuple[int, int]:
    slope = sum(np.abs(np.gradient(median.sharp[name])) * rate for name in STANDARD_12_LEADS)
    width = max(1, int(0.006 * rate))
    slope = np.convolve(slope, np.ones(width) / width, mode="same")
    near = int(0.08 * rate)
    f = median.fiducial
    up = max(0, f - near) + int(np.argmax(slope[max(0, f - near) : f + 1]))
    down = f + int(np.argmax(slope[f : f + near + 1]))
    peak = max(slope[up], slope[down])
    resting = float(np.percentile(slope, 20))
    threshold = max(0.06 * peak, 4.0 * resting)
    hold = max(2, int(0.010 * rate))
    before = _runs_below(slope, up, -1, threshold, hold)
    after = _runs_below(slope, down, 1, threshold, hold)
    if before is None or after is None:
        raise NotAnalysableError("the QRS complex has no clear start or end (noise, or a paced rhythm)")
    return before + 1, after


def _baseline(median: _Median, onset: int, rate: float) -> dict[str, float]:
    span = max(2, int(0.020 * rate))
    earliest = max(0, onset - int(0.08 * rate))
    starts = range(earliest, max(earliest + 1, onset - span + 1))
    best = min(
        starts,
        key=lambda s: sum(float(np.ptp(median.leads[name][s : s + span])) for name in STANDARD_12_LEADS),
    )
    return {name: float(np.mean(median.leads[name][best : best + span])) for name in STANDARD_12_LEADS}


def _pr(
    median: _Median, onset: int, base: dict[str, float], rate: float, previous_t_end: int | None
) -> float | None:
    """QRS onset minus P onset; None without a P wave that stands out and settles before it.

    The P wave is the spatial magnitude's peak between the previous beat's
    T end (``previous_t_end``: the median beat's own T end one RR earlier)
    and the QRS, at most 360 ms before it; its onset, where the magnitude
    falls under 12 % of that peak before it.
    """
    start = max(0, onset - int(0.36 * rate), previous_t_end or 0)
    stop = onset - int(0.02 * rate)
    if stop - start < int(0.05 * rate):
        return None
    magnitude = np.sqrt(sum((median.leads[name] - base[name]) ** 2 for name in STANDARD_12_LEADS))
    peak = start + int(np.argmax(magnitude[start:stop]))
    if magnitude[peak] < 0.04:
        return None  # no P wave (atrial fibrillation, junctional rhythm)
    index = peak
    while index > start and magnitude[index] >= 0.12 * magnitude[peak]:
        index -= 1
    if index <= start:
        return None  # never settles: a long PR, or the previous T wave running into the P
    return (onset - (index + 1)) / rate * 1000


def _t_end(lead: _Array, base: float, j: int, rate: float) -> int | None:
    start = j + int(0.08 * rate)
    stop = len(lead) - int(0.02 * rate)
    if stop - start < int(0.1 * rate):
        return None
    window = lead[start:stop] - base
    peak = start + int(np.argmax(np.abs(window)))
    height = lead[peak] - base
    if abs(height) < 0.1:
        return None
    sign = 1.0 if height > 0 else -1.0
    descent_stop = min(stop, peak + int(0.25 * rate))
    if descent_stop - peak < 3:
        return None
    slopes = np.gradient(lead[peak:descent_stop]) * sign
    steepest = peak + int(np.argmin(slopes))
    slope = float(slopes[steepest - peak])
    if slope >= 0:
        return None
    end = steepest + (lead[steepest] - base) * sign / -slope
    if not peak < end < len(lead):
        return None
    return round(end)


def _axis(median: _Median, onset: int, offset: int, base: dict[str, float]) -> float | None:
    x = float(np.sum(median.leads["I"][onset : offset + 1] - base["I"]))
    y = float(np.sum(median.leads["aVF"][onset : offset + 1] - base["aVF"])) / (math.sqrt(3) / 2)
    if math.hypot(x, y) < 1e-6:
        return None
    return math.degrees(math.atan2(y, x))


def _level(lead: _Array, at: int, base: float, rate: float) -> float:
    half = max(1, int(0.010 * rate))
    at = min(max(at, half), len(lead) - half - 1)
    return float(np.mean(lead[at - half : at + half + 1]) - base)


def measure(leads: EcgLeads) -> EcgMeasurements:
    """Measure a 12-lead record; ``NotAnalysableError`` when beats or the QRS cannot be found."""
    rate = leads.sampling_rate
    notched = _notched(leads)
    peaks = _r_peaks(_highpassed(notched, rate), rate)
    if len(peaks) < _MIN_BEATS:
        raise NotAnalysableError(f"{len(peaks)} beat(s) found; at least {_MIN_BEATS} are needed to measure")
    rr = float(np.median(np.diff(peaks))) / rate
    first = _median_beats(_highpassed(notched, rate), peaks, rate, rr)
    first_onset, _ = _qrs_bounds(first, rate)
    corrected = _spline_corrected(notched, first.peaks, first.fiducial - first_onset, rate)
    median = _median_beats(corrected, peaks, rate, rr)
    onset, offset = _qrs_bounds(median, rate)
    base = _baseline(median, onset, rate)
    ends = [
        end
        for name in STANDARD_12_LEADS
        if (end := _t_end(median.leads[name], base[name], offset, rate)) is not None
    ]
    qt = float(np.median(ends) - onset) / rate * 1000 if len(ends) >= 2 else None
    previous_t_end = int(np.median(ends) - rr * rate + 0.01 * rate) if len(ends) >= 2 else None
    j40, j60 = offset + round(0.04 * rate), offset + round(0.06 * rate)
    return EcgMeasurements(
        heart_rate_bpm=60.0 / rr,
        rr_ms=rr * 1000,
        pr_ms=_pr(median, onset, base, rate, previous_t_end),
        qrs_ms=(offset - onset) / rate * 1000,
        qt_ms=qt,
        qtc_bazett_ms=qt / math.sqrt(rr) if qt is not None else None,
        qtc_fridericia_ms=qt / rr ** (1 / 3) if qt is not None else None,
        qrs_axis_deg=_axis(median, onset, offset, base),
        st_j_mv={name: _level(median.leads[name], offset, base[name], rate) for name in STANDARD_12_LEADS},
        st_j40_mv={name: _level(median.leads[name], j40, base[name], rate) for name in STANDARD_12_LEADS},
        st_j60_mv={name: _level(median.leads[name], j60, base[name], rate) for name in STANDARD_12_LEADS},
        beats=median.beats,
        seconds=leads.seconds,
        sampling_rate=rate,
    )
