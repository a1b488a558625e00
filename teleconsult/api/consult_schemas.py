"""Request and response bodies of the consult, report and department routes.

Named as the FastAPI template names them (``ConsultCreate``,
``ConsultPublic`` ...); built from domain objects by the ``*_public``
functions, so no ORM row reaches a response.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from teleconsult.api.deps import PRINTABLE
from teleconsult.consults import SignatureCheck, Verification
from teleconsult.domain.consults import (
    Consult,
    ConsultAction,
    ConsultStatus,
    HistoryEntry,
    Target,
    TargetKind,
    Urgency,
)
from teleconsult.domain.report_templates import FieldKind, Label, ReportTemplate
from teleconsult.domain.reports import (
    Report,
    ReportSignature,
    ReportStatus,
    ReportVersion,
    SignatureRole,
    VersionKind,
)
from teleconsult.domain.signing import ALGORITHM, CANONICALISATION
from teleconsult.storage.consults import StudySummary

__all__ = [
    "AddendumCreate",
    "ConsultCreate",
    "ConsultPublic",
    "DepartmentMemberPublic",
    "DepartmentMemberUpdate",
    "ReasonBody",
    "ReassignBody",
    "ReportDraft",
    "ReportPublic",
    "SignBody",
    "SignaturePublic",
    "StudyLink",
    "TemplatePublic",
    "VerificationPublic",
    "VersionPublic",
    "consult_public",
    "report_public",
    "template_public",
    "verification_public",
    "version_public",
]

UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$"
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{1,63}$"

_STRICT = ConfigDict(extra="forbid")


# -- requests ------------------------------------------------------------------------


class ConsultCreate(BaseModel):
    """A consult on a stored study, or on a patient before the study arrives (one of the two)."""

    model_config = _STRICT

    study_instance_uid: str | None = Field(None, max_length=64, pattern=UID_PATTERN)
    patient_id: str | None = Field(None, min_length=1, max_length=64, pattern=PRINTABLE)
    issuer_of_patient_id: str | None = Field(
        None, max_length=64, pattern=PRINTABLE, description="default: the requester's organisation code"
    )
    urgency: Urgency
    question: str = Field(min_length=1, max_length=4000, description="the clinical question")
    target_organisation: str | None = Field(
        None, max_length=64, pattern=CODE_PATTERN, description="default: the top of the requester's tree"
    )
    target_department: str | None = Field(None, max_length=64, pattern=CODE_PATTERN)
    target_specialist: str | None = Field(None, max_length=64, pattern=USERNAME_PATTERN)


class ReasonBody(BaseModel):
    model_config = _STRICT

    reason: str = Field(min_length=1, max_length=1024, pattern=PRINTABLE)


class ReassignBody(BaseModel):
    model_config = _STRICT

    reason: str = Field(min_length=1, max_length=1024, pattern=PRINTABLE)
    target_organisation: str | None = Field(None, max_length=64, pattern=CODE_PATTERN)
    target_department: str | None = Field(None, max_length=64, pattern=CODE_PATTERN)
    target_specialist: str | None = Field(None, max_length=64, pattern=USERNAME_PATTERN)


class StudyLink(BaseModel):
    model_config = _STRICT

    study_instance_uid: str = Field(max_length=64, pattern=UID_PATTERN)


class ReportDraft(BaseModel):
    model_config = _STRICT

    template: str = Field(max_length=32, pattern=CODE_PATTERN, description="GET /api/report-templates")
    findings: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="{section: {field: text or number}}, as the template defines"
    )
    impression: str = Field("", max_length=8000)
    base_version: int | None = Field(
        None, ge=0, le=2**31 - 1, description="the version this edit starts from: 409 if another came since"
    )


class SignBody(BaseModel):
    model_config = _STRICT

    role: SignatureRole | None = Field(
        None, description="default: reviewing for specialists, performing for sonographers and doctors"
    )


class AddendumCreate(BaseModel):
    model_config = _STRICT

    text: str = Field(min_length=1, max_length=4000)
    reason: str = Field("", max_length=1024)


class DepartmentMemberUpdate(BaseModel):
    model_config = _STRICT

    lead: bool = Field(False, description="leads receive the escalation of overdue consults")


# -- responses -----------------------------------------------------------------------


class TargetPublic(BaseModel):
    kind: TargetKind
    organisation: str
    department: str | None
    specialist: str | None


class HistoryPublic(BaseModel):
    time: datetime
    actor: str
    action: ConsultAction
    from_status: ConsultStatus | None
    to_status: ConsultStatus
    target: TargetPublic | None
    assignee: str | None
    reason: str | None


class StudyPublic(BaseModel):
    study_instance_uid: str
    patient_name: str
    study_date: str
    study_description: str
    accession_number: str
    modalities: list[str]


class ConsultPublic(BaseModel):
    id: str
    status: ConsultStatus
    urgency: Urgency
    question: str
    study_instance_uid: str | None
    patient_id: str
    issuer_of_patient_id: str
    source_organisation: str
    requested_by: str
    requested_at: datetime
    target: TargetPublic
    assignee: str | None
    status_reason: str | None
    due_at: datetime
    overdue: bool = Field(description="past its deadline without a signed report")
    overdue_at: datetime | None = Field(description="when it was escalated as overdue")
    updated_at: datetime
    study: StudyPublic | None = None
    history: list[HistoryPublic] | None = Field(None, description="every step, oldest first (single consult)")


class SignaturePublic(BaseModel):
    version: int
    role: SignatureRole
    signer: str
    signer_name: str
    signer_organisation: str
    signed_at: datetime
    algorithm: str
    key_fingerprint: str
    signature: str = Field(description="base64 Ed25519 signature of the canonical payload")
    payload_sha256: str
    refers_to_version: int | None


class VersionPublic(BaseModel):
    version: int
    kind: VersionKind
    template: str
    content: dict[str, Any]
    content_sha256: str
    author: str
    author_organisation: str
    created_at: datetime
    signatures: list[SignaturePublic]


class ReportPublic(BaseModel):
    consult_id: str
    consult_status: ConsultStatus
    status: ReportStatus
    version: int = Field(description="the newest version")
    template: str
    findings: dict[str, dict[str, Any]] = Field(description="of the newest report version")
    impression: str
    final_version: int | None
    performing_signature_on_final: bool | None = Field(
        description="whether the performing signature covers the final version itself (else an earlier one)"
    )
    signatures: list[SignaturePublic]
    addenda: list[VersionPublic]
    versions: int = Field(description="number of versions: GET .../report/versions lists them")


class SignatureCheckPublic(BaseModel):
    version: int
    role: SignatureRole
    signer: str
    signed_at: datetime
    key_fingerprint: str
    valid: bool
    reason: str


class VerificationPublic(BaseModel):
    consult_id: str
    valid: bool = Field(description="every signature verifies over the stored report (and there is one)")
    final: bool
    checked_at: datetime
    algorithm: str = ALGORITHM
    canonicalisation: str = CANONICALISATION
    signatures: list[SignatureCheckPublic]


class LabelPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    zh_cn: str = Field(alias="zh-CN")
    en: str


class ChoicePublic(BaseModel):
    value: str
    label: LabelPublic


class FieldPublic(BaseModel):
    key: str
    label: LabelPublic
    kind: FieldKind
    unit: str | None = None
    choices: list[ChoicePublic] | None = None
    minimum: float | None = None
    maximum: float | None = None
    required: bool


class SectionPublic(BaseModel):
    key: str
    label: LabelPublic
    fields: list[FieldPublic]


class TemplatePublic(BaseModel):
    code: str
    label: LabelPublic
    modalities: list[str]
    sections: list[SectionPublic]
    impression_label: LabelPublic


class DepartmentMemberPublic(BaseModel):
    organisation: str
    department: str
    username: str
    lead: bool


# -- builders ------------------------------------------------------------------------


def _target(target: Target) -> TargetPublic:
    return TargetPublic(
        kind=target.kind,
        organisation=target.organisation,
        department=target.department,
        specialist=target.specialist,
    )


def consult_public(
    consult: Consult,
    now: datetime,
    *,
    study: StudySummary | None = None,
    history: list[HistoryEntry] | None = None,
) -> ConsultPublic:
    return ConsultPublic(
        id=consult.consult_id,
        status=consult.status,
        urgency=consult.urgency,
        question=consult.question,
        study_instance_uid=consult.study_instance_uid,
        patient_id=consult.patient_id,
        issuer_of_patient_id=consult.issuer_of_patient_id,
        source_organisation=consult.source_organisation,
        requested_by=consult.requested_by,
        requested_at=consult.requested_at,
        target=_target(consult.target),
        assignee=consult.assignee,
        status_reason=consult.status_reason,
        due_at=consult.due_at,
        overdue=consult.is_overdue(now),
        overdue_at=consult.overdue_at,
        updated_at=consult.updated_at,
        study=None
        if study is None
        else StudyPublic(
            study_instance_uid=study.study_instance_uid,
            patient_name=study.patient_name,
            study_date=study.study_date,
            study_description=study.study_description,
            accession_number=study.accession_number,
            modalities=list(study.modalities),
        ),
        history=None
        if history is None
        else [
            HistoryPublic(
                time=entry.time,
                actor=entry.actor,
                action=entry.action,
                from_status=entry.from_status,
                to_status=entry.to_status,
                target=None if entry.target is None else _target(entry.target),
                assignee=entry.assignee,
                reason=entry.reason,
            )
            for entry in history
        ],
    )


def signature_public(signature: ReportSignature) -> SignaturePublic:
    return SignaturePublic(
        version=signature.version,
        role=signature.role,
        signer=signature.signer,
        signer_name=signature.signer_name,
        signer_organisation=signature.signer_organisation,
        signed_at=signature.signed_at,
        algorithm=signature.algorithm,
        key_fingerprint=signature.key_fingerprint,
        signature=signature.signature,
        payload_sha256=signature.payload_sha256,
        refers_to_version=signature.refers_to_version,
    )


def version_public(report: Report, version: ReportVersion) -> VersionPublic:
    return VersionPublic(
        version=version.version,
        kind=version.kind,
        template=version.template,
        content=dict(version.content),
        content_sha256=version.content_sha256,
        author=version.author,
        author_organisation=version.author_organisation,
        created_at=version.created_at,
        signatures=[signature_public(s) for s in report.signatures_of(version.version)],
    )


def report_public(consult: Consult, report: Report) -> ReportPublic:
    body = next(v for v in reversed(report.versions) if v.kind is VersionKind.REPORT)
    final = report.final_version
    performing = report.latest_performing
    return ReportPublic(
        consult_id=consult.consult_id,
        consult_status=consult.status,
        status=report.status,
        version=report.current.version,
        template=body.template,
        findings=dict(body.content.get("findings", {})),
        impression=str(body.content.get("impression", "")),
        final_version=final.version if final else None,
        performing_signature_on_final=None
        if final is None or performing is None
        else performing.version == final.version,
        signatures=[signature_public(s) for s in report.signatures],
        addenda=[version_public(report, v) for v in report.addenda],
        versions=len(report.versions),
    )


def _check_public(check: SignatureCheck) -> SignatureCheckPublic:
    signature = check.signature
    return SignatureCheckPublic(
        version=signature.version,
        role=signature.role,
        signer=signature.signer,
        signed_at=signature.signed_at,
        key_fingerprint=signature.key_fingerprint,
        valid=check.valid,
        reason=check.reason,
    )


def verification_public(verification: Verification) -> VerificationPublic:
    return VerificationPublic(
        consult_id=verification.consult_id,
        valid=verification.valid,
        final=verification.final,
        checked_at=verification.checked_at,
        signatures=[_check_public(check) for check in verification.signatures],
    )


def _label(label: Label) -> LabelPublic:
    return LabelPublic(zh_cn=label.zh_cn, en=label.en)


def template_public(template: ReportTemplate) -> TemplatePublic:
    return TemplatePublic(
        code=template.code,
        label=_label(template.label),
        modalities=list(template.modalities),
        sections=[
            SectionPublic(
                key=section.key,
                label=_label(section.label),
                fields=[
                    FieldPublic(
                        key=spec.key,
                        label=_label(spec.label),
                        kind=spec.kind,
                        unit=spec.unit or None,
                        choices=[ChoicePublic(value=c.value, label=_label(c.label)) for c in spec.choices]
                        or None,
                        minimum=spec.minimum if spec.kind is FieldKind.NUMBER else None,
                        maximum=spec.maximum if spec.kind is FieldKind.NUMBER else None,
                        required=spec.required,
                    )
                    for spec in section.fields
                ],
            )
            for section in template.sections
        ],
        impression_label=_label(template.impression_label),
    )
