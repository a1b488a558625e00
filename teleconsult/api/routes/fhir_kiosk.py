"""FHIR R4 (JSON) ``Observation`` and ``Patient`` of health kiosk measurements, under /fhir.

``GET /fhir/Observation/{id}``, ``GET /fhir/Observation?patient=...`` /
``?subject=...`` (``Patient/<key>`` or the bare key), ``GET
/fhir/Patient/{key}`` and ``GET /fhir/Patient?_id=<key>``. Patients here are
those kiosks created (the key is random; the resident ID number appears
only masked). Access is that of ``/api/kiosk``: an observation or patient
outside the caller's organisation scope answers 404 like one that does not
exist (audited as denied), and a search returns only what the caller may
see. Errors are the service's problem+json, as for DiagnosticReport
(``fhir.py``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError

from device_adapters.kiosk.fhir import observation_resource, patient_resource, searchset
from teleconsult.api.auditing import audit_request
from teleconsult.api.deps import PrincipalDep
from teleconsult.api.openapi import problem_response
from teleconsult.api.routes.fhir import FhirJSONResponse
from teleconsult.api.routes.kiosk import kiosk_intake
from teleconsult.audit import AuditOutcome
from teleconsult.consults.outputs.fhir import FHIR_JSON
from teleconsult.errors import NotFoundError
from teleconsult.storage.kiosk import KioskStore

__all__ = ["router"]

router = APIRouter(prefix="/fhir", tags=["fhir"])

_OBSERVATION_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_PATIENT_KEY = r"^[0-9a-f]{32}$"
_REFERENCE = r"^(Patient/)?[A-Za-z0-9\-.]{1,64}$"


def _schema(resource_type: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["resourceType", "id"],
        "properties": {"resourceType": {"type": "string", "enum": [resource_type]}},
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
_SEARCHSET = {200: {"description": "A Bundle of type searchset", "content": {FHIR_JSON: {"schema": _BUNDLE}}}}


def _store(request: Request) -> KioskStore:
    return kiosk_intake(request.app).observations


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


@router.get(
    "/Observation/{observation_id}",
    response_class=FhirJSONResponse,
    summary="A health kiosk measurement as FHIR R4 Observation (LOINC coded, UCUM units)",
    responses={
        200: {"description": "The Observation", "content": {FHIR_JSON: {"schema": _schema("Observation")}}},
        404: problem_response("No such observation, or not in the caller's scope (the same answer)"),
    },
)
def read_observation(
    observation_id: Annotated[
        str, Path(pattern=_OBSERVATION_ID, description="the observation's id (a UUID)")
    ],
    request: Request,
    principal: PrincipalDep,
) -> FhirJSONResponse:
    found = _store(request).observation(observation_id, principal.visible_organisations)
    if found is None:
        audit_request(
            request, "observation.read", AuditOutcome.DENIED, principal=principal,
            detail=f"FHIR Observation {observation_id}: none in the caller's scope",
        )  # fmt: skip
        raise NotFoundError(f"no Observation {observation_id} that you may see")
    observation, patient = found
    audit_request(
        request, "observation.read", AuditOutcome.SUCCESS, principal=principal,
        patient_id=patient.patient_key, detail=f"FHIR Observation {observation_id} ({observation.kind})",
    )  # fmt: skip
    return FhirJSONResponse(observation_resource(observation))


@router.get(
    "/Observation",
    response_class=FhirJSONResponse,
    summary="Search kiosk observations by patient (patient or subject: Patient/<key>); a searchset Bundle",
    responses=_SEARCHSET,
)
def search_observations(
    request: Request,
    principal: PrincipalDep,
    patient: Annotated[str | None, Query(pattern=_REFERENCE, description="Patient/<key> or <key>")] = None,
    subject: Annotated[str | None, Query(pattern=_REFERENCE, description="the same as patient")] = None,
) -> FhirJSONResponse:
    if patient is None and subject is None:
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "patient"),
                    "msg": "search Observation by patient or subject",
                    "type": "missing",
                }
            ]
        )
    keys = {value.removeprefix("Patient/") for value in (patient, subject) if value is not None}
    resources: list[dict[str, Any]] = []
    key = keys.pop() if len(keys) == 1 else None
    if key is not None:
        observations = _store(request).observations_of(key, principal.visible_organisations)
        resources = [observation_resource(observation) for observation in observations]
    audit_request(
        request, "observation.search", AuditOutcome.SUCCESS, principal=principal,
        patient_id=key if resources else None,
        detail=f"FHIR Observation search by patient: {len(resources)} found",
    )  # fmt: skip
    return FhirJSONResponse(searchset(resources, str(request.url), _base(request)))


@router.get(
    "/Patient/{patient_key}",
    response_class=FhirJSONResponse,
    summary="A patient created by a health kiosk as FHIR R4 Patient (resident ID masked)",
    responses={
        200: {"description": "The Patient", "content": {FHIR_JSON: {"schema": _schema("Patient")}}},
        404: problem_response("No such patient, or none of their observations in the caller's scope"),
    },
)
def read_patient(
    patient_key: Annotated[str, Path(pattern=_PATIENT_KEY, description="the patient's key (32 hex digits)")],
    request: Request,
    principal: PrincipalDep,
) -> FhirJSONResponse:
    patient = _store(request).patient(patient_key, principal.visible_organisations)
    if patient is None:
        audit_request(
            request, "patient.read", AuditOutcome.DENIED, principal=principal, patient_id=patient_key,
            detail="FHIR Patient: none in the caller's scope",
        )  # fmt: skip
        raise NotFoundError(f"no Patient {patient_key} that you may see")
    audit_request(
        request, "patient.read", AuditOutcome.SUCCESS, principal=principal, patient_id=patient_key,
        detail=f"FHIR Patient {patient.resident_id_masked}",
    )  # fmt: skip
    return FhirJSONResponse(patient_resource(patient))


@router.get(
    "/Patient",
    response_class=FhirJSONResponse,
    summary="Search kiosk patients by _id; a searchset Bundle",
    responses=_SEARCHSET,
)
def search_patients(
    request: Request,
    principal: PrincipalDep,
    id_: Annotated[
        str, Query(alias="_id", pattern=r"^[A-Za-z0-9\-.]{1,64}$", description="the patient's key")
    ],
) -> FhirJSONResponse:
    patient = _store(request).patient(id_, principal.visible_organisations)
    resources = [patient_resource(patient)] if patient is not None else []
    audit_request(
        request, "patient.search", AuditOutcome.SUCCESS, principal=principal,
        patient_id=id_ if resources else None, detail=f"FHIR Patient search by _id: {len(resources)} found",
    )  # fmt: skip
    return FhirJSONResponse(searchset(resources, str(request.url), _base(request)))
