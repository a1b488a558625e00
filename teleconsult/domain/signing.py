"""Digital signatures of reports: canonical JSON, Ed25519, and sealing private keys at rest.

Choices, and why:

- **Canonical form: RFC 8785** (JSON Canonicalization Scheme, through the
  ``rfc8785`` package): sorted keys, UTF-8, no insignificant whitespace,
  numbers as ECMAScript prints them. Anyone can recompute the signed bytes
  from the report's JSON with an off-the-shelf JCS library, in any language.
- **Ed25519** (RFC 8032) per-user keys: deterministic signatures (no
  per-signature random nonce to get wrong, unlike ECDSA), 32-byte keys,
  64-byte signatures, fast. The algorithm is recorded with every signature,
  so moving to ECDSA P-256 later (e.g. for DICOM Digital Signature profiles)
  leaves old signatures verifiable.
- **Private keys sealed with AES-256-GCM** under a key-encryption key derived
  by HKDF-SHA256 from the server's secret key (``TELECONSULT_SECRET_KEY`` or
  ``<data dir>/secret.key``). The owner and fingerprint are the GCM
  associated data, so a sealed key moved to another user's row does not
  open. Rotating the secret key makes sealed keys unusable, not signatures:
  users get a new key pair at their next signature, and verification needs
  public keys only.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "ALGORITHM",
    "CANONICALISATION",
    "KeyUnsealError",
    "canonical_json",
    "digest",
    "fingerprint",
    "key_encryption_key",
    "new_private_key",
    "public_key_bytes",
    "seal_private_key",
    "sign",
    "unseal_private_key",
    "verify",
]

ALGORITHM = "Ed25519"
CANONICALISATION = "RFC 8785"
_KEK_INFO = b"teleconsult report signing keys v1"
_NONCE_BYTES = 12


class KeyUnsealError(Exception):
    """A sealed private key does not open with this server's secret key (rotated, or moved)."""


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 serialisation of ``value``: the exact bytes a signature covers."""
    return rfc8785.dumps(value)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_bytes(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public_key: bytes) -> str:
    """``sha256:<hex>`` of the raw public key, as printed on reports next to the signer."""
    return "sha256:" + hashlib.sha256(public_key).hexdigest()


def sign(private_key: Ed25519PrivateKey, payload: bytes) -> str:
    """The base64 signature of ``payload``."""
    return base64.b64encode(private_key.sign(payload)).decode("ascii")


def verify(public_key: bytes, signature: str, payload: bytes) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        Ed25519PublicKey.from_public_bytes(public_key).verify(raw, payload)
    except (InvalidSignature, ValueError):
        return False
    return True


def key_encryption_key(secret_key: str) -> bytes:
    """The AES-256 key that seals private keys, derived from the server's secret key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEK_INFO).derive(
        secret_key.encode("utf-8")
    )


def _associated_data(username: str, key_fingerprint: str) -> bytes:
    return f"{username}\n{key_fingerprint}".encode()


def seal_private_key(kek: bytes, private_key: Ed25519PrivateKey, username: str, key_fingerprint: str) -> str:
    """base64(nonce || AES-GCM(raw private key)), bound to its owner and fingerprint."""
    raw = private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(kek).encrypt(nonce, raw, _associated_data(username, key_fingerprint))
    return base64.b64encode(nonce + sealed).decode("ascii")


def unseal_private_key(kek: bytes, sealed: str, username: str, key_fingerprint: str) -> Ed25519PrivateKey:
    try:
        data = base64.b64decode(sealed, validate=True)
        raw = AESGCM(kek).decrypt(
            data[:_NONCE_BYTES], data[_NONCE_BYTES:], _associated_data(username, key_fingerprint)
        )
        key = Ed25519PrivateKey.from_private_bytes(raw)
    except (InvalidTag, ValueError) as exc:
        raise KeyUnsealError(f"the signing key {key_fingerprint} of {username} cannot be opened") from exc
    if fingerprint(public_key_bytes(key)) != key_fingerprint:
        raise KeyUnsealError(
            f"the signing key of {username} does not match its fingerprint {key_fingerprint}"
        )
    return key
