"""Consults over REST: request, list, read, and every change of state.

``POST /api/consults`` asks for a specialist's opinion on a study (or on a
patient whose study has not arrived); the target side accepts, declines or
reassigns; the requesting side cancels or confirms delivery. Reports are in
``reports.py``. A consult the caller may not see answers 404 like one that
does not exist, and the attempt is audited as denied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status

from teleconsult.api.consult_schemas import (
    ConsultCreate,
    ConsultPublic,
    ReasonBody,
    ReassignBody,
    StudyLink,
    consult_public,
)
from teleconsult.api.consulting import ConsultsDep, audited, consult_lifespan
from teleconsult.api.deps import MAX_OFFSET, PrincipalDep
from teleconsult.api.openapi import problem_response
from teleconsult.consults import ConsultService
from teleconsult.domain.consults import Consult, ConsultStatus, Urgency
from teleconsult.domain.identity import Principal
from teleconsult.storage.consults import ConsultFilters

__all__ = ["router"]

router = APIRouter(prefix="/api/consults", tags=["consults"], lifespan=consult_lifespan)

ConsultId = Annotated[str, Path(max_length=64, description="the consult's id (a UUID)")]

_NOT_FOUND = problem_response("No such consult, or not visible to the caller (the same answer)")
_FORBIDDEN = problem_response("Visible, but not the caller's to do (role or side)")
_CONFLICT = problem_response("Not possible in the consult's state: nothing was changed")
_INVALID = problem_response("Invalid request (field errors, or a target/reason that cannot be used)")
_CHANGE = {403: _FORBIDDEN, 404: _NOT_FOUND, 409: _CONFLICT, 422: _INVALID}
_BAD_BODY = {400: problem_response("The body is not JSON")}


def _public(service: ConsultService, consult: Consult, *, full: bool = True) -> ConsultPublic:
    return consult_public(
        consult,
        service.now(),
        study=service.study(consult) if full else None,
        history=service.history(consult.consult_id) if full else None,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ConsultPublic,
    response_model_exclude_none=False,
    summary="Request a consult on a study, or on a patient before the study arrives",
    responses={
        **_BAD_BODY,
        403: problem_response("Admins do not request consults"),
        404: problem_response("The study is not stored, or not visible to the caller"),
        422: _INVALID,
    },
)
def request_consult(
    body: ConsultCreate, request: Request, principal: PrincipalDep, service: ConsultsDep
) -> ConsultPublic:
    with audited(
        request,
        principal,
        "consult.create",
        study_instance_uid=body.study_instance_uid,
        patient_id=body.patient_id,
    ) as note:
        consult = service.request(
            principal,
            urgency=body.urgency,
            question=body.question,
            study_instance_uid=body.study_instance_uid,
            patient_id=body.patient_id,
            issuer_of_patient_id=body.issuer_of_patient_id,
            target_organisation=body.target_organisation,
            target_department=body.target_department,
            target_specialist=body.target_specialist,
        )
        note.consult(consult)
        note.detail = f"consult {consult.consult_id} ({consult.urgency.value}) to {consult.target.describe()}"
    return _public(service, consult)


@router.get(
    "",
    response_model=list[ConsultPublic],
    summary="Consults the caller may see, soonest deadline first",
    responses={422: problem_response("Invalid filters")},
)
def list_consults(
    request: Request,
    principal: PrincipalDep,
    service: ConsultsDep,
    status_: Annotated[list[ConsultStatus] | None, Query(alias="status")] = None,
    urgency: Urgency | None = None,
    overdue: bool | None = None,
    study_instance_uid: Annotated[str | None, Query(max_length=64, pattern=r"^[0-9.]+$")] = None,
    assigned_to_me: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[ConsultPublic]:
    filters = ConsultFilters(
        statuses=tuple(status_ or ()),
        urgency=urgency,
        overdue=overdue,
        study_instance_uid=study_instance_uid,
        assignee=principal.username if assigned_to_me else None,
        limit=limit,
        offset=offset,
    )
    with audited(request, principal, "consult.search", study_instance_uid=study_instance_uid) as note:
        consults = service.search(principal, filters)
        note.detail = f"{len(consults)} consults"
        patients = {c.patient_id for c in consults}
        if len(patients) == 1:
            note.patient_id = patients.pop()
    return [_public(service, consult, full=False) for consult in consults]


@router.get(
    "/{consult_id}",
    response_model=ConsultPublic,
    summary="One consult, with its study and its history",
    responses={404: _NOT_FOUND},
)
def read_consult(
    consult_id: ConsultId, request: Request, principal: PrincipalDep, service: ConsultsDep
) -> ConsultPublic:
    with audited(request, principal, "consult.read") as note:
        consult = service.get(principal, consult_id)
        note.consult(consult)
        note.detail = f"consult {consult_id}"
    return _public(service, consult)


def _change(
    request: Request,
    principal: Principal,
    service: ConsultService,
    consult_id: str,
    what: str,
    change: Callable[[], Consult],
) -> ConsultPublic:
    """Audit one change of a consult (``consult.update``) around ``change()``."""
    with audited(request, principal, "consult.update") as note:
        note.consult(service.get(principal, consult_id))
        note.detail = f"consult {consult_id} {what}"
        consult = change()
    return _public(service, consult)


@router.post(
    "/{consult_id}/accept",
    response_model=ConsultPublic,
    summary="Take the consult (a specialist it is addressed to): accepted",
    responses=_CHANGE,
)
def accept(
    consult_id: ConsultId, request: Request, principal: PrincipalDep, service: ConsultsDep
) -> ConsultPublic:
    return _change(
        request, principal, service, consult_id, "accepted", lambda: service.accept(principal, consult_id)
    )


@router.post(
    "/{consult_id}/decline",
    response_model=ConsultPublic,
    summary="Decline the consult, with a reason (the target side)",
    responses={**_BAD_BODY, **_CHANGE},
)
def decline(
    consult_id: ConsultId, body: ReasonBody, request: Request, principal: PrincipalDep, service: ConsultsDep
) -> ConsultPublic:
    return _change(
        request,
        principal,
        service,
        consult_id,
        f"declined: {body.reason}",
        lambda: service.decline(principal, consult_id, body.reason),
    )


@router.post(
    "/{consult_id}/cancel",
    response_model=ConsultPublic,
    summary="Cancel the consult, with a reason (the requesting side)",
    responses={**_BAD_BODY, **_CHANGE},
)
def cancel(
    consult_id: ConsultId, body: ReasonBody, request: Request, principal: PrincipalDep, service: ConsultsDep
) -> ConsultPublic:
    return _change(
        request,
        principal,
        service,
        consult_id,
        f"cancelled: {body.reason}",
        lambda: service.cancel(principal, consult_id, body.reason),
    )


@router.post(
    "/{consult_id}/reassign",
    response_model=ConsultPublic,
    summary="Address the consult to another specialist, department or pool; it waits to be accepted again",
    responses={**_BAD_BODY, **_CHANGE},
)
def reassign(
    consult_id: ConsultId, body: ReassignBody, request: Request, principal: PrincipalDep, service: ConsultsDep
) -> ConsultPublic:
    return _change(
        request,
        principal,
        service,
        consult_id,
        f"reassigned: {body.reason}",
        lambda: service.reassign(
            principal,
            consult_id,
            body.reason,
            organisation=body.target_organisation,
            department=body.target_department,
            specialist=body.target_specialist,
        ),
    )


@router.post(
    "/{consult_id}/review",
    response_model=ConsultPublic,
    summary="Start reviewing (the assigned specialist): in_review",
    responses=_CHANGE,
)
def start_review(
    consult_id: ConsultId, request: Request, principal: PrincipalDep, service: ConsultsDep
) -> ConsultPublic:
    return _change(
        request,
        principal,
        service,
        consult_id,
        "taken into review",
        lambda: service.start_review(principal, consult_id),
    )


@router.post(
    "/{consult_id}/acknowledge",
    response_model=ConsultPublic,
    summary="Confirm receipt of the signed report (the requesting side): delivered",
    responses=_CHANGE,
)
def acknowledge(
    consult_id: ConsultId, request: Request, principal: PrincipalDep, service: ConsultsDep
) -> ConsultPublic:
    return _change(
        request,
        principal,
        service,
        consult_id,
        "delivered (receipt confirmed)",
        lambda: service.acknowledge(principal, consult_id),
    )


@router.put(
    "/{consult_id}/study",
    response_model=ConsultPublic,
    summary="Link a patient consult to its study once the study has arrived",
    responses={
        **_BAD_BODY,
        **_CHANGE,
        404: problem_response("No such consult or study, or not visible to the caller"),
    },
)
def attach_study(
    consult_id: ConsultId, body: StudyLink, request: Request, principal: PrincipalDep, service: ConsultsDep
) -> ConsultPublic:
    return _change(
        request,
        principal,
        service,
        consult_id,
        f"linked to study {body.study_instance_uid}",
        lambda: service.attach_study(principal, consult_id, body.study_instance_uid),
    )
