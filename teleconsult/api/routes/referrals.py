"""Referrals over REST: issue one from a consult, list, read, and move it through its states.

``POST /api/consults/{id}/referrals`` sends the consult's patient up (to the
county hospital, green channel for critical patients) or down (back to the
township for follow-up); the target side accepts, declines or completes it,
the issuing side cancels it. The rules are in
``teleconsult/consults/referrals.py``. A referral the caller may not see
answers 404 like one that does not exist, and every read and change is
audited with the consult's study and patient.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request, status

from teleconsult.api.consulting import audited, consult_service
from teleconsult.api.deps import MAX_OFFSET, PrincipalDep
from teleconsult.api.openapi import problem_response
from teleconsult.api.referral_schemas import (
    ReferralCreate,
    ReferralNote,
    ReferralOutcome,
    ReferralPublic,
    ReferralReason,
    referral_public,
)
from teleconsult.consults.referrals import ReferralService
from teleconsult.domain.identity import Principal
from teleconsult.domain.referrals import Direction, Referral, ReferralSide, ReferralStatus
from teleconsult.storage.referrals import ReferralFilters

__all__ = ["referral_service", "router"]

router = APIRouter(tags=["referrals"])

ConsultId = Annotated[str, Path(max_length=64, description="the consult's id (a UUID)")]
ReferralId = Annotated[str, Path(max_length=64, description="the referral's id (a UUID)")]

_lock = threading.Lock()

_BAD_BODY = {400: problem_response("The body is not JSON")}
_NOT_FOUND = problem_response("No such referral, or not visible to the caller (the same answer)")
_FORBIDDEN = problem_response("Visible, but not the caller's side: the target side or the issuer")
_CONFLICT = problem_response("Not possible in the referral's state: nothing was changed")
_INVALID = problem_response("Invalid fields, or a reason or note that is blank")
_CHANGE = {403: _FORBIDDEN, 404: _NOT_FOUND, 409: _CONFLICT, 422: _INVALID}


def referral_service(app: FastAPI) -> ReferralService:
    """The app's referral service, made on first use on the app's consult service."""
    with _lock:
        service: ReferralService | None = getattr(app.state, "referrals", None)
        if service is None:
            service = ReferralService(consult_service(app))
            app.state.referrals = service
        return service


async def _referrals(request: Request) -> ReferralService:
    return referral_service(request.app)


ReferralsDep = Annotated[ReferralService, Depends(_referrals)]


def _public(service: ReferralService, referrals: list[Referral]) -> list[ReferralPublic]:
    history = service.history(referrals)
    return [referral_public(r, history[r.referral_id]) for r in referrals]


def _describe(referral: Referral) -> str:
    flag = " (green channel)" if referral.green_channel else ""
    return (
        f"referral {referral.referral_id} of consult {referral.consult_id}: {referral.direction.value} "
        f"to {referral.target.describe()}{flag}, {referral.status.value}"
    )


@router.post(
    "/api/consults/{consult_id}/referrals",
    status_code=status.HTTP_201_CREATED,
    response_model=ReferralPublic,
    summary="Refer the consult's patient up (green channel for critical patients) or down for follow-up",
    responses={
        **_BAD_BODY,
        403: problem_response("Only specialists and admins who see the consult issue referrals"),
        404: problem_response("No such consult, or not visible to the caller (the same answer)"),
        409: problem_response(
            "The consult has not been accepted, is declined or cancelled, or has an open referral "
            "in the same direction to the same organisation: nothing was changed"
        ),
        422: problem_response(
            "Invalid fields, a target the direction does not allow, or the green channel on a down referral"
        ),
    },
)
def issue_referral(
    consult_id: ConsultId,
    body: ReferralCreate,
    request: Request,
    principal: PrincipalDep,
    service: ReferralsDep,
) -> ReferralPublic:
    with audited(request, principal, "referral.create") as note:
        note.consult(service.consults.get(principal, consult_id))
        note.detail = f"{body.direction.value} referral of consult {consult_id}"
        referral = service.issue(
            principal,
            consult_id,
            direction=body.direction,
            reason=body.reason,
            green_channel=body.green_channel,
            clinical_summary=body.clinical_summary,
            instructions=body.instructions,
            target_organisation=body.target_organisation,
            target_department=body.target_department,
            target_specialist=body.target_specialist,
        )
        note.detail = _describe(referral)
    return _public(service, [referral])[0]


@router.get(
    "/api/consults/{consult_id}/referrals",
    response_model=list[ReferralPublic],
    summary="The consult's referrals (all of them, for whoever sees the consult)",
    responses={404: problem_response("No such consult, or not visible to the caller (the same answer)")},
)
def consult_referrals(
    consult_id: ConsultId, request: Request, principal: PrincipalDep, service: ReferralsDep
) -> list[ReferralPublic]:
    with audited(request, principal, "referral.search") as note:
        consult, referrals = service.for_consult(principal, consult_id)
        note.consult(consult)
        note.detail = f"{len(referrals)} referrals of consult {consult_id}"
    return _public(service, referrals)


@router.get(
    "/api/referrals",
    response_model=list[ReferralPublic],
    summary="Referrals addressed to, issued from, or about patients of the caller's organisations",
    description="Green-channel referrals first; then open ones (oldest first), then closed ones "
    "(newest first).",
    responses={422: problem_response("Invalid filters")},
)
def list_referrals(
    request: Request,
    principal: PrincipalDep,
    service: ReferralsDep,
    status_: Annotated[list[ReferralStatus] | None, Query(alias="status")] = None,
    direction: Direction | None = None,
    green_channel: bool | None = None,
    side: Annotated[
        ReferralSide | None,
        Query(description="incoming: addressed to the caller's own organisation; outgoing: issued from it"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[ReferralPublic]:
    filters = ReferralFilters(
        statuses=tuple(status_ or ()),
        direction=direction,
        green_channel=green_channel,
        side=side,
        limit=limit,
        offset=offset,
    )
    with audited(request, principal, "referral.search") as note:
        referrals = service.search(principal, filters)
        note.detail = f"{len(referrals)} referrals"
        patients = {r.patient_id for r in referrals}
        if len(patients) == 1:
            note.patient_id = patients.pop()
            studies = {r.study_instance_uid for r in referrals}
            note.study_instance_uid = studies.pop() if len(studies) == 1 else None
    return _public(service, referrals)


@router.get(
    "/api/referrals/{referral_id}",
    response_model=ReferralPublic,
    summary="One referral, with its history",
    responses={404: _NOT_FOUND},
)
def read_referral(
    referral_id: ReferralId, request: Request, principal: PrincipalDep, service: ReferralsDep
) -> ReferralPublic:
    with audited(request, principal, "referral.read") as note:
        referral = service.get(principal, referral_id)
        note.study_instance_uid, note.patient_id = referral.study_instance_uid, referral.patient_id
        note.detail = _describe(referral)
    return _public(service, [referral])[0]


def _change(
    request: Request,
    principal: Principal,
    service: ReferralService,
    referral_id: str,
    what: str,
    change: Callable[[], Referral],
) -> ReferralPublic:
    """Audit one change of a referral (``referral.update``) around ``change()``."""
    with audited(request, principal, "referral.update") as note:
        referral = service.get(principal, referral_id)
        note.study_instance_uid, note.patient_id = referral.study_instance_uid, referral.patient_id
        note.detail = f"referral {referral_id} of consult {referral.consult_id} {what}"
        changed = change()
    return _public(service, [changed])[0]


@router.post(
    "/api/referrals/{referral_id}/accept",
    response_model=ReferralPublic,
    summary="Accept the referral (the target side): accepted",
    responses={**_BAD_BODY, **_CHANGE},
)
def accept(
    referral_id: ReferralId,
    request: Request,
    principal: PrincipalDep,
    service: ReferralsDep,
    body: Annotated[ReferralNote | None, Body()] = None,
) -> ReferralPublic:
    text = body.note if body else None
    return _change(
        request,
        principal,
        service,
        referral_id,
        "accepted" + (f": {text}" if text else ""),
        lambda: service.accept(principal, referral_id, text),
    )


@router.post(
    "/api/referrals/{referral_id}/decline",
    response_model=ReferralPublic,
    summary="Decline the referral, with a reason (the target side): declined",
    responses={**_BAD_BODY, **_CHANGE},
)
def decline(
    referral_id: ReferralId,
    body: ReferralReason,
    request: Request,
    principal: PrincipalDep,
    service: ReferralsDep,
) -> ReferralPublic:
    return _change(
        request,
        principal,
        service,
        referral_id,
        f"declined: {body.reason}",
        lambda: service.decline(principal, referral_id, body.reason),
    )


@router.post(
    "/api/referrals/{referral_id}/complete",
    response_model=ReferralPublic,
    summary="The patient was seen, or the follow-up done, with a note (the target side): completed",
    responses={**_BAD_BODY, **_CHANGE},
)
def complete(
    referral_id: ReferralId,
    body: ReferralOutcome,
    request: Request,
    principal: PrincipalDep,
    service: ReferralsDep,
) -> ReferralPublic:
    return _change(
        request,
        principal,
        service,
        referral_id,
        f"completed: {body.note}",
        lambda: service.complete(principal, referral_id, body.note),
    )


@router.post(
    "/api/referrals/{referral_id}/cancel",
    response_model=ReferralPublic,
    summary="Cancel the referral, with a reason (its issuer, or an admin of the issuing side): cancelled",
    responses={**_BAD_BODY, **_CHANGE},
)
def cancel(
    referral_id: ReferralId,
    body: ReferralReason,
    request: Request,
    principal: PrincipalDep,
    service: ReferralsDep,
) -> ReferralPublic:
    return _change(
        request,
        principal,
        service,
        referral_id,
        f"cancelled: {body.reason}",
        lambda: service.cancel(principal, referral_id, body.reason),
    )
