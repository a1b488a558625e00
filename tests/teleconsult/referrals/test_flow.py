"""Referrals through the API: up by the green channel to the county, back down for follow-up."""

from __future__ import annotations

from datetime import datetime, timedelta

from teleconsult.audit import AuditLog
from tests.teleconsult.consults.conftest import START, Consulting
from tests.teleconsult.referrals.conftest import accepted, problem, refer

KEYS = {"consult_id", "referral_id", "study_instance_uid", "target_organisation", "green_channel"}


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_critical_patient_goes_up_by_the_green_channel_and_comes_back_down(referring: Consulting) -> None:
    c = referring
    study = c.store_study()
    consult = accepted(c, study=study, urgency="critical")
    cid = consult["id"]

    # the specialist refers the patient up: a critical consult takes the green channel by default
    c.clock.advance(minutes=5)
    up = refer(
        c,
        cid,
        reason="急性心肌梗死（下壁STEMI），需急诊PCI。",
        clinical_summary="胸痛2小时，II、III、aVF导联ST段抬高。\n血压 90/60 mmHg。",
        target_department="CARDIO",
    )
    rid = up["id"]
    assert (up["direction"], up["green_channel"], up["status"]) == ("up", True, "issued")
    assert up["target"] == {"organisation": "COUNTY", "department": "CARDIO", "specialist": None}
    assert (up["issued_by"], up["issuing_organisation"]) == ("specialist", "COUNTY")
    assert (up["patient_organisation"], up["patient_id"], up["urgency"]) == ("TOWN01", "P0001", "critical")
    assert up["study_instance_uid"] == study.StudyInstanceUID
    assert up["clinical_summary"].endswith("血压 90/60 mmHg。")
    assert _at(up["issued_at"]) == START + timedelta(minutes=5)

    # the county sees it as incoming, the township through its consult
    incoming = c.get("specialist2", "/api/referrals", side="incoming", status="issued").json()
    assert [r["id"] for r in incoming] == [rid]
    assert [r["id"] for r in c.get("sono1", f"/api/consults/{cid}/referrals").json()] == [rid]
    assert c.get("sono1", f"/api/referrals/{rid}").json()["green_channel"] is True

    # a county colleague receives the patient, then records the outcome
    c.clock.advance(minutes=2)
    taken = c.post("specialist2", f"/api/referrals/{rid}/accept", {"note": "已通知导管室"})
    assert taken.status_code == 200, taken.text
    assert (taken.json()["status"], taken.json()["status_note"]) == ("accepted", "已通知导管室")
    c.clock.advance(hours=3)
    done = c.post("specialist2", f"/api/referrals/{rid}/complete", {"note": "急诊PCI成功，转入CCU。"})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"
    steps = [
        (s["action"], s["from_status"], s["to_status"], s["actor"], s["actor_organisation"], s["note"])
        for s in done.json()["history"]
    ]
    assert steps == [
        ("issued", None, "issued", "specialist", "COUNTY", "急性心肌梗死（下壁STEMI），需急诊PCI。"),
        ("accepted", "issued", "accepted", "specialist2", "COUNTY", "已通知导管室"),
        ("completed", "accepted", "completed", "specialist2", "COUNTY", "急诊PCI成功，转入CCU。"),
    ]
    assert [_at(s["time"]) - START for s in done.json()["history"]] == [
        timedelta(minutes=5),
        timedelta(minutes=7),
        timedelta(hours=3, minutes=7),
    ]

    # stable again: back down to the township that asked, for follow-up
    down = refer(
        c, cid, direction="down", reason="病情稳定，转回乡镇卫生院随访。", instructions="三个月后复查心电图。"
    )
    did = down["id"]
    assert (down["direction"], down["green_channel"], down["target"]["organisation"]) == (
        "down",
        False,
        "TOWN01",
    )
    assert [r["id"] for r in c.get("doctor1", "/api/referrals", side="incoming").json()] == [did]
    assert c.post("doctor1", f"/api/referrals/{did}/accept").json()["status"] == "accepted"
    followed = c.post("doctor1", f"/api/referrals/{did}/complete", {"note": "已随访，患者无不适。"}).json()
    assert followed["status"] == "completed"
    assert [(s["actor"], s["actor_organisation"]) for s in followed["history"]][1:] == [
        ("doctor1", "TOWN01"),
        ("doctor1", "TOWN01"),
    ]

    # both are on the consult, the green channel first
    listed = c.get("sono1", f"/api/consults/{cid}/referrals").json()
    assert [(r["id"], r["status"]) for r in listed] == [(rid, "completed"), (did, "completed")]

    events = c.events("referral.")
    assert [(t, d["referral_id"]) for t, d in events] == [
        ("referral.issued", rid),
        ("referral.accepted", rid),
        ("referral.completed", rid),
        ("referral.issued", did),
        ("referral.accepted", did),
        ("referral.completed", did),
    ]
    for _type, data in events:
        assert data.keys() >= KEYS
        assert (data["consult_id"], data["study_instance_uid"]) == (cid, study.StudyInstanceUID)
    assert {(d["target_organisation"], d["green_channel"]) for _t, d in events} == {
        ("COUNTY", True),
        ("TOWN01", False),
    }
    assert events[1][1]["actor"] == "specialist2"
    assert events[2][1]["note"] == "急诊PCI成功，转入CCU。"

    rows = AuditLog(c.api.store.index.engine).query(study_instance_uid=study.StudyInstanceUID, limit=200)
    actions = {(row["action"], row["actor"], row["outcome"]) for row in rows}
    assert {
        ("referral.create", "specialist", "success"),
        ("referral.search", "specialist2", "success"),
        ("referral.search", "sono1", "success"),
        ("referral.read", "sono1", "success"),
        ("referral.update", "specialist2", "success"),
        ("referral.update", "doctor1", "success"),
    } <= actions
    assert all(row["patient_id"] == "P0001" for row in rows)
    created = [row for row in rows if row["action"] == "referral.create"]
    assert len(created) == 2
    assert any("green channel" in row["detail"] and rid in row["detail"] for row in created)


