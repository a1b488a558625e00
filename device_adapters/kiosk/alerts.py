"""Which kiosk values need a doctor now: thresholds from settings, reasons in words.

A value past a threshold is stored like any other, with the reason; the
intake then publishes ``alert.critical`` for the clinic's organisation
scope (docs/devices.md, "Alerts"). The defaults are the critical values of
Chinese primary care practice: a hypertensive crisis (SBP >= 180 or DBP >=
110 mmHg), severe hyperglycaemia (>= 16.7 mmol/L) or hypoglycaemia (<= 3.0
mmol/L), hypoxaemia (SpO2 < 90 %) and high fever (>= 39.5 °C). Each is a
``TELECONSULT_KIOSK_ALERT_*`` setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from device_adapters.kiosk.schema import Normalised
from teleconsult.config import Settings
from teleconsult.domain.observations import ObservationKind

__all__ = ["AlertThresholds", "Crossing"]


@dataclass(frozen=True, slots=True)
class Crossing:
    """One value past one threshold: what ``alert.critical`` lists under ``measurements``."""

    kind: ObservationKind
    component: str
    value: float
    unit: str
    comparator: str  # >=, <=, <
    threshold: float
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {
            "type": self.kind.value,
            "component": self.component,
            "value": self.value,
            "unit": self.unit,
            "threshold": f"{self.comparator} {self.threshold:g}",
        }


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    systolic_mmhg: float = 180.0
    diastolic_mmhg: float = 110.0
    glucose_high_mmol_l: float = 16.7
    glucose_low_mmol_l: float = 3.0
    spo2_below_percent: float = 90.0
    temperature_celsius: float = 39.5

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertThresholds:
        return cls(
            systolic_mmhg=settings.kiosk_alert_systolic_mmhg,
            diastolic_mmhg=settings.kiosk_alert_diastolic_mmhg,
            glucose_high_mmol_l=settings.kiosk_alert_glucose_high_mmol_l,
            glucose_low_mmol_l=settings.kiosk_alert_glucose_low_mmol_l,
            spo2_below_percent=settings.kiosk_alert_spo2_below_percent,
            temperature_celsius=settings.kiosk_alert_temperature_celsius,
        )

    def crossings(self, measurement: Normalised) -> list[Crossing]:
        """Every threshold ``measurement`` crosses (none for kinds without thresholds)."""
        kind, values = measurement.kind, measurement.values
        found: list[Crossing] = []

        def check(component: str, label: str, unit: str, comparator: str, threshold: float) -> None:
            value = values.get(component)
            if not isinstance(value, float | int):
                return
            crossed = {
                ">=": value >= threshold,
                "<=": value <= threshold,
                "<": value < threshold,
            }[comparator]
            if crossed:
                sign = {">=": "≥", "<=": "≤", "<": "<"}[comparator]
                reason = f"{label} {value:g} {unit} {sign} {threshold:g} {unit}"
                found.append(Crossing(kind, component, float(value), unit, comparator, threshold, reason))

        if kind is ObservationKind.BLOOD_PRESSURE:
            check("systolic", "systolic blood pressure", "mmHg", ">=", self.systolic_mmhg)
            check("diastolic", "diastolic blood pressure", "mmHg", ">=", self.diastolic_mmhg)
        elif kind is ObservationKind.GLUCOSE:
            check("value", "blood glucose", "mmol/L", ">=", self.glucose_high_mmol_l)
            check("value", "blood glucose", "mmol/L", "<=", self.glucose_low_mmol_l)
        elif kind is ObservationKind.SPO2:
            check("value", "SpO2", "%", "<", self.spo2_below_percent)
        elif kind is ObservationKind.TEMPERATURE:
            check("value", "body temperature", "°C", ">=", self.temperature_celsius)
        return found
