"""Recording HTTP accesses in the audit trail."""

from __future__ import annotations

from fastapi import Request

from teleconsult.audit import AuditEvent, AuditLog, AuditOutcome, Interface
from teleconsult.domain.identity import Principal

__all__ = ["audit_request"]


def audit_request(
    request: Request,
    action: str,
    outcome: AuditOutcome,
    *,
    principal: Principal | None = None,
    interface: Interface = Interface.HTTP,
    study_instance_uid: str | None = None,
    patient_id: str | None = None,
    detail: str = "",
    actor: str | None = None,
) -> None:
    """Append one audit event for this request (who, what, outcome, from where)."""
    principal = principal or getattr(request.state, "principal", None)
    audit: AuditLog = request.app.state.audit
    audit.record(
        AuditEvent(
            action=action,
            outcome=outcome,
            interface=interface,
            actor=actor or (principal.username if principal else "anonymous"),
            actor_organisation=principal.organisation if principal else None,
            role=principal.role.value if principal else None,
            source_address=request.client.host if request.client else None,
            resource=f"{request.method} {request.url.path}",
            study_instance_uid=study_instance_uid,
            patient_id=patient_id,
            detail=detail,
        )
    )