def test_a_village_patient_goes_up_to_its_township_or_the_county_and_down_to_the_village(
    referring: Consulting,
) -> None:
    c = referring
    study = c.store_study("VILLAGE21", patient_id="V0001")
    consult = accepted(c, user="village", study=study, urgency="urgent")
    cid = consult["id"]

    to_county = refer(c, cid)  # no target: the top of the village's tree
    assert (to_county["target"]["organisation"], to_county["green_channel"]) == ("COUNTY", False)
    to_township = refer(c, cid, target_organisation="TOWN02", green_channel=True)
    assert (to_township["target"]["organisation"], to_township["green_channel"]) == ("TOWN02", True)

    # the township accepts what is addressed to it, and sees what goes to the county
    assert c.post("doctor2", f"/api/referrals/{to_township['id']}/accept").status_code == 200
    seen = {r["id"] for r in c.get("sono2", "/api/referrals").json()}
    assert seen == {to_county["id"], to_township["id"]}
    incoming = c.get("doctor2", "/api/referrals", side="incoming").json()
    assert [r["id"] for r in incoming] == [to_township["id"]]
    # the county cannot take the patient the township has; it is cancelled by the issuer
    cancelled = c.post(
        "specialist", f"/api/referrals/{to_county['id']}/cancel", {"reason": "乡镇卫生院已接收。"}
    )
    assert (cancelled.json()["status"], cancelled.json()["status_note"]) == (
        "cancelled",
        "乡镇卫生院已接收。",
    )

    # down: back to the village that asked, not to its township
    down = refer(c, cid, direction="down", reason="转回村卫生室随访。")
    assert down["target"]["organisation"] == "VILLAGE21"
    refused = c.post(
        "specialist",
        f"/api/consults/{cid}/referrals",
        {"direction": "down", "reason": "随访", "target_organisation": "TOWN02"},
    )
    assert "VILLAGE21" in problem(refused, 422, "invalid-referral")["detail"]
    assert c.post("village", f"/api/referrals/{down['id']}/accept").status_code == 200


def test_the_issuer_chooses_the_green_channel_whatever_the_urgency(referring: Consulting) -> None:
    c = referring
    routine = accepted(c, urgency="routine")
    flagged = refer(c, routine["id"], green_channel=True, reason="复核发现主动脉夹层可能，需急诊转诊。")
    assert flagged["green_channel"] is True
    stat = accepted(c, urgency="stat")
    assert refer(c, stat["id"])["green_channel"] is True
    critical = accepted(c, urgency="critical")
    assert refer(c, critical["id"], green_channel=False)["green_channel"] is False
    # an admin who sees the consult may issue too, and name one person at the target
    admin_made = refer(c, stat["id"], "admin", direction="down", target_specialist="doctor1")
    assert admin_made["target"] == {"organisation": "TOWN01", "department": None, "specialist": "doctor1"}
    assert (admin_made["issued_by"], admin_made["green_channel"]) == ("admin", False)
