"""Units kiosks report, and the one canonical (UCUM) unit each kind is stored in.

Kiosks from different makers report blood pressure in mmHg or kPa, glucose
in mmol/L or mg/dL, temperature in °C or °F, weight in kg, g or lb. Each is
converted once, at intake, to the unit a clinician in China reads and the
FHIR vital signs profile names; the reported value and unit are kept beside
it. A unit not listed here is refused (naming the accepted ones) rather
than guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from teleconsult.domain.observations import ObservationKind

__all__ = ["CANONICAL", "Unit", "accepted_units", "unit_of"]

# Glucose: 1 mmol/L = 18.016 mg/dL (molar mass 180.16 g/mol).
_GLUCOSE_MG_DL_PER_MMOL_L = 18.016
_MMHG_PER_KPA = 7.500617
_KG_PER_LB = 0.45359237


@dataclass(frozen=True, slots=True)
class Unit:
    """A reported unit: its UCUM code, how people write it, and how to reach the canonical unit."""

    ucum: str
    display: str
    to_canonical: Callable[[float], float]


def _same(value: float) -> float:
    return value


# kind -> canonical unit
CANONICAL: dict[ObservationKind, Unit] = {
    ObservationKind.BLOOD_PRESSURE: Unit("mm[Hg]", "mmHg", _same),
    ObservationKind.HEART_RATE: Unit("/min", "beats/minute", _same),
    ObservationKind.GLUCOSE: Unit("mmol/L", "mmol/L", _same),
    ObservationKind.TEMPERATURE: Unit("Cel", "°C", _same),
    ObservationKind.SPO2: Unit("%", "%", _same),
    ObservationKind.WEIGHT: Unit("kg", "kg", _same),
}

_KPA = Unit("kPa", "kPa", lambda v: v * _MMHG_PER_KPA)
_MG_DL = Unit("mg/dL", "mg/dL", lambda v: v / _GLUCOSE_MG_DL_PER_MMOL_L)
_FAHRENHEIT = Unit("[degF]", "°F", lambda v: (v - 32.0) * 5.0 / 9.0)
_GRAM = Unit("g", "g", lambda v: v / 1000.0)
_POUND = Unit("[lb_av]", "lb", lambda v: v * _KG_PER_LB)

# kind -> spelling (lower case, spaces removed) -> unit
_SPELLINGS: dict[ObservationKind, dict[str, Unit]] = {
    ObservationKind.BLOOD_PRESSURE: {
        "mmhg": CANONICAL[ObservationKind.BLOOD_PRESSURE],
        "mm[hg]": CANONICAL[ObservationKind.BLOOD_PRESSURE],
        "kpa": _KPA,
    },
    ObservationKind.HEART_RATE: {
        "/min": CANONICAL[ObservationKind.HEART_RATE],
        "bpm": CANONICAL[ObservationKind.HEART_RATE],
        "{beats}/min": CANONICAL[ObservationKind.HEART_RATE],
        "次/分": CANONICAL[ObservationKind.HEART_RATE],
    },
    ObservationKind.GLUCOSE: {
        "mmol/l": CANONICAL[ObservationKind.GLUCOSE],
        "mg/dl": _MG_DL,
    },
    ObservationKind.TEMPERATURE: {
        "cel": CANONICAL[ObservationKind.TEMPERATURE],
        "°c": CANONICAL[ObservationKind.TEMPERATURE],
        "℃": CANONICAL[ObservationKind.TEMPERATURE],
        "c": CANONICAL[ObservationKind.TEMPERATURE],
        "[degf]": _FAHRENHEIT,
        "°f": _FAHRENHEIT,
        "℉": _FAHRENHEIT,
        "f": _FAHRENHEIT,
    },
    ObservationKind.SPO2: {"%": CANONICAL[ObservationKind.SPO2]},
    ObservationKind.WEIGHT: {
        "kg": CANONICAL[ObservationKind.WEIGHT],
        "g": _GRAM,
        "lb": _POUND,
        "[lb_av]": _POUND,
    },
}


def accepted_units(kind: ObservationKind) -> list[str]:
    """The spellings people use, one per unit, for error messages and the docs."""
    seen: dict[str, None] = {}
    for unit in _SPELLINGS[kind].values():
        seen.setdefault(unit.display)
    return list(seen)


def unit_of(kind: ObservationKind, spelling: str) -> Unit:
    """The unit ``spelling`` names for ``kind``; ``ValueError`` naming the accepted ones otherwise."""
    key = "".join(spelling.split()).lower()
    unit = _SPELLINGS[kind].get(key)
    if unit is None:
        raise ValueError(
            f"unit {spelling[:20]!r} is not one teleconsult converts for {kind.value}: "
            f"use {', '.join(accepted_units(kind))}"
        )
    return unit
