"""Who sees which consult, studies shared through a consult, reassignment, departments, patient consults."""

from __future__ import annotations

from teleconsult.audit import AuditLog
from tests.teleconsult.consults.conftest import DRAFT, Consulting, accepted, final


def test_another_township_sees_nothing_of_a_consult(consulting: Consulting) -> None:
    consult = final(consulting)
    cid = consult["id"]
    unknown = consulting.get("sono2", "/api/consults/0b5e8a56-0fd6-4b0e-9b8d-0a1b2c3d4e5f").json()["detail"]
    for user in ("sono2", "village"):
        assert consulting.get(user, "/api/consults").json() == []
        assert (
            consulting.get(user, "/api/consults", study_instance_uid=consult["study_instance_uid"]).json()
            == []
        )
        for method, path, body in [
            ("GET", f"/api/consults/{cid}", None),
            ("GET", f"/api/consults/{cid}/report", None),
            ("GET", f"/api/consults/{cid}/report/versions", None),
            ("GET", f"/api/consults/{cid}/report/verify", None),
            ("PUT", f"/api/consults/{cid}/report", DRAFT),
            ("POST", f"/api/consults/{cid}/report/sign", None),
            ("POST", f"/api/consults/{cid}/cancel", {"reason": "x"}),
            ("POST", f"/api/consults/{cid}/accept", None),
        ]:
            response = consulting.call(method, user, path, body)
            assert response.status_code == 404, (user, path, response.text)
            # the same words as for a consult that does not exist
            assert response.json()["detail"] == unknown.replace(
                "0b5e8a56-0fd6-4b0e-9b8d-0a1b2c3d4e5f", cid
            ).replace("sono2", user)
    denied = AuditLog(consulting.api.store.index.engine).query(outcome="denied", actor="sono2", limit=50)
    assert len([row for row in denied if row["study_instance_uid"] == consult["study_instance_uid"]]) == 8
    assert all(row["patient_id"] == "P0001" for row in denied if row["study_instance_uid"])


def test_a_consult_shares_its_study_with_a_specialist_outside_the_tree(consulting: Consulting) -> None:
    study = consulting.store_study()
    metadata = f"/dicomweb/studies/{study.StudyInstanceUID}/metadata"
    assert consulting.get("cityspec", metadata).status_code == 404

    consult = consulting.request("sono1", study, target_specialist="cityspec", urgency="stat")
    assert consult["target"] == {
        "kind": "specialist",
        "organisation": "CITY",
        "department": None,
        "specialist": "cityspec",
    }
    # the invited specialist sees the consult and reads the study through it
    assert consulting.get("cityspec", f"/api/consults/{consult['id']}").status_code == 200
    shared = consulting.get("cityspec", metadata)
    assert shared.status_code == 200, shared.text
    assert shared.json()[0]["0020000D"]["Value"] == [study.StudyInstanceUID]
    # but no other study of the township
    other = consulting.store_study()
    assert (
        consulting.get("cityspec", f"/dicomweb/studies/{other.StudyInstanceUID}/metadata").status_code == 404
    )

    declined = consulting.post(
        "cityspec", f"/api/consults/{consult['id']}/decline", {"reason": "不在专业范围"}
    )
    assert declined.json()["status"] == "declined"
    assert consulting.get("cityspec", metadata).status_code == 404


