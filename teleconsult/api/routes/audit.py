"""The audit trail for administrators: GET /api/audit (JSON) and /api/audit/export (ATNA XML).

Only admins read it, and only for their part of the community: events of
actors of their organisation and those below it, plus the DICOM events of
the peers configured for those organisations. Events without an
organisation (anonymous attempts, unknown AE titles) are left to
``teleconsult audit export``, which needs access to the server itself: they
name no organisation, so no admin can be shown to own them. Reading the trail
is itself recorded (ATNA "Audit Log Used").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, field_validator

from teleconsult.api.auditing import audit_request
from teleconsult.api.deps import MAX_OFFSET, PRINTABLE, SettingsDep, require_roles
from teleconsult.atna import audit_messages_document
from teleconsult.audit import AuditLog, AuditOutcome
from teleconsult.config import Settings
from teleconsult.domain.identity import Principal, Role

__all__ = ["router"]

router = APIRouter(prefix="/api/audit", tags=["audit"])

AdminDep = Annotated[Principal, Depends(require_roles(Role.ADMIN))]

_MAX_LIMIT = 1000


def _in_utc(value: datetime) -> datetime:
    """A filter time in UTC (naive means UTC), or a validation error when UTC cannot hold it."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00+01:00 is in year 0 in UTC
        raise ValueError("the time is out of range once converted to UTC") from exc


def _not_a_number(value: object) -> object:
    """Pydantic takes a bare number as a Unix time; the API documents ISO 8601 only, so refuse it."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value.strip())):
        raise ValueError("give the time as ISO 8601, e.g. 2026-11-24T08:00:00+08:00, not a number")
    return value


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

UTCTime = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(_in_utc)]


class AuditEventPublic(BaseModel):
    pk: int
    time: datetime
    action: str
    outcome: AuditOutcome
    interface: str
    actor: str
    actor_organisation: str | None
    role: str | None
    source_address: str | None
    resource: str
    study_instance_uid: str | None
    patient_id: str | None
    detail: str
    chain_sha256: str | None = None  # only with ?include_chain=true

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        # SQLite hands back naive datetimes; the trail is kept in UTC, so say so (RFC 3339 needs an offset).
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass(frozen=True, slots=True)
class AuditFilters:
    actor: str | None
    study_instance_uid: str | None
    patient_id: str | None
    outcome: AuditOutcome | None
    since: datetime | None
    until: datetime | None
    limit: int
    offset: int

    def describe(self) -> str:
        """The filters given, for the audit record of this read."""
        given = {
            "actor": self.actor,
            "study_instance_uid": self.study_instance_uid,
            "patient_id": self.patient_id,
            "outcome": self.outcome.value if self.outcome else None,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }
        text = ", ".join(f"{name}={value}" for name, value in given.items() if value is not None)
        return f"{text or 'no filter'}; limit={self.limit}, offset={self.offset}"


def _filters(
    actor: Annotated[
        str | None, Query(max_length=64, pattern=PRINTABLE, description="username or calling AE title")
    ] = None,
    study_instance_uid: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE)] = None,
    patient_id: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE)] = None,
    outcome: AuditOutcome | None = None,
    since: Annotated[UTCTime | None, Query(description="ISO 8601; UTC when it has no offset")] = None,
    until: Annotated[UTCTime | None, Query(description="ISO 8601; UTC when it has no offset")] = None,
    limit: Annotated[int, Query(ge=1, le=_MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> AuditFilters:
    return AuditFilters(actor, study_instance_uid, patient_id, outcome, since, until, limit, offset)


FiltersDep = Annotated[AuditFilters, Depends(_filters)]


def _peers_in_scope(settings: Settings, principal: Principal) -> list[str]:
    return [peer.ae_title for peer in settings.dicom_peers if principal.can_see(peer.organisation)]


def _events(request: Request, settings: Settings, principal: Principal, filters: AuditFilters) -> list[Any]:
    audit: AuditLog = request.app.state.audit
    return audit.query(
        actor=filters.actor,
        study_instance_uid=filters.study_instance_uid,
        patient_id=filters.patient_id,
        outcome=filters.outcome,
        since=filters.since,
        until=filters.until,
        organisations=principal.visible_organisations,
        dicom_actors=_peers_in_scope(settings, principal),
        limit=filters.limit,
        offset=filters.offset,
    )


@router.get(
    "",
    response_model=list[AuditEventPublic],
    response_model_exclude_unset=True,
    summary="Audit events of the admin's organisations, newest first",
    responses={401: {"description": "No valid bearer token"}, 403: {"description": "Not an admin"}},
)
def list_events(
    request: Request,
    principal: AdminDep,
    settings: SettingsDep,
    filters: FiltersDep,
    include_chain: bool = False,
) -> list[AuditEventPublic]:
    rows = _events(request, settings, principal, filters)
    audit_request(
        request,
        "audit.read",
        AuditOutcome.SUCCESS,
        principal=principal,
        detail=f"{len(rows)} events; {filters.describe()}",
    )
    return [
        AuditEventPublic(
            **{name: value for name, value in row.items() if include_chain or name != "chain_sha256"}
        )
        for row in rows
    ]


@router.get(
    "/export",
    summary="The same events as DICOM PS3.15 / IHE ATNA audit messages",
    response_class=Response,
    responses={
        200: {
            "description": "One AuditMessages document wrapping an RFC 3881 AuditMessage per event",
            "content": {"application/xml": {}},
        },
        401: {"description": "No valid bearer token"},
        403: {"description": "Not an admin"},
    },
)
def export_events(
    request: Request, principal: AdminDep, settings: SettingsDep, filters: FiltersDep
) -> Response:
    rows = _events(request, settings, principal, filters)
    audit_request(
        request,
        "audit.export",
        AuditOutcome.SUCCESS,
        principal=principal,
        detail=f"{len(rows)} events as ATNA XML; {filters.describe()}",
    )
    body = audit_messages_document(rows, source_id=settings.ae_title)
    return Response(body, media_type="application/xml")
