"""The signed report as a FHIR R4 DiagnosticReport (JSON), for hospital information systems.

Built on request from the signed report and the PDF made for its newest
version, so it is always the report as it stands: ``final``, or
``amended`` once signed addenda exist (the project's report states).

Identifiers:

- the resource id is the consult id (a UUID, a valid FHIR id);
- the patient is ``Patient/<patient_resource_id>``: the first 40 hex digits
  of SHA-256 over ``issuer|patient ID``. Opaque on purpose: patient IDs stay
  out of URLs and access logs. The reference also carries the identifier
  (system ``…/patient-id/<issuer>``, value the patient ID);
- the study is referenced by identifier: system ``urn:dicom:uid``, value
  ``urn:oid:<Study Instance UID>``;
- organisations and users by identifier under ``IDENTIFIER_BASE``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from teleconsult.consults.outputs.document import ReportDocument, Signer, document_title, person_name_text
from teleconsult.domain.reports import SignatureRole, format_time

__all__ = [
    "FHIR_JSON",
    "IDENTIFIER_BASE",
    "diagnostic_report",
    "patient_resource_id",
    "searchset",
]

FHIR_JSON = "application/fhir+json"
IDENTIFIER_BASE = "https://teleconsult.invalid/fhir/sid"
_LOINC = "http://loinc.org"
_V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
# HL7 v2 table 0074 (diagnostic service section) per template.
_CATEGORY = {
    "abdominal_ultrasound": ("RUS", "Radiology Ultrasound"),
    "obstetric_ultrasound": ("OUS", "OB Ultrasound"),
    "echocardiography": ("CUS", "Cardiac Ultrasound"),
    "chest_dr": ("RX", "Radiograph"),
    "ecg_12_lead": ("EC", "Electrocardiac (e.g., EKG, EEC, Holter)"),
}
_RADIOLOGY = ("RAD", "Radiology")


def patient_resource_id(patient_id: str, issuer_of_patient_id: str) -> str:
    return hashlib.sha256(f"{issuer_of_patient_id}|{patient_id}".encode()).hexdigest()[:40]


def _identifier(kind: str, value: str) -> dict[str, str]:
    return {"system": f"{IDENTIFIER_BASE}/{kind}", "value": value}


def _practitioner(signer: Signer) -> dict[str, Any]:
    signature = signer.signature
    return {
        "identifier": _identifier("user", signature.signer),
        "display": f"{signature.signer_name} ({signer.organisation.name})",
    }


def _conclusion(document: ReportDocument) -> str:
    lines = [document.impression]
    for addendum in document.addenda:
        signature = document.report.signature(addendum.version, SignatureRole.REVIEWING)
        when = f", {format_time(signature.signed_at)}" if signature else ""
        lines.append(f"补充 Addendum (version {addendum.version}{when}): {addendum.content.get('text', '')}")
    return "\n".join(line for line in lines if line)


def diagnostic_report(document: ReportDocument, pdf: bytes | None) -> dict[str, Any]:
    """The DiagnosticReport of ``document``; ``presentedForm`` carries ``pdf`` when it has been made."""
    consult, patient, signature = document.consult, document.patient, document.signature
    title = document_title(document.template.code)
    category = _CATEGORY.get(document.template.code, _RADIOLOGY)
    patient_reference: dict[str, Any] = {
        "reference": f"Patient/{patient_resource_id(patient.patient_id, patient.issuer_of_patient_id)}",
        "identifier": {
            "system": f"{IDENTIFIER_BASE}/patient-id/{quote(patient.issuer_of_patient_id, safe='')}",
            "value": patient.patient_id,
        },
    }
    if patient.name:
        patient_reference["display"] = person_name_text(patient.name)
    interpreters = [_practitioner(document.reviewer)]
    if document.performer is not None:
        interpreters.append(_practitioner(document.performer))
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": consult.consult_id,
        "meta": {"versionId": str(document.version), "lastUpdated": format_time(signature.signed_at)},
        "language": "zh-CN",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{consult.consult_id}"}],
        "status": "amended" if document.addenda else "final",
        "category": [{"coding": [{"system": _V2_0074, "code": category[0], "display": category[1]}]}],
        "code": {
            "coding": [{"system": _LOINC, "code": title.code, "display": title.meaning}],
            "text": f"{document.template.label.zh_cn} {document.template.label.en}",
        },
        "subject": patient_reference,
        "issued": format_time(signature.signed_at),
        "performer": [
            {
                "identifier": _identifier("organisation", document.reviewing.code),
                "display": document.reviewing.name,
            },
            {
                "identifier": _identifier("organisation", document.requesting.code),
                "display": document.requesting.name,
            },
        ],
        "resultsInterpreter": interpreters,
        "conclusion": _conclusion(document),
    }
    if document.study is not None:
        if document.study.study_date:
            date = document.study.study_date
            resource["effectiveDateTime"] = f"{date[:4]}-{date[4:6]}-{date[6:8]}"
        resource["imagingStudy"] = [
            {
                "identifier": {
                    "system": "urn:dicom:uid",
                    "value": f"urn:oid:{document.study.study_instance_uid}",
                },
                "display": document.study.description or document.template.label.en,
            }
        ]
    if pdf is not None:
        resource["presentedForm"] = [
            {
                "contentType": "application/pdf",
                "language": "zh-CN",
                "data": base64.b64encode(pdf).decode("ascii"),
                "size": len(pdf),
                "hash": base64.b64encode(hashlib.sha1(pdf).digest()).decode("ascii"),  # noqa: S324 (FHIR's choice)
                "title": f"{document.template.label.zh_cn} v{document.version}",
                "creation": format_time(signature.signed_at),
            }
        ]
    return resource


def searchset(resources: Sequence[dict[str, Any]], self_url: str, base_url: str) -> dict[str, Any]:
    """A search result Bundle of DiagnosticReports."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "link": [{"relation": "self", "url": self_url}],
        "entry": [
            {
                "fullUrl": f"{base_url}/DiagnosticReport/{resource['id']}",
                "resource": resource,
                "search": {"mode": "match"},
            }
            for resource in resources
        ],
    }