def test_reassignment_keeps_the_history_and_moves_access(consulting: Consulting) -> None:
    consult = accepted(consulting, target_specialist="specialist")
    cid = consult["id"]
    assert consulting.put("specialist", f"/api/consults/{cid}/report", DRAFT).status_code == 200
    no_reason = consulting.post(
        "specialist", f"/api/consults/{cid}/reassign", {"target_specialist": "cityspec"}
    )
    assert no_reason.status_code == 422
    moved = consulting.post(
        "specialist",
        f"/api/consults/{cid}/reassign",
        {"target_specialist": "cityspec", "reason": "出差，转交会诊"},
    )
    assert moved.status_code == 200, moved.text
    body = moved.json()
    assert (body["status"], body["assignee"], body["target"]["specialist"]) == ("requested", None, "cityspec")
    history = [
        (h["action"], h["to_status"], h["target"] and h["target"]["specialist"]) for h in body["history"]
    ]
    assert history == [
        ("requested", "requested", "specialist"),
        ("accepted", "accepted", None),
        ("review_started", "in_review", None),
        ("reassigned", "requested", "cityspec"),
    ]
    assert body["history"][-1]["reason"] == "出差，转交会诊"
    # cityspec takes over, continues the draft and signs after the township co-signs
    assert consulting.post("cityspec", f"/api/consults/{cid}/accept").json()["assignee"] == "cityspec"
    assert consulting.post("specialist", f"/api/consults/{cid}/review").status_code == 403
    path = f"/api/consults/{cid}/report"
    assert consulting.put("cityspec", path, {**DRAFT, "impression": "同意"}).json()["version"] == 2
    assert consulting.get("sono1", f"/api/consults/{cid}").json()["status"] == "in_review"
    assert consulting.post("sono1", f"{path}/sign").status_code == 200
    signed = consulting.post("cityspec", f"{path}/sign").json()
    assert signed["status"] == "final"
    assert {s["signer_organisation"] for s in signed["signatures"]} == {"TOWN01", "CITY"}
    assert [t for t, _ in consulting.events("consult.")] == [
        "consult.requested",
        "consult.accepted",
        "consult.reassigned",
        "consult.accepted",
    ]


def test_departments_address_consults_and_only_admins_staff_them(consulting: Consulting) -> None:
    member = "/api/departments/COUNTY/US/members/specialist2"
    assert consulting.put("specialist", member, {"lead": True}).status_code == 403
    assert consulting.put("admin", "/api/departments/CITY/US/members/cityspec", {}).status_code == 404
    assert consulting.put("admin", "/api/departments/COUNTY/US/members/cityspec", {}).status_code == 422
    response = consulting.put("admin", member, {"lead": True})
    assert response.status_code == 200, response.text
    assert consulting.get("sono1", "/api/departments", organisation="COUNTY").json() == [
        {"organisation": "COUNTY", "department": "US", "username": "specialist2", "lead": True}
    ]

    consult = consulting.request(target_department="US")
    assert consult["target"]["kind"] == "department"
    cid = consult["id"]
    # a county specialist outside the department sees it (tree) but may not take it
    assert consulting.post("specialist", f"/api/consults/{cid}/accept").status_code == 403
    assert consulting.post("specialist2", f"/api/consults/{cid}/accept").json()["assignee"] == "specialist2"

    assert consulting.call("DELETE", "admin", member).status_code == 204
    assert consulting.call("DELETE", "admin", member).status_code == 404
    assert consulting.get("sono1", "/api/departments").json() == []


def test_a_consult_on_a_patient_before_the_study_arrives(consulting: Consulting) -> None:
    consult = consulting.request(patient_id="P0001", urgency="critical", question="胸痛2小时，心电图待传")
    cid = consult["id"]
    assert (consult["study_instance_uid"], consult["issuer_of_patient_id"]) == (None, "TOWN01")
    assert consult["study"] is None

    other_patient = consulting.store_study(patient_id="P0002")
    mismatch = consulting.put(
        "sono1", f"/api/consults/{cid}/study", {"study_instance_uid": other_patient.StudyInstanceUID}
    )
    assert mismatch.status_code == 422
    assert "another patient" in mismatch.json()["detail"]
    hidden = consulting.store_study("TOWN02")
    assert (
        consulting.put(
            "sono1", f"/api/consults/{cid}/study", {"study_instance_uid": hidden.StudyInstanceUID}
        ).status_code
        == 404
    )

    study = consulting.store_study(patient_id="P0001")
    assert (
        consulting.put(
            "specialist", f"/api/consults/{cid}/study", {"study_instance_uid": study.StudyInstanceUID}
        ).status_code
        == 403
    )
    linked = consulting.put(
        "sono1", f"/api/consults/{cid}/study", {"study_instance_uid": study.StudyInstanceUID}
    )
    assert linked.status_code == 200, linked.text
    assert linked.json()["study_instance_uid"] == study.StudyInstanceUID
    assert linked.json()["history"][-1]["action"] == "study_attached"
    again = consulting.put(
        "sono1", f"/api/consults/{cid}/study", {"study_instance_uid": study.StudyInstanceUID}
    )
    assert again.status_code == 409
    listed = consulting.get("specialist", "/api/consults", study_instance_uid=study.StudyInstanceUID).json()
    assert [c["id"] for c in listed] == [cid]
