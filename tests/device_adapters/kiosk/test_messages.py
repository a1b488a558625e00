"""Kiosk messages: units converted to the canonical ones, impossible values refused naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from device_adapters.kiosk.alerts import AlertThresholds
from device_adapters.kiosk.errors import KioskMessageError, field_errors
from device_adapters.kiosk.schema import KioskMessage
from teleconsult.config import Settings
from teleconsult.domain.observations import ObservationKind
from tests.device_adapters.kiosk.conftest import ID_DIGIT, message


def _one(measurement: dict[str, Any]) -> tuple[dict[str, float | str], str]:
    parsed = KioskMessage.model_validate(message(measurements=[measurement]))
    normalised = parsed.measurements[0].normalised()
    return normalised.values, normalised.unit


def _refused(measurements: list[dict[str, Any]], **extra: Any) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as caught:
        KioskMessage.model_validate(message(measurements=measurements, **extra))
    errors = field_errors(caught.value)
    assert ID_DIGIT not in str(errors)
    return errors


@pytest.mark.parametrize(
    ("measurement", "values", "unit"),
    [
        (
            {"type": "blood_pressure", "systolic": 120, "diastolic": 80},
            {"systolic": 120, "diastolic": 80},
            "mm[Hg]",
        ),
        (
            {"type": "blood_pressure", "systolic": 16, "diastolic": 10.6, "unit": "kPa"},
            {"systolic": 120.01, "diastolic": 79.51},
            "mm[Hg]",
        ),
        ({"type": "glucose", "value": 7.0, "unit": "mmol/l"}, {"value": 7.0}, "mmol/L"),
        ({"type": "glucose", "value": 126, "unit": "mg/dL"}, {"value": 6.99}, "mmol/L"),
        ({"type": "temperature", "value": 36.5, "unit": "℃"}, {"value": 36.5}, "Cel"),
        ({"type": "temperature", "value": 98.6, "unit": "°F"}, {"value": 37.0}, "Cel"),
        ({"type": "temperature", "value": 103.1, "unit": "[degF]"}, {"value": 39.5}, "Cel"),
        ({"type": "spo2", "value": 95}, {"value": 95}, "%"),
        ({"type": "weight", "value": 61500, "unit": "g"}, {"value": 61.5}, "kg"),
        ({"type": "weight", "value": 132, "unit": "lb"}, {"value": 59.87}, "kg"),
        ({"type": "heart_rate", "value": 72, "unit": "bpm"}, {"value": 72}, "/min"),
    ],
)
def test_units_are_converted_to_the_canonical_one(
    measurement: dict[str, Any], values: dict[str, float], unit: str
) -> None:
    assert _one(measurement) == (values, unit)


def test_dipstick_readings_are_stored_in_one_spelling() -> None:
    values, unit = _one(
        {
            "type": "urinalysis",
            "glucose": "-",
            "protein": "++",
            "ketones": "±",
            "blood": "阴性",
            "leukocytes": "1+",
            "urobilinogen": "正常",
            "nitrite": "+",
            "ph": 6.5,
            "specific_gravity": 1.015,
        }
    )
    assert unit == ""
    assert values == {
        "glucose": "negative",
        "protein": "2+",
        "ketones": "trace",
        "blood": "negative",
        "leukocytes": "1+",
        "urobilinogen": "normal",
        "nitrite": "positive",
        "ph": 6.5,
        "specific_gravity": 1.015,
    }


@pytest.mark.parametrize(
    ("measurement", "field", "message_part"),
    [
        ({"type": "blood_pressure", "systolic": 400, "diastolic": 80}, "blood_pressure", "systolic 400 mmHg"),
        ({"type": "blood_pressure", "systolic": 120, "diastolic": 10}, "blood_pressure", "diastolic 10 mmHg"),
        (
            {"type": "blood_pressure", "systolic": 80, "diastolic": 120},
            "blood_pressure",
            "not below systolic",
        ),
        (
            {"type": "blood_pressure", "systolic": 50, "diastolic": 30, "unit": "kPa"},
            "blood_pressure",
            "(375.03 mmHg)",
        ),
        ({"type": "glucose", "value": 0.1, "unit": "mmol/L"}, "glucose", "glucose 0.1 mmol/L"),
        ({"type": "glucose", "value": 1500, "unit": "mg/dL"}, "glucose", "glucose 1500 mg/dL"),
        ({"type": "temperature", "value": 50, "unit": "°C"}, "temperature", "temperature 50 °C"),
        ({"type": "temperature", "value": 37, "unit": "°F"}, "temperature", "temperature 37 °F"),
        ({"type": "spo2", "value": 101}, "spo2", "spo2 101 %"),
        ({"type": "weight", "value": 0, "unit": "kg"}, "weight", "weight 0 kg"),
        ({"type": "heart_rate", "value": 400}, "heart_rate", "heart_rate 400"),
        ({"type": "urinalysis", "ph": 12}, "urinalysis", "ph 12"),
        ({"type": "urinalysis", "protein": "lots"}, "urinalysis.protein", "not a dipstick reading"),
        ({"type": "urinalysis"}, "urinalysis", "at least one pad"),
        ({"type": "weight", "value": 60, "unit": "stone"}, "weight", "use kg, g, lb"),
        ({"type": "glucose", "value": 6}, "glucose.unit", "Field required"),
        ({"type": "spo2", "value": "NaN"}, "spo2.value", "finite number"),
        ({"type": "cholesterol", "value": 5}, "measurements.0", "does not match any of the expected tags"),
    ],
)
def test_impossible_values_are_refused_naming_the_field(
    measurement: dict[str, Any], field: str, message_part: str
) -> None:
    errors = _refused([measurement])
    assert len(errors) == 1, errors
    assert errors[0]["field"].startswith("measurements.0")
    assert field in errors[0]["field"]
    assert message_part in errors[0]["message"]


def test_message_level_rules() -> None:
    assert "at least one measurement or an ECG" in _refused([])[0]["message"]
    two = [{"type": "spo2", "value": 97}, {"type": "spo2", "value": 96}]
    assert "two spo2 measurements" in _refused(two)[0]["message"]
    naive = _refused([{"type": "spo2", "value": 97}], measured_at="2026-11-24T09:30:00")
    assert naive[0]["field"] == "measured_at"
    assert "timezone" in naive[0]["message"]
    assert _refused([{"type": "spo2", "value": 97}], unexpected=1)[0]["field"] == "unexpected"
    unset_clock = _refused([{"type": "spo2", "value": 97}], measured_at="1970-01-01T08:00:00+08:00")
    assert "before 2000" in unset_clock[0]["message"]
    beyond = _refused([{"type": "spo2", "value": 97}], measured_at="9999-12-31T23:59:59-05:00")
    assert "outside the years" in beyond[0]["message"]
    wrong = message(number=ID_DIGIT[:-1] + ("0" if ID_DIGIT[-1] != "0" else "1"))
    with pytest.raises(ValidationError) as caught:
        KioskMessage.model_validate(wrong)
    error = KioskMessageError.of(caught.value)
    assert error.errors[0]["field"] == "resident_id"
    assert "check character" in error.message
    assert wrong["resident_id"] not in error.message


def test_alert_thresholds_default_and_from_settings() -> None:
    parsed = KioskMessage.model_validate(
        message(
            measurements=[
                {"type": "blood_pressure", "systolic": 185, "diastolic": 112},
                {"type": "glucose", "value": 2.8, "unit": "mmol/L"},
                {"type": "spo2", "value": 89},
                {"type": "temperature", "value": 39.5, "unit": "°C"},
                {"type": "weight", "value": 140, "unit": "kg"},
            ]
        )
    )
    thresholds = AlertThresholds()
    reasons = {m.type: [c.reason for c in thresholds.crossings(m.normalised())] for m in parsed.measurements}
    assert reasons == {
        "blood_pressure": [
            "systolic blood pressure 185 mmHg ≥ 180 mmHg",
            "diastolic blood pressure 112 mmHg ≥ 110 mmHg",
        ],
        "glucose": ["blood glucose 2.8 mmol/L ≤ 3 mmol/L"],
        "spo2": ["SpO2 89 % < 90 %"],
        "temperature": ["body temperature 39.5 °C ≥ 39.5 °C"],
        "weight": [],
    }
    stricter = AlertThresholds.from_settings(
        Settings(kiosk_alert_systolic_mmhg=140, kiosk_alert_spo2_below_percent=85)
    )
    bp = parsed.measurements[0].normalised()
    assert [c.threshold for c in stricter.crossings(bp)] == [140, 110]
    spo2 = parsed.measurements[2].normalised()
    assert stricter.crossings(spo2) == []
    assert AlertThresholds().crossings(parsed.measurements[1].normalised())[0].kind is ObservationKind.GLUCOSE
