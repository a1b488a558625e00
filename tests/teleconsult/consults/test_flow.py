"""The whole consult through the API: township requests, county specialist accepts, drafts, co-signs."""

from __future__ import annotations

from datetime import timedelta

from teleconsult.audit import AuditLog
from tests.teleconsult.consults.conftest import DRAFT, START, Consulting, accepted


def test_township_requests_specialist_reports_both_sign(consulting: Consulting) -> None:
    study = consulting.store_study()
    consult = consulting.request("sono1", study, urgency="urgent")
    cid = consult["id"]
    assert consult["status"] == "requested"
    assert consult["target"] == {
        "kind": "pool",
        "organisation": "COUNTY",
        "department": None,
        "specialist": None,
    }
    assert consult["due_at"].startswith((START + timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M"))
    assert consult["study"]["patient_name"] == "Wang^XiaoMing=王^小明"
    assert consult["source_organisation"] == "TOWN01"

    # the county pool sees it; another township does not
    listed = consulting.get("specialist", "/api/consults", status="requested").json()
    assert [c["id"] for c in listed] == [cid]
    assert consulting.get("sono2", "/api/consults").json() == []
    assert consulting.get("sono2", f"/api/consults/{cid}").status_code == 404

    accepted_ = consulting.post("specialist", f"/api/consults/{cid}/accept").json()
    assert (accepted_["status"], accepted_["assignee"]) == ("accepted", "specialist")

    # the township doctor writes the preliminary report and signs it as performing physician
    report_path = f"/api/consults/{cid}/report"
    draft = consulting.put("doctor1", report_path, DRAFT)
    assert draft.status_code == 200, draft.text
    assert (draft.json()["version"], draft.json()["status"]) == (1, "draft")
    signed = consulting.post("doctor1", f"{report_path}/sign")
    assert signed.status_code == 200, signed.text
    assert signed.json()["status"] == "preliminary"

    # the specialist edits (a new version, the consult goes into review) and signs: final
    edited = {**DRAFT, "impression": "肝右叶低回声结节，考虑血管瘤可能，建议增强CT。"}
    response = consulting.put("specialist", report_path, edited)
    assert response.json()["version"] == 2
    assert consulting.get("specialist", f"/api/consults/{cid}").json()["status"] == "in_review"
    response = consulting.post("specialist", f"{report_path}/sign")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["status"] == "final"
    assert report["consult_status"] == "signed"
    assert report["final_version"] == 2
    assert report["performing_signature_on_final"] is False
    assert [(s["role"], s["signer"], s["version"]) for s in report["signatures"]] == [
        ("performing", "doctor1", 1),
        ("reviewing", "specialist", 2),
    ]
    reviewing = report["signatures"][1]
    assert reviewing["refers_to_version"] == 1
    assert reviewing["algorithm"] == "Ed25519"
    assert reviewing["key_fingerprint"].startswith("sha256:")

    verification = consulting.get("sono1", f"{report_path}/verify").json()
    assert verification["valid"] is True
    assert verification["final"] is True
    assert verification["canonicalisation"] == "RFC 8785"
    assert [s["valid"] for s in verification["signatures"]] == [True, True]

    # the township confirms receipt
    delivered = consulting.post("sono1", f"/api/consults/{cid}/acknowledge").json()
    assert delivered["status"] == "delivered"
    steps = [(h["action"], h["from_status"], h["to_status"]) for h in delivered["history"]]
    assert steps == [
        ("requested", None, "requested"),
        ("accepted", "requested", "accepted"),
        ("review_started", "accepted", "in_review"),
        ("reported", "in_review", "reported"),
        ("signed", "reported", "signed"),
        ("delivered", "signed", "delivered"),
    ]

    assert [t for t, _ in consulting.events()] == [
        "consult.requested",
        "consult.accepted",
        "report.performing_signed",
        "report.signed",
        "consult.delivered",
    ]
    for _type, data in consulting.events():
        assert data["consult_id"] == cid
        assert data["study_instance_uid"] == study.StudyInstanceUID
    signed_event = consulting.events("report.signed")[0][1]
    assert (signed_event["version"], signed_event["final"], signed_event["kind"]) == (2, True, "report")

    # every step is in the audit trail, with the study and patient
    rows = AuditLog(consulting.api.store.index.engine).query(
        study_instance_uid=study.StudyInstanceUID, limit=100
    )
    actions = {(row["action"], row["actor"], row["outcome"]) for row in rows}
    assert {
        ("consult.create", "sono1", "success"),
        ("consult.update", "specialist", "success"),
        ("report.update", "doctor1", "success"),
        ("report.sign", "doctor1", "success"),
        ("report.sign", "specialist", "success"),
        ("report.verify", "sono1", "success"),
    } <= actions
    assert all(row["patient_id"] == "P0001" for row in rows)


def test_specialist_drafts_submits_and_waits_for_the_performing_signature(consulting: Consulting) -> None:
    consult = accepted(consulting)
    cid = consult["id"]
    path = f"/api/consults/{cid}/report"
    assert consulting.put("specialist", path, DRAFT).status_code == 200
    submitted = consulting.post("specialist", f"{path}/submit")
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["consult_status"] == "reported"

    early = consulting.post("specialist", f"{path}/sign")
    assert early.status_code == 409
    assert "performing signature" in early.json()["detail"]

    assert consulting.post("doctor1", f"{path}/sign").status_code == 200
    report = consulting.post("specialist", f"{path}/sign").json()
    assert report["status"] == "final"
    assert report["performing_signature_on_final"] is True
    assert [(s["role"], s["version"]) for s in report["signatures"]] == [("performing", 1), ("reviewing", 1)]
    assert consulting.get("doctor1", f"{path}/verify").json()["valid"] is True


def test_an_unchanged_save_adds_no_version_and_base_version_guards_lost_updates(
    consulting: Consulting,
) -> None:
    consult = accepted(consulting)
    path = f"/api/consults/{consult['id']}/report"
    assert consulting.put("specialist", path, DRAFT).json()["version"] == 1
    assert consulting.put("specialist", path, DRAFT).json()["version"] == 1
    stale = consulting.put("specialist", path, {**DRAFT, "impression": "x", "base_version": 0})
    assert stale.status_code == 409
    assert "newest version" in stale.json()["detail"]
    assert (
        consulting.put("specialist", path, {**DRAFT, "impression": "x", "base_version": 1}).json()["version"]
        == 2
    )
    versions = consulting.get("sono1", f"{path}/versions").json()
    assert [(v["version"], v["content"]["impression"]) for v in versions] == [
        (1, DRAFT["impression"]),
        (2, "x"),
    ]
    assert consulting.get("sono1", f"{path}/versions/2").json()["author"] == "specialist"
    assert consulting.get("sono1", f"{path}/versions/3").status_code == 404


def test_templates_are_served_with_both_languages(consulting: Consulting) -> None:
    templates = consulting.get("sono1", "/api/report-templates").json()
    assert [t["code"] for t in templates] == [
        "abdominal_ultrasound",
        "obstetric_ultrasound",
        "echocardiography",
        "chest_dr",
        "ecg_12_lead",
    ]
    abdominal = consulting.get("sono1", "/api/report-templates/abdominal_ultrasound").json()
    assert abdominal["label"] == {"zh-CN": "腹部超声检查报告", "en": "Abdominal ultrasound report"}
    liver = abdominal["sections"][0]
    assert liver["label"] == {"zh-CN": "肝脏", "en": "Liver"}
    assert liver["fields"][1]["unit"] == "mm"
    assert consulting.get("sono1", "/api/report-templates/brain_mri").status_code == 404
