"""Kiosk test fixtures: made-up resident ID numbers, registered kiosks, the API with a community.

COUNTY > TOWN01, TOWN02 > VILLAGE21 (tests/conftest.py). Kiosk ``KIOSK-V21``
belongs to the village clinic VILLAGE21 (so TOWN02 and COUNTY see it,
TOWN01 does not); ``KIOSK-T01`` to TOWN01. ID numbers are synthetic (region
110105, made-up birth dates and sequences), their check characters computed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from device_adapters.kiosk.devices import KioskRegistry
from device_adapters.kiosk.resident_id import check_character
from teleconsult.config import Settings
from tests.conftest import ApiClient
from tests.teleconsult.consults.conftest import _cheap_password_hashing  # noqa: F401 - autouse fixture

SECRET = "kiosk-tests-secret-key-of-at-least-32-characters"
DEVICES = {"KIOSK-V21": "VILLAGE21", "KIOSK-T01": "TOWN01", "KIOSK-NOWHERE": "NOSUCHORG"}


def resident_id(birth: str = "19491231", sequence: str = "002", region: str = "110105") -> str:
    """A synthetic number with a correct check character."""
    first17 = f"{region}{birth}{sequence}"
    return first17 + check_character(first17)


# One number whose check character is X, one whose check character is a digit.
ID_X = resident_id()
ID_DIGIT = resident_id("19620304", "123")
assert ID_X.endswith("X")
assert ID_DIGIT[-1].isdigit()


def message(
    device_id: str = "KIOSK-V21",
    *,
    number: str = ID_DIGIT,
    measured_at: datetime | str | None = None,
    measurements: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    when = measured_at or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    return {
        "device_id": device_id,
        "measured_at": when if isinstance(when, str) else when.isoformat(),
        "resident_id": number,
        "name": "王小明",
        "measurements": measurements
        if measurements is not None
        else [
            {"type": "blood_pressure", "systolic": 132, "diastolic": 84, "unit": "mmHg"},
            {"type": "glucose", "value": 6.1, "unit": "mmol/L", "context": "fasting"},
            {"type": "temperature", "value": 36.7, "unit": "°C"},
            {"type": "spo2", "value": 97, "unit": "%"},
            {"type": "weight", "value": 61.5, "unit": "kg"},
            {"type": "urinalysis", "glucose": "-", "protein": "±", "nitrite": "neg", "ph": 6.0},
        ],
        **extra,
    }


@pytest.fixture
def app_settings(make_settings) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(  # type: ignore[no-any-return]
        secret_key=SECRET, kiosk_devices=DEVICES, consult_overdue_check_seconds=0
    )


@pytest.fixture
def registry(app_settings: Settings) -> KioskRegistry:
    return KioskRegistry(app_settings, SECRET)


@pytest.fixture
def kiosk_headers(registry: KioskRegistry) -> dict[str, str]:
    return {"Authorization": f"Bearer {registry.token('KIOSK-V21')}"}


def post(api: ApiClient, body: dict[str, Any], headers: dict[str, str]) -> Any:
    return api.client.post("/api/kiosk/measurements", json=body, headers=headers)  # type: ignore[attr-defined]
