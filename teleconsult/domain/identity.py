"""Organisations, users, roles, and who may see which studies.

A county medical community is a tree: the county hospital at the top,
township health centres under it, village clinics under those. A user sees
the studies of their own organisation and of every organisation below it;
studies shared through a consult are added to that scope by the consult
service. Scope is a set of organisation codes, because that is what every
study carries (its source organisation).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "Organisation",
    "Principal",
    "Role",
    "User",
    "check_organisation_code",
    "check_username",
    "descendants",
]

_CODE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,31}$")
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{1,63}$")


class Role(StrEnum):
    SONOGRAPHER = "sonographer"
    TOWNSHIP_DOCTOR = "township_doctor"
    SPECIALIST = "specialist"
    ADMIN = "admin"


def check_organisation_code(code: str) -> str:
    if not _CODE.match(code):
        raise ValueError(
            f"organisation code {code!r} must be 1-32 upper-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return code


def check_username(username: str) -> str:
    if not _USERNAME.match(username):
        raise ValueError(
            f"username {username!r} must be 2-64 letters, digits or . _ @ -, starting with a letter or digit"
        )
    return username


@dataclass(frozen=True, slots=True)
class Organisation:
    code: str
    name: str
    parent_code: str | None = None


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: Role
    organisation: str
    display_name: str = ""
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller and the organisations whose studies it may see."""

    username: str
    role: Role
    organisation: str
    visible_organisations: frozenset[str] = field(default_factory=frozenset)

    def can_see(self, organisation: str) -> bool:
        return organisation in self.visible_organisations

    @property
    def scope(self) -> tuple[str, ...]:
        return tuple(sorted(self.visible_organisations))


def descendants(code: str, parents: Mapping[str, str | None] | Iterable[Organisation]) -> frozenset[str]:
    """``code`` and every organisation below it in the tree."""
    if not isinstance(parents, Mapping):
        parents = {org.code: org.parent_code for org in parents}
    children: dict[str, list[str]] = {}
    for child, parent in parents.items():
        if parent is not None:
            children.setdefault(parent, []).append(child)
    seen = {code}
    stack = [code]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return frozenset(seen)
