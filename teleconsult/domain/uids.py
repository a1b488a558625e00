"""UIDs: checking the ones we receive and making the ones we create.

A UID arriving from the network ends up in SQL rows, log lines and URLs, so
it is checked against PS3.5 9.1 before anything else looks at it: digits and
dots only, no leading zero in a component, at most 64 characters.
"""

from __future__ import annotations

import re
import uuid

from teleconsult.errors import InvalidUIDError

__all__ = ["check_uid", "generate_uid", "is_valid_uid"]

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")


def is_valid_uid(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


def check_uid(value: object, name: str) -> str:
    """Return ``value`` if it is a valid UID, else raise naming the attribute.

    Trailing NUL padding (allowed on the wire for odd lengths) is removed first.
    """
    if isinstance(value, str):
        value = value.rstrip("\x00").strip()
    if not value:
        raise InvalidUIDError(f"{name} is missing", comment=f"{name} is missing")
    if not is_valid_uid(value):
        shown = repr(value)[:40]
        raise InvalidUIDError(f"{name} {shown} is not a valid UID", comment=f"{name} is not a valid UID")
    assert isinstance(value, str)
    return value


def generate_uid(root: str | None = None) -> str:
    """A new UID under ``root``, or a UUID-derived ``2.25.`` UID without one."""
    if root is None:
        return f"2.25.{uuid.uuid4().int}"
    suffix = str(uuid.uuid4().int)
    return f"{root}.{suffix}"[:64].rstrip(".")
