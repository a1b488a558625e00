"""Passwords (argon2) and bearer tokens (JWT, HS256).

Access tokens are short-lived JWTs carrying only the username and role; the
organisation scope is re-read from the database on every request, so moving
or disabling a user takes effect at once. Refresh tokens are random strings
kept only as their SHA-256 and rotated on each use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from teleconsult.config import Settings

__all__ = [
    "TokenError",
    "decode_access_token",
    "hash_password",
    "issue_access_token",
    "load_secret_key",
    "new_refresh_token",
    "refresh_token_digest",
    "verify_password",
]

logger = logging.getLogger(__name__)

_HASHER = PasswordHasher()
_ALGORITHM = "HS256"
_AUDIENCE = "teleconsult"


class TokenError(Exception):
    """A token that is missing, expired, forged or malformed."""


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def load_secret_key(settings: Settings) -> str:
    """The signing key: from settings, else a random one created once in the data dir."""
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.data_dir) / "secret.key"
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key.encode("ascii"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    logger.info("created a token signing key in %s", path)
    return key


def issue_access_token(key: str, username: str, role: str, minutes: int) -> tuple[str, int]:
    now = datetime.now(UTC)
    expires = now + timedelta(minutes=minutes)
    claims = {"sub": username, "role": role, "iat": now, "exp": expires, "aud": _AUDIENCE, "typ": "access"}
    return jwt.encode(claims, key, algorithm=_ALGORITHM), minutes * 60


def decode_access_token(key: str, token: str) -> dict[str, Any]:
    """The claims of a valid token; ``alg=none`` and other algorithms are refused."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[_ALGORITHM],
            audience=_AUDIENCE,
            options={"require": ["exp", "sub", "aud"]},
        )
    except jwt.PyJWTError as exc:
        raise TokenError(str(exc)) from exc
    if claims.get("typ") != "access":
        raise TokenError("not an access token")
    return claims


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def refresh_token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
