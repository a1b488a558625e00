"""Bad input and refused moves: clear problem+json answers, and nothing changes."""

from __future__ import annotations

from typing import Any

import pytest

from teleconsult.audit import AuditLog
from tests.teleconsult.consults.conftest import DRAFT, Consulting, accepted, final

PROBLEM = "application/problem+json"


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["detail"]
    return body


def _snapshot(consulting: Consulting, cid: str) -> tuple[Any, ...]:
    consult = consulting.get("specialist", f"/api/consults/{cid}").json()
    versions = consulting.get("specialist", f"/api/consults/{cid}/report/versions")
    return consult["status"], consult["assignee"], len(consult["history"]), versions.text


def test_signing_twice_without_the_role_and_editing_a_signed_report(consulting: Consulting) -> None:
    consult = final(consulting)
    cid = consult["id"]
    path = f"/api/consults/{cid}/report"
    before = _snapshot(consulting, cid)

    twice = _problem(consulting.post("specialist", f"{path}/sign"), 409, "already-signed")
    assert "signed as final by specialist" in twice["detail"]
    assert "addendum" in twice["detail"]
    _problem(consulting.post("doctor1", f"{path}/sign"), 409, "already-signed")

    no_role = _problem(consulting.call("POST", "admin", f"{path}/sign"), 403, "forbidden")
    assert "admin is admin" in no_role["detail"]
    reviewing = _problem(consulting.post("doctor1", f"{path}/sign", {"role": "reviewing"}), 403, "forbidden")
    assert "specialist role" in reviewing["detail"]
    _problem(consulting.post("specialist", f"{path}/sign", {"role": "performing"}), 403, "forbidden")

    edited = {**DRAFT, "impression": "改过的结论"}
    signed = _problem(consulting.put("specialist", path, edited), 409, "report-signed")
    assert "signed addendum" in signed["detail"]
    _problem(consulting.put("doctor1", path, edited), 409, "report-signed")

    assert _snapshot(consulting, cid) == before
    assert consulting.get("sono1", f"{path}/verify").json()["valid"] is True
    denied = AuditLog(consulting.api.store.index.engine).query(outcome="denied", actor="doctor1")
    assert any(row["action"] == "report.sign" and row["patient_id"] == "P0001" for row in denied)


def test_unknown_study_and_consult(consulting: Consulting) -> None:
    missing = consulting.post(
        "sono1", "/api/consults", {"study_instance_uid": "1.2.3.4", "urgency": "routine", "question": "?"}
    )
    assert "study 1.2.3.4 is not stored" in _problem(missing, 404, "not-found")["detail"]
    # a study of TOWN02 answers as if it did not exist
    other = consulting.store_study("TOWN02", patient_id="P9")
    hidden = consulting.post(
        "sono1",
        "/api/consults",
        {"study_instance_uid": other.StudyInstanceUID, "urgency": "routine", "question": "?"},
    )
    assert _problem(hidden, 404, "not-found")["detail"] == missing.json()["detail"].replace(
        "1.2.3.4", other.StudyInstanceUID
    )
    for cid in ("8c1c56b0-5b8b-4d55-9a49-6d4b0a4e2f10", "not-a-uuid", "1"):
        _problem(consulting.get("sono1", f"/api/consults/{cid}"), 404, "not-found")
        _problem(consulting.put("specialist", f"/api/consults/{cid}/report", DRAFT), 404, "not-found")
        _problem(consulting.post("specialist", f"/api/consults/{cid}/report/sign"), 404, "not-found")
    assert consulting.get("sono1", "/api/consults").json() == []
    rows = AuditLog(consulting.api.store.index.engine).query(outcome="denied", actor="sono1")
    assert any(
        r["action"] == "consult.create" and r["study_instance_uid"] == other.StudyInstanceUID for r in rows
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"urgency": "whenever", "question": "?"}, "urgency"),
        ({"urgency": "stat", "question": ""}, "question"),
        ({"urgency": "stat", "question": "?", "study_instance_uid": "1.2.abc"}, "study_instance_uid"),
        ({"urgency": "stat", "question": "?", "extra": 1}, "extra"),
    ],
)
def test_invalid_requests_name_the_field(consulting: Consulting, body: dict[str, Any], field: str) -> None:
    response = consulting.post("sono1", "/api/consults", body)
    problem = _problem(response, 422, "validation")
    assert any(field in error["field"] for error in problem["errors"])


