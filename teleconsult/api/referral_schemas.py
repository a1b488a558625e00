"""Request and response bodies of the referral routes, built from domain objects only."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from teleconsult.api.consult_schemas import CODE_PATTERN, USERNAME_PATTERN
from teleconsult.domain.consults import Urgency
from teleconsult.domain.referrals import (
    MAX_NOTE,
    MAX_REASON,
    MAX_SUMMARY,
    Direction,
    Referral,
    ReferralAction,
    ReferralStatus,
    ReferralStep,
)

__all__ = [
    "ReferralCreate",
    "ReferralNote",
    "ReferralOutcome",
    "ReferralPublic",
    "ReferralReason",
    "referral_public",
]

# Free text: lines and tabs, but no other control characters (PostgreSQL refuses NUL).
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"

# Request examples are given in the descriptions: machine-readable ``examples`` on request bodies
# would be replayed by the schema fuzzer (tests/test_openapi_fuzz.py), which generates every
# request itself. The response model carries its example as ``examples``.
_STRICT = ConfigDict(extra="forbid")


class ReferralCreate(BaseModel):
    """A referral of the consult's patient: up to a higher level, or down for follow-up.

    Up, green channel: ``{"direction": "up", "green_channel": true,
    "reason": "急性心肌梗死（下壁STEMI），需急诊PCI。",
    "clinical_summary": "胸痛2小时，II、III、aVF导联ST段抬高。",
    "target_organisation": "COUNTY", "target_department": "CARDIO"}``

    Down, for follow-up: ``{"direction": "down", "reason": "病情稳定，转回乡镇卫生院随访。",
    "instructions": "三个月后复查腹部超声。", "target_organisation": "TOWN01"}``
    """

    model_config = _STRICT

    direction: Direction = Field(
        description="up: to an organisation above the patient's; down: back to the requesting "
        "organisation or one below it"
    )
    reason: str = Field(min_length=1, max_length=MAX_REASON, pattern=TEXT_PATTERN)
    green_channel: bool | None = Field(
        None,
        description="up only (true on a down referral is refused); default: true for up referrals of "
        "critical and stat consults, false otherwise",
    )
    clinical_summary: str | None = Field(None, max_length=MAX_SUMMARY, pattern=TEXT_PATTERN)
    instructions: str | None = Field(
        None, max_length=MAX_SUMMARY, pattern=TEXT_PATTERN, description="for the target: care, follow-up"
    )
    target_organisation: str | None = Field(
        None,
        max_length=64,
        pattern=CODE_PATTERN,
        description="default: up, the top of the patient's tree; down, the organisation that "
        "requested the consult",
    )
    target_department: str | None = Field(None, max_length=64, pattern=CODE_PATTERN)
    target_specialist: str | None = Field(
        None,
        max_length=64,
        pattern=USERNAME_PATTERN,
        description="a named clinician of the target organisation: only they (or an admin) accept",
    )


class ReferralNote(BaseModel):
    """Accepting, with an optional note (a bed reserved, the team called): ``{"note": "已通知导管室"}``."""

    model_config = _STRICT

    note: str | None = Field(None, max_length=MAX_NOTE, pattern=TEXT_PATTERN)


class ReferralReason(BaseModel):
    """Declining (the target side) or cancelling (the issuing side), e.g.

    ``{"reason": "患者已自行前往市医院。"}``.
    """

    model_config = _STRICT

    reason: str = Field(min_length=1, max_length=MAX_NOTE, pattern=TEXT_PATTERN)


class ReferralOutcome(BaseModel):
    """Completing: how the visit or follow-up went, ``{"note": "急诊PCI成功，转入CCU。"}``."""

    model_config = _STRICT

    note: str = Field(min_length=1, max_length=MAX_NOTE, pattern=TEXT_PATTERN)


class ReferralTargetPublic(BaseModel):
    organisation: str
    department: str | None
    specialist: str | None


class ReferralStepPublic(BaseModel):
    time: datetime
    actor: str
    actor_organisation: str
    action: ReferralAction
    from_status: ReferralStatus | None
    to_status: ReferralStatus
    note: str | None


class ReferralPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0f3a9d7e-5b1c-4c1e-9a55-2d1f3b7c8e90",
                    "consult_id": "6f0c2b8e-1d4a-4f7b-8c3e-9a0b1c2d3e4f",
                    "status": "accepted",
                    "direction": "up",
                    "green_channel": True,
                    "urgency": "critical",
                    "reason": "急性心肌梗死（下壁STEMI），需急诊PCI。",
                    "clinical_summary": None,
                    "instructions": None,
                    "study_instance_uid": "1.2.826.0.1.3680043.8.498.1",
                    "patient_id": "P0001",
                    "issuer_of_patient_id": "TOWN01",
                    "patient_organisation": "TOWN01",
                    "target": {"organisation": "COUNTY", "department": None, "specialist": None},
                    "issued_by": "zhang",
                    "issuing_organisation": "COUNTY",
                    "issued_at": "2026-11-24T08:05:00Z",
                    "status_note": "已通知导管室",
                    "updated_at": "2026-11-24T08:07:00Z",
                    "history": [
                        {
                            "time": "2026-11-24T08:05:00Z",
                            "actor": "zhang",
                            "actor_organisation": "COUNTY",
                            "action": "issued",
                            "from_status": None,
                            "to_status": "issued",
                            "note": "急性心肌梗死（下壁STEMI），需急诊PCI。",
                        },
                        {
                            "time": "2026-11-24T08:07:00Z",
                            "actor": "er-doctor",
                            "actor_organisation": "COUNTY",
                            "action": "accepted",
                            "from_status": "issued",
                            "to_status": "accepted",
                            "note": "已通知导管室",
                        },
                    ],
                }
            ]
        }
    )

    id: str
    consult_id: str
    status: ReferralStatus
    direction: Direction
    green_channel: bool
    urgency: Urgency = Field(description="the consult's urgency")
    reason: str
    clinical_summary: str | None
    instructions: str | None
    study_instance_uid: str | None = Field(description="the consult's study (null for a patient consult)")
    patient_id: str
    issuer_of_patient_id: str
    patient_organisation: str = Field(description="the organisation whose patient it is")
    target: ReferralTargetPublic
    issued_by: str
    issuing_organisation: str
    issued_at: datetime
    status_note: str | None = Field(
        description="the latest step's note: acceptance note, decline or cancel reason, outcome"
    )
    updated_at: datetime
    history: list[ReferralStepPublic] = Field(description="every step, oldest first, with actor and time")


def _step(step: ReferralStep) -> ReferralStepPublic:
    return ReferralStepPublic(
        time=step.time,
        actor=step.actor,
        actor_organisation=step.actor_organisation,
        action=step.action,
        from_status=step.from_status,
        to_status=step.to_status,
        note=step.note,
    )


def referral_public(referral: Referral, history: list[ReferralStep]) -> ReferralPublic:
    return ReferralPublic(
        id=referral.referral_id,
        consult_id=referral.consult_id,
        status=referral.status,
        direction=referral.direction,
        green_channel=referral.green_channel,
        urgency=referral.urgency,
        reason=referral.reason,
        clinical_summary=referral.clinical_summary,
        instructions=referral.instructions,
        study_instance_uid=referral.study_instance_uid,
        patient_id=referral.patient_id,
        issuer_of_patient_id=referral.issuer_of_patient_id,
        patient_organisation=referral.patient_organisation,
        target=ReferralTargetPublic(
            organisation=referral.target.organisation,
            department=referral.target.department,
            specialist=referral.target.specialist,
        ),
        issued_by=referral.issued_by,
        issuing_organisation=referral.issuing_organisation,
        issued_at=referral.issued_at,
        status_note=referral.status_note,
        updated_at=referral.updated_at,
        history=[_step(step) for step in history],
    )
