"""Registered kiosks (``TELECONSULT_KIOSK_DEVICES``) and their HTTP tokens.

A hospital IT person registers a kiosk with one line of settings, device id
-> the organisation code of its village clinic, and gives the kiosk its
token, printed by ``teleconsult kiosk token DEVICE``. The token is
``<device id>.<HMAC-SHA256 of the id and its generation>`` under a key
derived from the service secret: nothing per device is stored, a kiosk
removed from the setting is refused at once, and raising a device's
``token_generation`` revokes its leaked token alone. Over MQTT the broker
authenticates the kiosk (docs/devices.md shows a Mosquitto ACL); the topic's
device id must be registered and match the message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from device_adapters.kiosk.errors import KioskDeviceError, KioskTokenError
from device_adapters.kiosk.schema import DEVICE_ID_PATTERN
from teleconsult.config import Settings

__all__ = ["KioskRegistry", "RegisteredDevice"]

_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class RegisteredDevice:
    device_id: str
    organisation: str
    token_generation: int


class KioskRegistry:
    def __init__(self, settings: Settings, secret: str) -> None:
        self._devices = {
            device_id: RegisteredDevice(device_id, entry.organisation, entry.token_generation)
            for device_id, entry in settings.kiosk_devices.items()
        }
        self._key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"teleconsult kiosk", info=b"device token v1"
        ).derive(secret.encode("utf-8"))

    def device(self, device_id: str) -> RegisteredDevice:
        """The registered kiosk; ``KioskDeviceError`` (403) for any other id."""
        found = self._devices.get(device_id)
        if found is None:
            raise KioskDeviceError(
                f"kiosk {device_id[:64]!r} is not registered: add it to TELECONSULT_KIOSK_DEVICES "
                "with its clinic's organisation code"
            )
        return found

    def token(self, device_id: str) -> str:
        """The HTTP token of a registered kiosk (what ``teleconsult kiosk token`` prints)."""
        return f"{device_id}.{self._mac(self.device(device_id))}"

    def authenticate(self, token: str | None) -> RegisteredDevice:
        """The kiosk a token belongs to; ``KioskTokenError`` (401) or ``KioskDeviceError`` (403)."""
        if not token:
            raise KioskTokenError(
                "a kiosk token is required (Authorization: Bearer <token from `teleconsult kiosk token`>)"
            )
        device_id, _, mac = token.rpartition(".")
        if not mac or not _DEVICE_ID.match(device_id):  # e.g. a user's access token (a JWT)
            raise KioskTokenError("the kiosk token is malformed: expected <device id>.<code>")
        device = self.device(device_id)
        if not hmac.compare_digest(mac.encode("ascii", "replace"), self._mac(device).encode("ascii")):
            raise KioskTokenError(
                f"the token of kiosk {device_id!r} is not valid (revoked by a new token_generation, or "
                "made with another service secret): print a new one with `teleconsult kiosk token`"
            )
        return device

    def _mac(self, device: RegisteredDevice) -> str:
        message = f"{device.device_id}\x00{device.token_generation}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
