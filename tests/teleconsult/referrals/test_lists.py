"""Lists of referrals: filters, paging, the green channel first, and the same view as single reads."""

from __future__ import annotations

from typing import Any

import pytest

from teleconsult.storage.identity import IdentityStore
from tests.conftest import PASSWORD
from tests.teleconsult.consults.conftest import Consulting
from tests.teleconsult.referrals.conftest import accepted, refer


@pytest.fixture
def five(referring: Consulting) -> dict[str, str]:
    """Five referrals issued a minute apart by ``specialist``; D is completed, E declined.

    A up, B up green, C down, D up green (completed), E up (declined).
    """
    c = referring
    made: dict[str, str] = {}
    for name, urgency, body in [
        ("A", "routine", {}),
        ("B", "critical", {}),
        ("C", "routine", {"direction": "down"}),
        ("D", "urgent", {"green_channel": True}),
        ("E", "routine", {}),
    ]:
        c.clock.advance(minutes=1)
        made[name] = refer(c, accepted(c, urgency=urgency)["id"], **body)["id"]
    assert c.post("specialist2", f"/api/referrals/{made['D']}/accept").status_code == 200
    assert (
        c.post("specialist2", f"/api/referrals/{made['D']}/complete", {"note": "已就诊"}).status_code == 200
    )
    assert (
        c.post("specialist2", f"/api/referrals/{made['E']}/decline", {"reason": "床位已满"}).status_code
        == 200
    )
    return made


def _names(c: Consulting, made: dict[str, str], user: str = "specialist", **params: Any) -> list[str]:
    response = c.get(user, "/api/referrals", **params)
    assert response.status_code == 200, response.text
    by_id = {rid: name for name, rid in made.items()}
    return [by_id[r["id"]] for r in response.json()]


def test_green_channel_first_then_open_oldest_first_then_closed(
    referring: Consulting, five: dict[str, str]
) -> None:
    assert _names(referring, five) == ["B", "D", "A", "C", "E"]


def test_filters_and_paging(referring: Consulting, five: dict[str, str]) -> None:
    c = referring
    assert _names(c, five, status="issued") == ["B", "A", "C"]
    assert _names(c, five, status=["completed", "declined"]) == ["D", "E"]
    assert _names(c, five, direction="down") == ["C"]
    assert _names(c, five, direction="up", status="issued") == ["B", "A"]
    assert _names(c, five, green_channel="true") == ["B", "D"]
    assert _names(c, five, green_channel="false") == ["A", "C", "E"]
    assert _names(c, five, side="outgoing") == ["B", "D", "A", "C", "E"]
    assert _names(c, five, side="incoming") == ["B", "D", "A", "E"]  # C goes down to TOWN01
    assert _names(c, five, "doctor1", side="incoming") == ["C"]
    assert _names(c, five, "doctor1", side="outgoing") == []
    assert _names(c, five, "doctor1") == ["B", "D", "A", "C", "E"]  # all about TOWN01's patients
    assert _names(c, five, limit=2) == ["B", "D"]
    assert _names(c, five, limit=2, offset=2) == ["A", "C"]
    assert _names(c, five, offset=5) == []
    for params in ({"status": "lost"}, {"direction": "left"}, {"side": "both"}, {"limit": 0}, {"offset": -1}):
        response = c.get("specialist", "/api/referrals", **params)
        assert response.status_code == 422, params
        assert response.json()["code"] == "validation"


def test_lists_carry_the_history(referring: Consulting, five: dict[str, str]) -> None:
    listed = referring.get("specialist", "/api/referrals", status="completed").json()
    assert [[step["action"] for step in r["history"]] for r in listed] == [
        ["issued", "accepted", "completed"]
    ]


def test_a_list_shows_what_single_reads_show(referring: Consulting) -> None:
    """The SQL of lists and the rule of single reads agree, user by user, over every way of seeing."""
    c = referring
    identity = IdentityStore(c.api.store.index.engine)
    identity.add_user("cityadmin", PASSWORD, "admin", "CITY")
    made = []
    # TOWN01's patient, up and down, by the county
    consult = accepted(c, urgency="critical")
    made.append(refer(c, consult["id"])["id"])
    made.append(refer(c, consult["id"], direction="down")["id"])
    # a TOWN02 consult sent down to its village: the village sees it only as the target
    town02 = accepted(c, user="sono2", study=c.store_study("TOWN02", patient_id="T2"))
    made.append(refer(c, town02["id"], direction="down", target_organisation="VILLAGE21")["id"])
    # a consult asked of the city: the city's admin sees its specialist's referral only as issuing side
    city = c.request("sono1", target_specialist="cityspec")
    assert c.post("cityspec", f"/api/consults/{city['id']}/accept").status_code == 200
    made.append(refer(c, city["id"], "cityspec")["id"])

    users = ["specialist", "specialist2", "admin", "sono1", "doctor1", "sono2", "doctor2", "village"]
    users += ["cityspec", "cityadmin"]
    seen: dict[str, set[str]] = {}
    for user in users:
        listed = {r["id"] for r in c.get(user, "/api/referrals").json()}
        readable = {rid for rid in made if c.get(user, f"/api/referrals/{rid}").status_code == 200}
        assert listed == readable, user
        seen[user] = listed
    assert seen["village"] == {made[2]}
    assert seen["cityadmin"] == {made[3]}
    assert seen["cityspec"] == {made[3]}
    assert seen["sono2"] == {made[2]}
    assert seen["doctor1"] == {made[0], made[1], made[3]}
    assert seen["admin"] == set(made)
