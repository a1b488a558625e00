"""Kiosk registration (TELECONSULT_KIOSK_DEVICES), device tokens, and the resident ID keys."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from device_adapters.kiosk.devices import KioskRegistry
from device_adapters.kiosk.errors import KioskDeviceError, KioskTokenError
from device_adapters.kiosk.protection import ResidentIdProtector
from device_adapters.kiosk.resident_id import ResidentId
from teleconsult.config import Settings
from tests.device_adapters.kiosk.conftest import ID_DIGIT, ID_X, SECRET


def test_devices_are_registered_in_one_json_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TELECONSULT_KIOSK_DEVICES",
        json.dumps(
            {"KIOSK-V21": "VILLAGE21", "KIOSK-T01": {"organisation": "TOWN01", "token_generation": 2}}
        ),
    )
    monkeypatch.setenv("TELECONSULT_MQTT_URL", "mqtt://127.0.0.1:1883")
    settings = Settings()
    assert settings.kiosk_devices["KIOSK-V21"].organisation == "VILLAGE21"
    assert settings.kiosk_devices["KIOSK-V21"].token_generation == 1
    assert settings.kiosk_devices["KIOSK-T01"].token_generation == 2
    assert settings.mqtt_url == "mqtt://127.0.0.1:1883"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TELECONSULT_KIOSK_DEVICES", '{"KIOSK/1": "TOWN01"}', "MQTT topic level"),
        ("TELECONSULT_KIOSK_DEVICES", '{"KIOSK+": "TOWN01"}', "MQTT topic level"),
        ("TELECONSULT_KIOSK_DEVICES", '{"K1": "town 01"}', "TELECONSULT_KIOSK_DEVICES organisation"),
        ("TELECONSULT_MQTT_URL", "http://broker:1883", "TELECONSULT_MQTT_URL"),
        ("TELECONSULT_MQTT_URL", "mqtt://broker:99999", "invalid port"),
        ("TELECONSULT_KIOSK_ALERT_GLUCOSE_LOW_MMOL_L", "20", "must be below"),
    ],
)
def test_bad_kiosk_settings_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_device_tokens_authenticate_registered_kiosks_only() -> None:
    settings = Settings(kiosk_devices={"KIOSK-V21": "VILLAGE21", "KIOSK.T01": "TOWN01"})
    registry = KioskRegistry(settings, SECRET)
    token = registry.token("KIOSK-V21")
    assert token.startswith("KIOSK-V21.")
    assert len(token) > 40
    assert registry.authenticate(token).organisation == "VILLAGE21"
    assert registry.authenticate(registry.token("KIOSK.T01")).device_id == "KIOSK.T01"  # a dot in the id
    with pytest.raises(KioskTokenError, match="required"):
        registry.authenticate(None)
    with pytest.raises(KioskTokenError, match="malformed"):
        registry.authenticate("no-dot-here")
    with pytest.raises(KioskTokenError, match="not valid"):
        registry.authenticate(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    with pytest.raises(KioskTokenError, match="not valid"):  # one kiosk's code does not open another
        registry.authenticate("KIOSK.T01." + token.rpartition(".")[2])
    with pytest.raises(KioskDeviceError, match="not registered"):
        registry.authenticate("KIOSK-GONE." + token.rpartition(".")[2])
    with pytest.raises(KioskDeviceError, match="not registered"):
        registry.token("KIOSK-GONE")
    # another service secret, or a raised generation, makes the old token worthless
    with pytest.raises(KioskTokenError):
        KioskRegistry(settings, SECRET + "x").authenticate(token)
    revoked = Settings(kiosk_devices={"KIOSK-V21": {"organisation": "VILLAGE21", "token_generation": 2}})
    with pytest.raises(KioskTokenError):
        KioskRegistry(revoked, SECRET).authenticate(token)
    assert KioskRegistry(revoked, SECRET).token("KIOSK-V21") != token


def test_resident_ids_are_kept_as_keyed_hash_and_ciphertext() -> None:
    protector = ResidentIdProtector(SECRET)
    rid = ResidentId(ID_DIGIT)
    digest = protector.digest(rid)
    assert digest == protector.digest(ResidentId(ID_DIGIT))
    assert len(digest) == 64
    assert digest != protector.digest(ResidentId(ID_X))
    assert digest != ResidentIdProtector(SECRET + "x").digest(rid)  # keyed: not a plain hash
    token = protector.encrypt(rid)
    assert ID_DIGIT not in token
    assert protector.encrypt(rid) != token
    assert protector.decrypt(token) == rid
    with pytest.raises(ValueError, match="cannot be decrypted"):
        ResidentIdProtector(SECRET + "x").decrypt(token)
