"""Refused referrals: who may not, where a referral may not go, and moves its state forbids.

Every refusal is a problem+json answer that changes nothing: no row, no
history step, no event.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from teleconsult.api.routes.referrals import referral_service
from teleconsult.audit import AuditLog
from teleconsult.domain.referrals import ReferralStateError
from teleconsult.storage.identity import IdentityStore
from tests.teleconsult.consults.conftest import Consulting
from tests.teleconsult.referrals.conftest import accepted, problem, refer

UNKNOWN = "0b5e8a56-0fd6-4b0e-9b8d-0a1b2c3d4e5f"


def _snapshot(c: Consulting, rid: str) -> tuple[Any, ...]:
    referral = c.get("specialist", f"/api/referrals/{rid}").json()
    return referral["status"], referral["status_note"], referral["updated_at"], len(referral["history"])


def test_only_specialists_and_admins_issue_referrals(referring: Consulting) -> None:
    c = referring
    consult = accepted(c)
    cid = consult["id"]
    for user in ("sono1", "doctor1"):
        response = c.post(user, f"/api/consults/{cid}/referrals", {"direction": "up", "reason": "转上级"})
        assert "referrals are issued by specialists" in problem(response, 403, "forbidden")["detail"]
    assert c.get("sono1", f"/api/consults/{cid}/referrals").json() == []
    assert c.events("referral.") == []
    denied = AuditLog(c.api.store.index.engine).query(outcome="denied", actor="sono1")
    assert any(
        row["action"] == "referral.create" and row["study_instance_uid"] == consult["study_instance_uid"]
        for row in denied
    )


def test_another_township_sees_nothing_and_learns_nothing(referring: Consulting) -> None:
    c = referring
    consult = accepted(c)
    cid = consult["id"]
    rid = refer(c, cid)["id"]
    unknown_referral = c.get("sono2", f"/api/referrals/{UNKNOWN}").json()["detail"]
    unknown_consult = c.get("sono2", f"/api/consults/{UNKNOWN}/referrals").json()["detail"]
    for user in ("sono2", "village", "cityspec"):
        assert c.get(user, "/api/referrals").json() == []
        for method, path, body, unknown in [
            ("GET", f"/api/referrals/{rid}", None, unknown_referral),
            ("POST", f"/api/referrals/{rid}/accept", None, unknown_referral),
            ("POST", f"/api/referrals/{rid}/decline", {"reason": "x"}, unknown_referral),
            ("POST", f"/api/referrals/{rid}/complete", {"note": "x"}, unknown_referral),
            ("POST", f"/api/referrals/{rid}/cancel", {"reason": "x"}, unknown_referral),
            ("GET", f"/api/consults/{cid}/referrals", None, unknown_consult),
            ("POST", f"/api/consults/{cid}/referrals", {"direction": "up", "reason": "x"}, unknown_consult),
        ]:
            response = c.call(method, user, path, body)
            # the same words as for a referral (or consult) that does not exist
            detail = problem(response, 404, "not-found")["detail"]
            assert detail == unknown.replace(UNKNOWN, rid if "/api/referrals/" in path else cid).replace(
                "sono2", user
            )
    assert _snapshot(c, rid)[0] == "issued"
    denied = AuditLog(c.api.store.index.engine).query(outcome="denied", actor="sono2", limit=50)
    mine = [row for row in denied if row["study_instance_uid"] == consult["study_instance_uid"]]
    assert len(mine) == 7
    assert {row["action"] for row in mine} == {
        "referral.read",
        "referral.update",
        "referral.search",
        "referral.create",
    }
    assert all(row["patient_id"] == "P0001" for row in mine)
    for bad in ("not-a-uuid", "1", UNKNOWN):
        problem(c.get("specialist", f"/api/referrals/{bad}"), 404, "not-found")
        problem(c.post("specialist", f"/api/referrals/{bad}/accept"), 404, "not-found")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"direction": "up", "target_organisation": "TOWN02"}, "above the patient's (TOWN01: COUNTY)"),
        ({"direction": "up", "target_organisation": "TOWN01"}, "TOWN01 is not one of them"),
        ({"direction": "up", "target_organisation": "CITY"}, "CITY is not one of them"),
        ({"direction": "up", "target_organisation": "NOWHERE"}, "NOWHERE does not exist"),
        ({"direction": "down", "target_organisation": "TOWN02"}, "requested the consult (TOWN01)"),
        ({"direction": "down", "target_organisation": "COUNTY"}, "requested the consult (TOWN01)"),
        ({"direction": "down", "green_channel": True}, "green channel is for up referrals"),
        ({"direction": "up", "target_specialist": "doctor1"}, "TOWN01 is not one of them"),
        ({"direction": "up", "target_specialist": "cityspec"}, "CITY is not one of them"),
        ({"direction": "up", "target_specialist": "admin"}, "not an active clinician"),
        ({"direction": "up", "target_specialist": "nobody"}, "not an active clinician"),
        (
            {"direction": "down", "target_specialist": "doctor1", "target_organisation": "TOWN02"},
            "not TOWN02",
        ),
        ({"direction": "up", "target_department": "NEURO"}, "NEURO of COUNTY has no members"),
        ({"direction": "up", "reason": " \n "}, "reason for the referral is required"),
    ],
)
def test_targets_the_tree_does_not_allow_are_refused(
    referring: Consulting, body: dict[str, Any], words: str
) -> None:
    c = referring
    cid = accepted(c)["id"]
    response = c.post("specialist", f"/api/consults/{cid}/referrals", {"reason": "转诊", **body})
    assert words in problem(response, 422, "invalid-referral")["detail"]
    assert c.get("specialist", f"/api/consults/{cid}/referrals").json() == []
    assert c.events("referral.") == []


def test_invalid_fields_are_named(referring: Consulting) -> None:
    c = referring
    cid = accepted(c)["id"]
    path = f"/api/consults/{cid}/referrals"
    for body, field in [
        ({"reason": "x"}, "body.direction"),
        ({"direction": "sideways", "reason": "x"}, "body.direction"),
        ({"direction": "up"}, "body.reason"),
        ({"direction": "up", "reason": "x\x00"}, "body.reason"),
        ({"direction": "up", "reason": "x", "green_channel": "maybe"}, "body.green_channel"),
        ({"direction": "up", "reason": "x", "target_organisation": "../x"}, "body.target_organisation"),
        ({"direction": "up", "reason": "x", "priority": 1}, "body.priority"),
    ]:
        body_problem = problem(c.post("specialist", path, body), 422, "validation")
        assert field in {error["field"] for error in body_problem["errors"]}, body
    assert c.get("specialist", path).json() == []


def test_a_consult_nobody_took_or_that_was_closed_refers_nobody(referring: Consulting) -> None:
    c = referring
    waiting = c.request()
    response = c.post(
        "specialist", f"/api/consults/{waiting['id']}/referrals", {"direction": "up", "reason": "x"}
    )
    assert "is requested" in problem(response, 409, "consult-state")["detail"]
    declined = accepted(c)
    assert (
        c.post(
            "specialist", f"/api/consults/{declined['id']}/decline", {"reason": "不在专业范围"}
        ).status_code
        == 200
    )
    response = c.post(
        "specialist", f"/api/consults/{declined['id']}/referrals", {"direction": "up", "reason": "x"}
    )
    problem(response, 409, "consult-state")
    assert c.events("referral.") == []


def test_a_second_open_referral_to_the_same_place_is_refused(referring: Consulting) -> None:
    c = referring
    cid = accepted(c)["id"]
    first = refer(c, cid)
    again = c.post("specialist", f"/api/consults/{cid}/referrals", {"direction": "up", "reason": "再次"})
    assert first["id"] in problem(again, 409, "referral-state")["detail"]
    # once it is closed, a new one may go
    c.post("specialist", f"/api/referrals/{first['id']}/cancel", {"reason": "重新开具"})
    assert refer(c, cid)["id"] != first["id"]


def test_moves_the_state_forbids_change_nothing(referring: Consulting) -> None:
    c = referring
    cid = accepted(c)["id"]
    rid = refer(c, cid)["id"]
    path = f"/api/referrals/{rid}"

    before = _snapshot(c, rid)
    early = problem(c.post("specialist2", f"{path}/complete", {"note": "已就诊"}), 409, "referral-state")
    assert early["detail"] == f"referral {rid} is issued; it can be completed only when accepted"
    assert _snapshot(c, rid) == before

    assert c.post("specialist2", f"{path}/accept").status_code == 200
    before = _snapshot(c, rid)
    twice = problem(c.post("specialist2", f"{path}/accept"), 409, "referral-state")
    assert "is accepted; it can be accepted only when issued" in twice["detail"]
    problem(c.post("specialist2", f"{path}/decline", {"reason": "床位已满"}), 409, "referral-state")
    assert _snapshot(c, rid) == before

    assert c.post("specialist2", f"{path}/complete", {"note": "已就诊"}).status_code == 200
    before = _snapshot(c, rid)
    for action, body in [
        ("cancel", {"reason": "x"}),
        ("accept", None),
        ("decline", {"reason": "x"}),
        ("complete", {"note": "x"}),
    ]:
        problem(
            c.post("specialist" if action == "cancel" else "specialist2", f"{path}/{action}", body),
            409,
            "referral-state",
        )
    assert _snapshot(c, rid) == before
    assert [t for t, _ in c.events("referral.")] == [
        "referral.issued",
        "referral.accepted",
        "referral.completed",
    ]
    failures = AuditLog(c.api.store.index.engine).query(outcome="failure", actor="specialist2")
    assert any(row["action"] == "referral.update" and "can be" in row["detail"] for row in failures)


def test_each_side_acts_only_as_itself(referring: Consulting) -> None:
    c = referring
    cid = accepted(c)["id"]
    up = refer(c, cid)
    path = f"/api/referrals/{up['id']}"
    # the township sees the referral of its patient, but it is the county's to accept
    accept = problem(c.post("doctor1", f"{path}/accept"), 403, "forbidden")
    assert "addressed to COUNTY" in accept["detail"]
    problem(c.post("doctor1", f"{path}/decline", {"reason": "x"}), 403, "forbidden")
    # a colleague of the issuer is not the issuer: the target side declines instead
    cancel = problem(c.post("specialist2", f"{path}/cancel", {"reason": "x"}), 403, "forbidden")
    assert "issuer (specialist)" in cancel["detail"]
    problem(c.post("doctor1", f"{path}/cancel", {"reason": "x"}), 403, "forbidden")
    # an admin of the issuing side may cancel for the issuer
    assert c.post("admin", f"{path}/cancel", {"reason": "患者拒绝转诊"}).json()["status"] == "cancelled"

    named = refer(c, cid, target_specialist="specialist2")
    path = f"/api/referrals/{named['id']}"
    assert (
        "addressed to specialist2"
        in problem(c.post("specialist", f"{path}/accept"), 403, "forbidden")["detail"]
    )
    declined = c.post("specialist2", f"{path}/decline", {"reason": "本院无导管室"})
    assert (declined.json()["status"], declined.json()["status_note"]) == ("declined", "本院无导管室")

    down = refer(c, cid, direction="down")
    path = f"/api/referrals/{down['id']}"
    problem(c.post("sono2", f"{path}/accept"), 404, "not-found")
    blank = problem(c.post("doctor1", f"{path}/decline", {"reason": "   "}), 422, "invalid-referral")
    assert "reason to decline is required" in blank["detail"]
    assert _snapshot(c, down["id"])[0] == "issued"
    denied = AuditLog(c.api.store.index.engine).query(outcome="denied", actor="doctor1")
    assert len([row for row in denied if row["action"] == "referral.update"]) == 3


def test_two_accepting_at_once_one_wins(referring: Consulting) -> None:
    c = referring
    rid = refer(c, accepted(c)["id"])["id"]
    service = referral_service(c.api.client.app)  # type: ignore[attr-defined]
    identity = IdentityStore(c.api.store.index.engine)
    principals = [identity.principal(user) for user in ("specialist2", "admin")]
    barrier = threading.Barrier(len(principals))
    outcomes: list[str] = []

    def accept(principal: Any) -> None:
        barrier.wait()
        try:
            outcomes.append(service.accept(principal, rid, f"由{principal.username}接收").status_note or "")
        except ReferralStateError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=accept, args=(p,)) for p in principals]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(outcomes) == 2
    assert outcomes.count("referral-state") == 1
    (winner,) = [outcome for outcome in outcomes if outcome != "referral-state"]
    referral = c.get("specialist", f"/api/referrals/{rid}").json()
    assert [step["action"] for step in referral["history"]] == ["issued", "accepted"]
    assert referral["status_note"] == winner
    assert referral["history"][1]["note"] == winner
    assert [t for t, _ in c.events("referral.")] == ["referral.issued", "referral.accepted"]
