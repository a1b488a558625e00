"""The consult tests' community and clock, plus what referrals need on top.

COUNTY > TOWN01, TOWN02 > VILLAGE21, and CITY apart. ``specialist`` (COUNTY)
accepts consults and issues referrals; ``specialist2`` (COUNTY, member of
department CARDIO) receives them at the county; ``doctor1`` (TOWN01) and
``village`` (VILLAGE21) receive the down referrals; ``doctor2`` is a second
township doctor of TOWN02.
"""

from __future__ import annotations

from typing import Any

import pytest

from teleconsult.storage.identity import IdentityStore
from tests.conftest import PASSWORD
from tests.teleconsult.consults import conftest as consults_conftest
from tests.teleconsult.consults.conftest import Consulting, accepted

# The consults fixtures, used here as they are.
_cheap_password_hashing = consults_conftest._cheap_password_hashing
app_settings = consults_conftest.app_settings
clock = consults_conftest.clock
consulting = consults_conftest.consulting

__all__ = ["Consulting", "accepted", "problem", "refer"]

PROBLEM = "application/problem+json"


@pytest.fixture
def referring(consulting: Consulting) -> Consulting:
    """``consulting`` with ``doctor2`` (TOWN02) and county department CARDIO (``specialist2``)."""
    IdentityStore(consulting.api.store.index.engine).add_user(
        "doctor2", PASSWORD, "township_doctor", "TOWN02"
    )
    member = consulting.call(
        "PUT", "admin", "/api/departments/COUNTY/CARDIO/members/specialist2", {"lead": False}
    )
    assert member.status_code in (200, 201), member.text
    return consulting


def refer(c: Consulting, consult_id: str, user: str = "specialist", **body: Any) -> dict[str, Any]:
    """A new referral (201) of the consult, issued by ``user``."""
    body.setdefault("direction", "up")
    body.setdefault("reason", "需上级医院进一步诊治。")
    response = c.post(user, f"/api/consults/{consult_id}/referrals", body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """The problem+json body of a refused request, checked."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["detail"]
    return body