def test_requests_that_cannot_be_addressed(consulting: Consulting) -> None:
    study = consulting.store_study()
    base = {"study_instance_uid": study.StudyInstanceUID, "urgency": "routine", "question": "?"}
    for extra, words in [
        ({}, "name either"),  # neither a study nor a patient: filled below
        ({"target_specialist": "doctor1"}, "not an active specialist"),
        ({"target_organisation": "NOWHERE"}, "does not exist"),
        ({"target_organisation": "TOWN01"}, "no specialists"),
        ({"target_department": "US"}, "has no specialists"),
        ({"target_specialist": "cityspec", "target_organisation": "COUNTY"}, "belongs to CITY"),
    ]:
        body = {**base, **extra} if extra else {"urgency": "routine", "question": "?"}
        assert (
            words
            in _problem(consulting.post("sono1", "/api/consults", body), 422, "invalid-consult")["detail"]
        )
    _problem(consulting.call("POST", "admin", "/api/consults", base), 403, "forbidden")
    assert consulting.get("admin", "/api/consults").json() == []


def test_state_machine_refusals(consulting: Consulting) -> None:
    consult = consulting.request()
    cid = consult["id"]
    base = f"/api/consults/{cid}"
    _problem(consulting.post("doctor1", f"{base}/accept"), 403, "forbidden")
    _problem(consulting.post("specialist", f"{base}/review"), 403, "forbidden")  # not accepted by them
    _problem(consulting.post("sono1", f"{base}/acknowledge"), 409, "consult-state")
    _problem(consulting.post("specialist", f"{base}/cancel", {"reason": "no"}), 403, "forbidden")
    _problem(consulting.post("specialist", f"{base}/decline", {"reason": ""}), 422, "validation")
    _problem(consulting.post("specialist", f"{base}/report/sign"), 409, "consult-state")  # no assignee yet

    assert consulting.post("specialist", f"{base}/accept").status_code == 200
    accepted_twice = _problem(consulting.post("specialist", f"{base}/accept"), 409, "consult-state")
    assert "is accepted; it can be accepted only when requested" in accepted_twice["detail"]
    # another county specialist of the pool comes too late
    _problem(consulting.post("specialist2", f"{base}/accept"), 409, "consult-state")
    _problem(consulting.post("specialist", f"{base}/report/submit"), 409, "consult-state")  # no report
    _problem(consulting.post("specialist", f"{base}/report/addenda", {"text": "x"}), 409, "consult-state")

    assert consulting.post("specialist", f"{base}/review").status_code == 200
    # the requesting side may no longer change the draft once the specialist reviews
    _problem(consulting.put("doctor1", f"{base}/report", DRAFT), 409, "consult-state")
    incomplete = {**DRAFT, "impression": ""}
    assert consulting.put("specialist", f"{base}/report", incomplete).status_code == 200
    missing = _problem(consulting.post("specialist", f"{base}/report/submit"), 422, "invalid-report")
    assert "impression" in missing["detail"]
    _problem(consulting.post("sono1", f"{base}/report/sign"), 422, "invalid-report")

    cancelled = consulting.post("sono1", f"{base}/cancel", {"reason": "patient transferred"}).json()
    assert (cancelled["status"], cancelled["status_reason"]) == ("cancelled", "patient transferred")
    _problem(consulting.post("sono1", f"{base}/cancel", {"reason": "again"}), 409, "consult-state")
    _problem(consulting.put("specialist", f"{base}/report", DRAFT), 409, "consult-state")
    _problem(consulting.post("specialist", f"{base}/report/sign"), 409, "consult-state")
    assert [t for t, _ in consulting.events("consult.")] == [
        "consult.requested",
        "consult.accepted",
        "consult.cancelled",
    ]


def test_report_content_must_fit_its_template(consulting: Consulting) -> None:
    consult = accepted(consulting)
    path = f"/api/consults/{consult['id']}/report"
    for draft, words in [
        ({**DRAFT, "template": "brain_mri"}, "no report template 'brain_mri'"),
        ({**DRAFT, "findings": {"heart": {"description": "x"}}}, "has no section 'heart'"),
        ({**DRAFT, "findings": {"liver": {"colour": "x"}}}, "has no field 'colour'"),
        ({**DRAFT, "findings": {"liver": {"right_lobe_oblique_mm": "big"}}}, "must be a number in mm"),
        ({**DRAFT, "findings": {"liver": {"right_lobe_oblique_mm": -3}}}, "at least 0"),
        ({**DRAFT, "findings": {"liver": {"description": 5}}}, "must be text"),
    ]:
        assert words in _problem(consulting.put("specialist", path, draft), 422, "invalid-report")["detail"]
    assert consulting.get("specialist", path).status_code == 404  # nothing was stored
