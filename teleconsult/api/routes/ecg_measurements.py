"""The ECG analyser's results over REST: ``GET /api/studies/{study}/ecg-measurements``.

One entry per ECG instance of the study (its current version), with the
analyser's row (analysed, not analysable or failed, with the reason), or
``pending`` while it has none yet; earlier versions' rows follow with
``current: false``. Read like the study itself: the caller's organisation
scope must hold the study's organisation, or a consult must share the
study with them; otherwise 404, as for a study that does not exist, and the
attempt is audited as denied. Every read is audited (``study.read``).

This router's lifespan runs the analyser (``teleconsult/api/ecg_triage.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from device_adapters.ecg.triage import CONFIRMATION, ECG_SOP_CLASS_UIDS
from teleconsult.api.auditing import audit_request
from teleconsult.api.deps import PrincipalDep, StoreDep
from teleconsult.api.dicomweb.access import StudyPath, path_uid, study_owner
from teleconsult.api.ecg_triage import triage_lifespan
from teleconsult.api.openapi import problem_response
from teleconsult.audit import AuditOutcome
from teleconsult.consults.access import consult_grants_study
from teleconsult.errors import NotFoundError
from teleconsult.storage.ecg_measurements import EcgMeasurementRecord, EcgMeasurementStore

__all__ = ["router"]

router = APIRouter(prefix="/api/studies", tags=["ECG triage"], lifespan=triage_lifespan)

_READ = "study.read"


class EcgMeasurementPublic(BaseModel):
    """What the analyser made of one version of one ECG instance."""

    sop_instance_uid: str
    series_instance_uid: str
    version: int
    current: bool = Field(description="whether this is the instance's current version")
    status: str = Field(
        description="analysed; not_analysable or failed (reason says why); pending while not yet analysed"
    )
    reason: str | None = Field(description="why it could not be measured (not_analysable, failed)")
    algorithm: str | None
    analysed_at: datetime | None
    measurements: dict[str, Any] | None = Field(
        description=(
            "heart_rate_bpm, rr_ms, pr_ms, qrs_ms, qt_ms, qtc_bazett_ms, qtc_fridericia_ms, qrs_axis_deg, "
            "st_j_mv / st_j40_mv / st_j60_mv (per lead, mV above the PR segment), beats, seconds"
        )
    )
    screen: dict[str, Any] | None = Field(
        description="positive, stemi, territories, elevated_mv, rhythm, thresholds used and reason"
    )
    positive: bool
    consult_id: str | None = Field(description="the critical consult a positive screen opened")
    note: str | None = Field(description="why a positive screen opened no consult")
    confirmation: str = Field(CONFIRMATION, description="every finding is decision support")


class EcgMeasurementsPublic(BaseModel):
    study_instance_uid: str
    ecgs: list[EcgMeasurementPublic]


def _public(record: EcgMeasurementRecord, current: bool) -> EcgMeasurementPublic:
    return EcgMeasurementPublic(
        sop_instance_uid=record.sop_instance_uid,
        series_instance_uid=record.series_instance_uid,
        version=record.version,
        current=current,
        status=record.status.value,
        reason=record.reason,
        algorithm=record.algorithm,
        analysed_at=record.analysed_at,
        measurements=record.measurements,
        screen=record.screen,
        positive=record.positive,
        consult_id=record.consult_id,
        note=record.note,
    )


@router.get(
    "/{study}/ecg-measurements",
    response_model=EcgMeasurementsPublic,
    summary="Measurements and triage screen of the study's ECGs (decision support)",
    responses={
        400: problem_response("The Study Instance UID is not a valid UID"),
        404: problem_response("No such study, or outside the caller's organisations (the same answer)"),
        503: problem_response("The index cannot be reached; try again later"),
    },
)
def read_ecg_measurements(
    study: StudyPath, request: Request, principal: PrincipalDep, store: StoreDep
) -> EcgMeasurementsPublic:
    uid = path_uid(study, "Study Instance UID")
    owner = study_owner(store, uid)
    missing = NotFoundError(f"study {uid} is not stored, or not visible to {principal.username}")
    if owner is None:
        raise missing
    organisation, patient_id = owner
    if not principal.can_see(organisation) and not consult_grants_study(store.index.engine, principal, uid):
        audit_request(
            request, _READ, AuditOutcome.DENIED, principal=principal, study_instance_uid=uid,
            patient_id=patient_id,
            detail=f"ECG measurements of a study of organisation {organisation}, outside the caller's scope",
        )  # fmt: skip
        raise missing
    instances = [i for i in store.index.instances_of_study(uid) if i.sop_class_uid in ECG_SOP_CLASS_UIDS]
    rows = EcgMeasurementStore(store.index.engine).of_study(uid)
    by_version = {(r.sop_instance_uid, r.version): r for r in rows}
    current = {(i.sop_instance_uid, i.version) for i in instances}
    ecgs: list[EcgMeasurementPublic] = []
    for instance in instances:
        row = by_version.get((instance.sop_instance_uid, instance.version))
        if row is not None:
            ecgs.append(_public(row, True))
            continue
        ecgs.append(
            EcgMeasurementPublic(
                sop_instance_uid=instance.sop_instance_uid,
                series_instance_uid=instance.series_instance_uid,
                version=instance.version,
                current=True,
                status="pending",
                reason=None,
                algorithm=None,
                analysed_at=None,
                measurements=None,
                screen=None,
                positive=False,
                consult_id=None,
                note=None,
            )
        )
    ecgs.extend(_public(r, False) for r in rows if (r.sop_instance_uid, r.version) not in current)
    audit_request(
        request, _READ, AuditOutcome.SUCCESS, principal=principal, study_instance_uid=uid,
        patient_id=patient_id, detail=f"ECG measurements of {len(instances)} ECG instance(s)",
    )  # fmt: skip
    return EcgMeasurementsPublic(study_instance_uid=uid, ecgs=ecgs)
