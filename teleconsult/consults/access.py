"""Who may see a consult, and the studies a consult shares with those it is addressed to.

A county specialist asked for an opinion on another organisation's study
must be able to read that study although it is outside their
organisation's scope: the consult grants it (``consult_grants_study``) for
as long as the consult is not declined or cancelled. DICOMweb's study
lookup calls it after the organisation check fails.
"""

from __future__ import annotations

from sqlalchemy import Engine

from teleconsult.domain.consults import ConsultViewer
from teleconsult.domain.identity import Principal
from teleconsult.errors import NotFoundError
from teleconsult.storage.consults import ConsultStore
from teleconsult.storage.departments import DepartmentStore

__all__ = ["HiddenError", "consult_grants_study", "viewer_of"]


class HiddenError(NotFoundError):
    """Exists, but outside the caller's view: answered exactly as "not found" (same code and message).

    Carries what the audit trail records of the refused attempt.
    """

    def __init__(
        self, message: str, *, study_instance_uid: str | None, patient_id: str | None, detail: str
    ) -> None:
        super().__init__(message)
        self.study_instance_uid = study_instance_uid
        self.patient_id = patient_id
        self.detail = detail


def viewer_of(principal: Principal, departments: DepartmentStore) -> ConsultViewer:
    memberships = departments.memberships(principal.username)
    return ConsultViewer(
        username=principal.username,
        role=principal.role,
        organisation=principal.organisation,
        scope=principal.visible_organisations,
        departments=frozenset((m.organisation, m.department) for m in memberships),
        leads=frozenset((m.organisation, m.department) for m in memberships if m.lead),
    )


def consult_grants_study(engine: Engine, principal: Principal, study_instance_uid: str) -> bool:
    """Whether a consult on the study lets ``principal`` read it (outside their organisation's scope)."""
    viewer = viewer_of(principal, DepartmentStore(engine))
    return ConsultStore(engine).grants_study(viewer, study_instance_uid)
