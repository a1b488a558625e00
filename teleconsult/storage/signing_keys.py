"""Per-user report-signing keys: public keys in the clear, private keys sealed.

A user's key pair is made at their first signature. The private key is
stored only sealed (``domain/signing.py``: AES-256-GCM under a key derived
from the server's secret key); public keys are kept for ever, so a
signature verifies after its key was retired.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from teleconsult.domain.signing import (
    ALGORITHM,
    KeyUnsealError,
    fingerprint,
    key_encryption_key,
    new_private_key,
    public_key_bytes,
    seal_private_key,
    unseal_private_key,
)
from teleconsult.storage.tables import SigningKeyRow
from teleconsult.storage.transactions import reading, writing

__all__ = ["SigningKey", "SigningKeyStore"]

logger = logging.getLogger(__name__)

_keys = SigningKeyRow.__table__


@dataclass(frozen=True, slots=True)
class SigningKey:
    username: str
    algorithm: str
    fingerprint: str
    private_key: Ed25519PrivateKey


class SigningKeyStore:
    def __init__(self, engine: Engine, secret_key: str) -> None:
        self.engine = engine
        self._kek = key_encryption_key(secret_key)

    def key_for(self, username: str) -> SigningKey:
        """The user's key in use, made now if they have none (or theirs no longer opens)."""
        for _attempt in range(3):
            with reading(self.engine) as conn:
                row = conn.execute(
                    select(_keys).where(_keys.c.username == username, _keys.c.retired_at.is_(None))
                ).first()
            if row is not None:
                try:
                    private = unseal_private_key(self._kek, row.sealed_private_key, username, row.fingerprint)
                except KeyUnsealError:
                    # The secret key was rotated (or the row copied from elsewhere): retire it and
                    # make a new pair; signatures made with the old one still verify.
                    logger.warning(
                        "signing key %s of %s cannot be opened with this server's secret key; "
                        "retiring it and making a new one",
                        row.fingerprint,
                        username,
                    )
                    self._retire(row.pk)
                    continue
                return SigningKey(username, row.algorithm, row.fingerprint, private)
            created = self._create(username)
            if created is not None:
                return created
        raise RuntimeError(f"could not obtain a signing key for {username}")

    def public_key(self, key_fingerprint: str) -> bytes | None:
        """The raw public key with this fingerprint, retired or not."""
        with reading(self.engine) as conn:
            value = conn.execute(
                select(_keys.c.public_key).where(_keys.c.fingerprint == key_fingerprint)
            ).scalar()
        return None if value is None else base64.b64decode(value)

    def _create(self, username: str) -> SigningKey | None:
        private = new_private_key()
        public = public_key_bytes(private)
        key_fingerprint = fingerprint(public)
        try:
            with writing(self.engine) as conn:
                conn.execute(
                    _keys.insert().values(
                        username=username,
                        algorithm=ALGORITHM,
                        fingerprint=key_fingerprint,
                        public_key=base64.b64encode(public).decode("ascii"),
                        sealed_private_key=seal_private_key(self._kek, private, username, key_fingerprint),
                        created_at=datetime.now(UTC),
                    )
                )
        except IntegrityError:
            return None  # made by a concurrent first signature of the same user: use that one
        logger.info("made signing key %s for %s", key_fingerprint, username)
        return SigningKey(username, ALGORITHM, key_fingerprint, private)

    def _retire(self, pk: int) -> None:
        with writing(self.engine) as conn:
            conn.execute(
                update(_keys)
                .where(_keys.c.pk == pk, _keys.c.retired_at.is_(None))
                .values(retired_at=datetime.now(UTC))
            )
