"""Resident ID numbers at rest: a keyed hash to find the patient, Fernet to keep the number itself.

An ID number has little entropy (a region, a birth date, a sequence and a
check character), so a plain SHA-256 of it is reversed by trying them all;
the hash is an HMAC-SHA256 under a key only the service holds. The number
is kept encrypted (Fernet: AES-128-CBC with HMAC-SHA256, authenticated) so
it can be given back to an authorised export one day, never in clear in the
index. Both keys are derived with HKDF from the service secret
(``TELECONSULT_SECRET_KEY`` or ``<data dir>/secret.key``), each under its own
label, so neither key is the secret itself, and the token signing key
never doubles as an encryption key. Changing the secret makes the stored
hashes and ciphertexts unusable: documented in docs/devices.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from device_adapters.kiosk.resident_id import ResidentId

__all__ = ["ResidentIdProtector"]

_SALT = b"teleconsult resident-id"


def _derive(secret: str, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=label).derive(secret.encode("utf-8"))


class ResidentIdProtector:
    """The keyed hash and the encryption of resident ID numbers under one service secret."""

    def __init__(self, secret: str) -> None:
        if len(secret) < 16:
            raise ValueError("the service secret is too short to derive resident ID keys from")
        self._hmac_key = _derive(secret, b"hmac-sha256 v1")
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(secret, b"fernet v1")))

    def digest(self, resident_id: ResidentId) -> str:
        """64 hex digits, the same for the same number and secret: what patients are matched by."""
        return hmac.new(self._hmac_key, resident_id.number.encode("ascii"), hashlib.sha256).hexdigest()

    def encrypt(self, resident_id: ResidentId) -> str:
        return self._fernet.encrypt(resident_id.number.encode("ascii")).decode("ascii")

    def decrypt(self, token: str) -> ResidentId:
        """The number back; ``ValueError`` if the token was made under another secret or altered."""
        try:
            return ResidentId(self._fernet.decrypt(token.encode("ascii")).decode("ascii"))
        except InvalidToken:
            raise ValueError("the stored resident ID cannot be decrypted with this service secret") from None
