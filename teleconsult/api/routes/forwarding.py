"""The forwarding queue as hospital IT sees it: what is pending, sent or failed, and why."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from teleconsult.api.auditing import audit_request
from teleconsult.api.deps import MAX_OFFSET, PrincipalDep, StoreDep, require_roles
from teleconsult.audit import AuditOutcome
from teleconsult.domain.identity import Principal, Role
from teleconsult.storage.outbox import ForwardStatus

__all__ = ["router"]

router = APIRouter(prefix="/api/forwarding", tags=["forwarding"])


class ForwardingPublic(BaseModel):
    counts: dict[str, int]
    entries: list[dict[str, Any]]


class RetryPublic(BaseModel):
    retried: list[int]


@router.get(
    "",
    response_model=ForwardingPublic,
    summary="Forwarding queue rows of the organisations the caller may see",
)
def forwarding(
    request: Request,
    principal: PrincipalDep,
    store: StoreDep,
    status: ForwardStatus | None = None,
    study_instance_uid: Annotated[str | None, Query(max_length=64, pattern=r"^[0-9.]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ForwardingPublic:
    entries = store.outbox.list_entries(
        status=status,
        study_instance_uid=study_instance_uid,
        organisations=principal.scope,
        limit=limit,
        offset=offset,
    )
    audit_request(
        request,
        "forwarding.read",
        AuditOutcome.SUCCESS,
        principal=principal,
        study_instance_uid=study_instance_uid,
        detail=f"{len(entries)} rows",
    )
    return ForwardingPublic(
        counts=store.outbox.counts(organisations=principal.scope),
        entries=[entry.as_json() for entry in entries],
    )


@router.post(
    "/retry",
    response_model=RetryPublic,
    summary="Make every failed row of the caller's organisations due again (admins)",
    responses={403: {"description": "Not an admin"}},
)
def retry_failed(
    request: Request,
    principal: Annotated[Principal, Depends(require_roles(Role.ADMIN))],
    store: StoreDep,
) -> RetryPublic:
    failed = store.outbox.list_entries(status=ForwardStatus.FAILED, organisations=principal.scope, limit=None)
    retried = store.outbox.retry([entry.pk for entry in failed]) if failed else []
    audit_request(
        request, "forwarding.retry", AuditOutcome.SUCCESS, principal=principal, detail=f"{len(retried)} rows"
    )
    return RetryPublic(retried=retried)
