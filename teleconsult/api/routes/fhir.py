"""FHIR R4 (JSON) under /fhir: the signed reports as DiagnosticReport, read and searched by patient.

``GET /fhir/DiagnosticReport/{id}`` (the consult id) and ``GET
/fhir/DiagnosticReport?patient=...`` / ``?subject=...`` (a
``Patient/<id>`` reference or the bare id, a Bundle of type searchset).
Only final reports are DiagnosticReports. Access is exactly that of ``GET
/api/consults/{id}/report``: a consult the caller may not see answers 404
like one that does not exist (and is audited as denied); a search returns
only what the caller may see. Reads are audited as ``report.read``,
searches as ``report.search``.

Errors are the service's problem+json (RFC 9457), as everywhere outside
DICOMweb bodies, not FHIR OperationOutcome: one error shape for every client
of the API. Successful answers are ``application/fhir+json``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from teleconsult.api.consulting import ReportsDep, audited
from teleconsult.api.deps import PrincipalDep
from teleconsult.api.openapi import problem_response
from teleconsult.api.outputs import OutputsDep
from teleconsult.consults.outputs import FHIR_JSON, ReportOutputs, diagnostic_report, searchset
from teleconsult.consults.reporting import ReportService
from teleconsult.domain.consults import Consult
from teleconsult.domain.identity import Principal
from teleconsult.domain.reports import Report
from teleconsult.errors import NotFoundError

__all__ = ["router"]

router = APIRouter(prefix="/fhir", tags=["fhir"])

_FHIR_ID = r"^[A-Za-z0-9\-.]{1,64}$"
_REFERENCE = r"^(Patient/)?[A-Za-z0-9\-.]{1,64}$"
_DIAGNOSTIC_REPORT = {
    "type": "object",
    "required": ["resourceType", "id", "status", "code", "subject"],
    "properties": {"resourceType": {"type": "string", "enum": ["DiagnosticReport"]}},
}
_BUNDLE = {
    "type": "object",
    "required": ["resourceType", "type", "entry"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle"]},
        "type": {"type": "string", "enum": ["searchset"]},
        "entry": {"type": "array", "items": {"type": "object"}},
    },
}


class FhirJSONResponse(JSONResponse):
    media_type = FHIR_JSON


def _resource(outputs: ReportOutputs, consult: Consult, report: Report) -> tuple[dict[str, Any], int] | None:
    """The DiagnosticReport of a consult's report, or None while it is not final."""
    if report.final_signature is None:
        return None
    version = report.current.version
    document = outputs.document(consult.consult_id, version)
    return diagnostic_report(document, outputs.pdf(consult.consult_id, version)), version


def _patient_id(reference: str) -> str:
    return reference.removeprefix("Patient/")


@router.get(
    "/DiagnosticReport/{report_id}",
    response_class=FhirJSONResponse,
    summary="A signed report as FHIR R4 DiagnosticReport (id: the consult id), with its PDF",
    responses={
        200: {"description": "The DiagnosticReport", "content": {FHIR_JSON: {"schema": _DIAGNOSTIC_REPORT}}},
        404: problem_response(
            "No such report, not final yet, or not visible to the caller (the same answer)"
        ),
    },
)
def read_diagnostic_report(
    report_id: Annotated[str, Path(pattern=_FHIR_ID, description="the consult's id")],
    request: Request,
    principal: PrincipalDep,
    service: ReportsDep,
    outputs: OutputsDep,
) -> FhirJSONResponse:
    with audited(request, principal, "report.read") as note:
        note.consult(service.consults.get(principal, report_id))
        consult, report = service.report(principal, report_id)
        made = _resource(outputs, consult, report)
        if made is None:
            raise NotFoundError(f"the report of consult {report_id} is not final: no DiagnosticReport yet")
        resource, version = made
        note.detail = f"FHIR DiagnosticReport of consult {report_id}, version {version}"
    return FhirJSONResponse(resource)


def _visible_reports(
    service: ReportService, principal: Principal, consult_ids: list[str]
) -> list[tuple[Consult, Report]]:
    found = []
    for consult_id in consult_ids:
        try:
            found.append(service.report(principal, consult_id))
        except NotFoundError:  # not visible to the caller (or gone): not a match for them
            continue
    return found


@router.get(
    "/DiagnosticReport",
    response_class=FhirJSONResponse,
    summary="Search signed reports by patient (patient or subject: Patient/<id>); a searchset Bundle",
    responses={
        200: {"description": "A Bundle of type searchset", "content": {FHIR_JSON: {"schema": _BUNDLE}}},
    },
)
def search_diagnostic_reports(
    request: Request,
    principal: PrincipalDep,
    service: ReportsDep,
    outputs: OutputsDep,
    patient: Annotated[
        str | None, Query(pattern=_REFERENCE, description="Patient/<id> or <id> (the subject's id)")
    ] = None,
    subject: Annotated[str | None, Query(pattern=_REFERENCE, description="the same as patient")] = None,
) -> FhirJSONResponse:
    if patient is None and subject is None:
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "patient"),
                    "msg": "search DiagnosticReport by patient or subject",
                    "type": "missing",
                }
            ]
        )
    keys = {_patient_id(value) for value in (patient, subject) if value is not None}
    with audited(request, principal, "report.search") as note:
        resources = []
        if len(keys) == 1:
            consult_ids = outputs.consults_of_patient(keys.pop())
            for consult, report in _visible_reports(service, principal, consult_ids):
                made = _resource(outputs, consult, report)
                if made is not None:
                    note.consult(consult)
                    resources.append(made[0])
        note.detail = f"FHIR DiagnosticReport search by patient: {len(resources)} found"
    base = str(request.base_url).rstrip("/") + "/fhir"
    return FhirJSONResponse(searchset(resources, str(request.url), base))
