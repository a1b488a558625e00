"""Departments of an organisation: who may take a department's consults, and who leads it.

A department is named by a short code within its organisation (``US``,
``CARDIO``, ``RADIOLOGY`` ...) and exists while it has members. Its leads
receive the escalation of its overdue consults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DepartmentMember", "check_department_code"]

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_department_code(code: str) -> str:
    if not _CODE.match(code):
        raise ValueError(
            f"department code {code[:70]!r} must be 1-64 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return code


@dataclass(frozen=True, slots=True)
class DepartmentMember:
    organisation: str
    department: str
    username: str
    lead: bool = False
