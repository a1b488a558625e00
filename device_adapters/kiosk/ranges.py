"""Values no living person has: refused at intake, whatever the device says.

A kiosk that reads a cuff off the arm, a strip without blood or a scale
with a child leaning on it produces numbers that must not enter a patient
record, nor raise an alert. The limits are wide on purpose (they bound what
can be measured, not what is normal): anything inside them is stored, and
what is dangerous is flagged by the alert thresholds instead
(``alerts.py``). Limits are in the canonical unit of each kind.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LIMITS", "Limits", "check_range"]


@dataclass(frozen=True, slots=True)
class Limits:
    low: float
    high: float
    display_unit: str


LIMITS: dict[str, Limits] = {
    "systolic": Limits(40, 300, "mmHg"),
    "diastolic": Limits(20, 200, "mmHg"),
    "heart_rate": Limits(20, 300, "beats/minute"),
    "glucose": Limits(0.5, 55.0, "mmol/L"),
    "temperature": Limits(25.0, 45.0, "°C"),
    "spo2": Limits(50, 100, "%"),
    "weight": Limits(1.0, 350.0, "kg"),
    "ph": Limits(4.5, 9.0, ""),
    "specific_gravity": Limits(1.000, 1.060, ""),
}


def _text(value: float, unit: str) -> str:
    return f"{value:g} {unit}".strip()


def check_range(field: str, canonical: float, reported: float, reported_unit: str) -> None:
    """``ValueError`` naming ``field`` when ``canonical`` lies outside its limits."""
    limits = LIMITS[field]
    if limits.low <= canonical <= limits.high:
        return
    converted = (
        ""
        if reported_unit == limits.display_unit
        else f" ({_text(round(canonical, 2), limits.display_unit)})"
    )
    raise ValueError(
        f"{field} {_text(reported, reported_unit)}{converted} is not a value a person can have "
        f"(accepted: {_text(limits.low, '')}-{_text(limits.high, limits.display_unit)}); "
        "check the device and measure again"
    )
