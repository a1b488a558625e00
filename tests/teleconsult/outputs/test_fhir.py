"""The signed report as a FHIR R4 DiagnosticReport: valid (fhir.resources R4B), read, searched."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from teleconsult.audit import AuditLog
from teleconsult.consults.outputs import ReportOutputs, patient_resource_id
from tests.teleconsult.consults.conftest import Consulting, accepted
from tests.teleconsult.outputs.conftest import REVIEWER, sign_report

FHIR_JSON = "application/fhir+json"
# R4 DiagnosticReport.status (required binding); the models check the type, not the value set.
STATUSES = {"registered", "partial", "preliminary", "final", "amended", "corrected", "appended", "cancelled"}


def _read(consulting: Consulting, user: str, report_id: str) -> Any:
    return consulting.get(user, f"/fhir/DiagnosticReport/{report_id}")


def test_a_final_report_is_a_valid_diagnostic_report_with_its_pdf(
    consulting: Consulting, outputs: ReportOutputs
) -> None:
    signed = sign_report(consulting, outputs)
    response = _read(consulting, "sono1", signed.id)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == FHIR_JSON
    body = response.json()
    report = DiagnosticReport.model_validate(body)  # raises on anything R4 does not allow

    assert report.id == signed.id
    assert report.status == "final"
    assert report.status in STATUSES
    assert report.meta.versionId == "2"
    assert [(c.system, c.code) for c in report.code.coding] == [("http://loinc.org", "25061-3")]
    assert report.code.text == "腹部超声检查报告 Abdominal ultrasound report"
    assert report.subject.reference == f"Patient/{patient_resource_id('P0001', 'TOWN01')}"
    assert report.subject.identifier.value == "P0001"
    assert report.subject.display == "王小明 (Wang XiaoMing)"
    assert report.conclusion == "肝右叶低回声结节，考虑血管瘤可能，建议增强CT。"
    assert body["issued"] == "2026-11-24T08:00:00.000Z"
    assert [i.identifier.value for i in report.resultsInterpreter] == [REVIEWER, "wangdoc"]
    assert [p.display for p in report.performer] == ["County Hospital", "Township 1"]
    assert report.imagingStudy[0].identifier.system == "urn:dicom:uid"
    assert report.imagingStudy[0].identifier.value == f"urn:oid:{signed.study.StudyInstanceUID}"

    (form,) = report.presentedForm
    pdf = consulting.get("sono1", f"{signed.path}/pdf").content
    assert form.contentType == "application/pdf"
    assert base64.b64decode(body["presentedForm"][0]["data"]) == pdf
    assert form.size == len(pdf)
    assert body["presentedForm"][0]["hash"] == base64.b64encode(hashlib.sha1(pdf).digest()).decode()


def test_search_by_patient_or_subject_returns_a_searchset_of_what_the_caller_may_see(
    consulting: Consulting, outputs: ReportOutputs
) -> None:
    first = sign_report(consulting, outputs)
    second = sign_report(consulting, outputs)
    patient = patient_resource_id("P0001", "TOWN01")
    for params in ({"patient": f"Patient/{patient}"}, {"subject": patient}):
        response = consulting.get("sono1", "/fhir/DiagnosticReport", **params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == FHIR_JSON
        bundle = Bundle.model_validate(response.json())
        assert (bundle.type, bundle.total) == ("searchset", 2)
        assert {entry.resource.id for entry in bundle.entry} == {first.id, second.id}
        assert all(
            entry.fullUrl.endswith(f"/fhir/DiagnosticReport/{entry.resource.id}") for entry in bundle.entry
        )
        assert all(entry.search.mode == "match" for entry in bundle.entry)

    for stranger in ("sono2", "cityspec"):  # another township, a hospital outside the county
        hidden = consulting.get(stranger, "/fhir/DiagnosticReport", patient=patient).json()
        assert (hidden["total"], hidden["entry"]) == (0, [])
    assert consulting.get("sono1", "/fhir/DiagnosticReport", patient="nobody").json()["total"] == 0
    assert (
        consulting.get("sono1", "/fhir/DiagnosticReport", patient=patient, subject="other").json()["total"]
        == 0
    )

    audit = AuditLog(consulting.api.store.index.engine)
    searches = [row for row in audit.query(limit=500) if row["action"] == "report.search"]
    assert {(row["actor"], row["outcome"]) for row in searches} >= {
        ("sono1", "success"),
        ("sono2", "success"),
    }
    assert any(row["patient_id"] == "P0001" and "2 found" in row["detail"] for row in searches)


def test_reading_is_authorised_as_the_report(consulting: Consulting, outputs: ReportOutputs) -> None:
    signed = sign_report(consulting, outputs)
    for stranger in ("sono2", "cityspec"):
        response = _read(consulting, stranger, signed.id)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
    assert _read(consulting, "doctor1", signed.id).status_code == 200
    assert _read(consulting, "specialist", signed.id).status_code == 200  # the county sees its townships
    unknown = _read(consulting, "sono1", "6f0c0000-0000-4000-8000-000000000000")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == _read(consulting, "sono2", signed.id).json()["detail"].replace(
        signed.id, "6f0c0000-0000-4000-8000-000000000000"
    ).replace("sono2", "sono1")
    assert consulting.api.client.get(f"/fhir/DiagnosticReport/{signed.id}").status_code == 401  # type: ignore[attr-defined]

    audit = AuditLog(consulting.api.store.index.engine)
    rows = audit.query(study_instance_uid=signed.study.StudyInstanceUID, limit=200)
    fhir_reads = {
        (r["actor"], r["outcome"])
        for r in rows
        if r["action"] == "report.read" and r["resource"].startswith("GET /fhir/")
    }
    assert {("sono2", "denied"), ("cityspec", "denied"), ("doctor1", "success")} <= fhir_reads


def test_no_diagnostic_report_before_the_report_is_final(
    consulting: Consulting, outputs: ReportOutputs
) -> None:
    consult = accepted(consulting)
    path = f"/api/consults/{consult['id']}/report"
    assert consulting.put(
        "specialist", path, {"template": "abdominal_ultrasound", "impression": "x"}
    ).is_success
    response = _read(consulting, "sono1", consult["id"])
    assert response.status_code == 404
    assert "not final" in response.json()["detail"]


def test_a_search_needs_a_patient(consulting: Consulting, outputs: ReportOutputs) -> None:
    response = consulting.get("sono1", "/fhir/DiagnosticReport")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.patient"
    assert consulting.get("sono1", "/fhir/DiagnosticReport", patient="Practitioner/x").status_code == 422
