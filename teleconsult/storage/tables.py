"""SQL tables of the index. ORM rows never leave ``teleconsult.storage``.

DICOM dates and times are kept as their DA/TM strings: range matching on
``YYYYMMDD`` strings is lexicographic, and the index returns exactly what the
device sent. Patients are keyed by (PatientID, issuer): two townships may
both have a patient "0001", so an instance without an Issuer of Patient ID
gets its source organisation as issuer.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AuditRecord",
    "Base",
    "ConsultHistoryRow",
    "ConsultRow",
    "DepartmentMemberRow",
    "EcgMeasurementRow",
    "ForwardQueueEntry",
    "Instance",
    "InstanceVersion",
    "KioskObservationRow",
    "KioskPatientRow",
    "LiveSessionRow",
    "OrganisationRow",
    "Patient",
    "RefreshToken",
    "ReportOutputRow",
    "ReportSignatureRow",
    "ReportVersionRow",
    "Series",
    "SigningKeyRow",
    "Study",
    "UserAccount",
]

_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

UID = String(64)
PN = String(324)  # 5 components x 64 chars per group, three groups


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)


class Patient(Base):
    """A patient; the name groups are matched through migration 0006's case-insensitive indexes."""

    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer_of_patient_id"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64))
    patient_name: Mapped[str] = mapped_column(PN, default="")
    patient_name_alphabetic: Mapped[str] = mapped_column(PN, default="")
    patient_name_ideographic: Mapped[str] = mapped_column(PN, default="")
    patient_name_phonetic: Mapped[str] = mapped_column(PN, default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    specific_character_set: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Study(Base):
    __tablename__ = "studies"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.pk"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="", index=True)
    study_id: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    referring_physician_name: Mapped[str] = mapped_column(PN, default="")
    institution_name: Mapped[str] = mapped_column(String(64), default="")
    modalities_in_study: Mapped[str] = mapped_column(String(128), default="")
    source_organisation: Mapped[str] = mapped_column(String(64), index=True)
    specific_character_set: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Kept by the database's triggers (migration 0013), never written by the application.
    number_of_series: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    number_of_instances: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class Series(Base):
    __tablename__ = "series"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.pk"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(String(64), default="")
    series_date: Mapped[str] = mapped_column(String(8), default="")
    series_time: Mapped[str] = mapped_column(String(16), default="")
    body_part_examined: Mapped[str] = mapped_column(String(16), default="")
    source_organisation: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Kept by the database's triggers (migration 0013), never written by the application.
    number_of_instances: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class Instance(Base):
    """The current version of each SOP instance."""

    __tablename__ = "instances"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.pk"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str] = mapped_column(UID, index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    number_of_frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    specific_character_set: Mapped[str] = mapped_column(String(128), default="")
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    file_key: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer, default=1)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    source_organisation: Mapped[str] = mapped_column(String(64))


class InstanceVersion(Base):
    """Earlier contents of a SOP instance that was re-sent with other bytes.

    The file of each version stays in the store, so a version replaced by a
    later send can always be read back.
    """

    __tablename__ = "instance_versions"
    __table_args__ = (Index("ix_instance_versions_sop_instance_uid", "sop_instance_uid"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID)
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    file_key: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    source_organisation: Mapped[str] = mapped_column(String(64))
    superseded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ForwardQueueEntry(Base):
    """One instance to send to one peer: a row of the durable forwarding queue.

    Rows are written in the transaction that indexes the instance, so none is
    ever missing; the forwarder claims them (``sending``, ``claimed_by``),
    sends, then marks them ``sent`` or back to ``pending`` with the reason and
    the time of the next attempt, or ``failed`` after the last attempt. The
    file key and transfer syntax are copied here so a later version of the
    instance does not change what this row sends.
    """

    __tablename__ = "forward_queue"
    __table_args__ = (
        # claiming: due pending rows, then one (destination, study) group
        Index("ix_forward_queue_status_next_attempt_at", "status", "next_attempt_at"),
        Index(
            "ix_forward_queue_destination_ae_title_study_instance_uid",
            "destination_ae_title",
            "study_instance_uid",
        ),
        Index("ix_forward_queue_sop_instance_uid", "sop_instance_uid"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID)
    study_instance_uid: Mapped[str] = mapped_column(UID)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    file_key: Mapped[str] = mapped_column(String(200))
    destination_ae_title: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(64))
    # whose data it is: lets an API show each organisation its own rows
    source_organisation: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class OrganisationRow(Base):
    """A node of the community tree: county hospital, township centre, village clinic."""

    __tablename__ = "organisations"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    parent_pk: Mapped[int | None] = mapped_column(ForeignKey("organisations.pk"), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UserAccount(Base):
    __tablename__ = "users"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(32))
    organisation_pk: Mapped[int] = mapped_column(ForeignKey("organisations.pk"), index=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RefreshToken(Base):
    """A refresh token, kept only as its SHA-256; rotated on every use."""

    __tablename__ = "refresh_tokens"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.pk"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditRecord(Base):
    """One access to patient data, or an attempt. Append-only.

    ``chain_sha256`` links each row to the one before it (hash of the
    previous digest and this row's content), so a deleted or altered row
    breaks the chain that ``teleconsult audit verify`` walks.
    """

    __tablename__ = "audit_events"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    interface: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64), index=True)
    actor_organisation: Mapped[str | None] = mapped_column(String(64), nullable=True)
    role: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    resource: Mapped[str] = mapped_column(String(512))
    study_instance_uid: Mapped[str | None] = mapped_column(UID, nullable=True, index=True)
    patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    detail: Mapped[str] = mapped_column(String(1024), default="")
    chain_sha256: Mapped[str] = mapped_column(String(64))


class WorklistEntry(Base):
    """One scheduled procedure step that the Modality Worklist SCP offers to devices.

    A device queries these rows rather than someone typing a Chinese name on
    the device. Rows are never deleted: cancelling one sets ``status`` to
    ``CANCELLED`` so the SCP stops offering it but the order stays on record.
    As in ``patients``, the name is kept whole and per component group so a
    query matches it in any group. The description serves as both the
    Requested Procedure Description and the Scheduled Procedure Step
    Description.
    """

    __tablename__ = "worklist"
    __table_args__ = (
        # what the SCP reads: scheduled rows, usually for one day
        Index("ix_worklist_status_scheduled_start_date", "status", "scheduled_start_date"),
        Index("ix_worklist_accession_number", "accession_number"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    patient_id: Mapped[str] = mapped_column(String(64))
    patient_name: Mapped[str] = mapped_column(PN, default="")
    patient_name_alphabetic: Mapped[str] = mapped_column(PN, default="")
    patient_name_ideographic: Mapped[str] = mapped_column(PN, default="")
    patient_name_phonetic: Mapped[str] = mapped_column(PN, default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(16))
    study_instance_uid: Mapped[str] = mapped_column(UID)
    requested_procedure_id: Mapped[str] = mapped_column(String(16))
    procedure_description: Mapped[str] = mapped_column(String(64), default="")
    scheduled_procedure_step_id: Mapped[str] = mapped_column(String(16))
    modality: Mapped[str] = mapped_column(String(16))
    scheduled_station_ae_title: Mapped[str] = mapped_column(String(16))
    scheduled_start_date: Mapped[str] = mapped_column(String(8))
    scheduled_start_time: Mapped[str] = mapped_column(String(16))
    # whose order it is: the organisation the patient ID belongs to
    organisation: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# -- consults and reports (migration 0007) ---------------------------------------
# Users are named by username, as in the audit trail: accounts are disabled,
# never deleted, so a name always finds its account.


class ConsultRow(Base):
    """A request for a county specialist's opinion on a study, or on a patient before the study.

    ``consult_id`` is a random UUID: sequential numbers in URLs would tell one
    organisation how many consults others make. ``source_organisation`` is
    the organisation whose data it is (the study's, or the requester's for a
    patient consult): the requesting side's scope follows it.
    """

    __tablename__ = "consults"
    __table_args__ = (
        # the overdue check: open consults by deadline
        Index("ix_consults_status_due_at", "status", "due_at"),
        # pool and department work lists
        Index("ix_consults_target_organisation_status", "target_organisation", "status"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    consult_id: Mapped[str] = mapped_column(String(36), unique=True)
    study_instance_uid: Mapped[str | None] = mapped_column(UID, nullable=True, index=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64))
    source_organisation: Mapped[str] = mapped_column(String(64), index=True)
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    urgency: Mapped[str] = mapped_column(String(16))
    question: Mapped[str] = mapped_column(Text)
    target_kind: Mapped[str] = mapped_column(String(16))
    target_organisation: Mapped[str] = mapped_column(String(64))
    target_department: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target_specialist: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    assignee: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    overdue_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConsultHistoryRow(Base):
    """One step of a consult: requested, accepted, reassigned (with the new target), overdue ...

    Rows are only ever added, so a reassignment leaves the earlier target on record.
    """

    __tablename__ = "consult_history"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    consult_pk: Mapped[int] = mapped_column(ForeignKey("consults.pk"), index=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(String(16))
    target_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    target_organisation: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target_department: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target_specialist: Mapped[str | None] = mapped_column(String(64), nullable=True)
    assignee: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(1024), nullable=True)


class DepartmentMemberRow(Base):
    """A user's membership of a department of an organisation; ``lead`` receives escalations.

    A department exists while it has members: consults name it by
    (organisation, department code), as hospital staff do.
    """

    __tablename__ = "department_members"
    __table_args__ = (UniqueConstraint("organisation", "department", "username"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    organisation: Mapped[str] = mapped_column(String(64))
    department: Mapped[str] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String(64), index=True)
    lead: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReportVersionRow(Base):
    """One version of a consult's report. Append-only (database triggers, migration 0007).

    Every saved draft is a new version, and an addendum is one too, so the
    whole history can always be read back. ``content`` is the canonical JSON
    (RFC 8785) that signatures cover; ``content_sha256`` its digest.
    """

    __tablename__ = "report_versions"
    __table_args__ = (UniqueConstraint("consult_pk", "version"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    consult_pk: Mapped[int] = mapped_column(ForeignKey("consults.pk"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(32))
    content: Mapped[str] = mapped_column(Text)
    content_sha256: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(64))
    author_organisation: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReportSignatureRow(Base):
    """A digital signature of one report version in one role. Append-only (migration 0007).

    One signature per (version, role): the database refuses a second one even
    if two requests race. ``refers_to_version`` is the performing signature's
    version a reviewing signature co-signs, or the version an addendum amends.
    """

    __tablename__ = "report_signatures"
    __table_args__ = (UniqueConstraint("consult_pk", "version", "role"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    consult_pk: Mapped[int] = mapped_column(ForeignKey("consults.pk"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    signer: Mapped[str] = mapped_column(String(64))
    signer_name: Mapped[str] = mapped_column(String(128), default="")
    signer_organisation: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    algorithm: Mapped[str] = mapped_column(String(16))
    key_fingerprint: Mapped[str] = mapped_column(String(80))
    signature: Mapped[str] = mapped_column(String(256))
    payload_sha256: Mapped[str] = mapped_column(String(64))
    refers_to_version: Mapped[int | None] = mapped_column(Integer, nullable=True)


class SigningKeyRow(Base):
    """A user's report-signing key pair; the private key sealed with a key derived from the secret key.

    Public keys are kept after a key is retired, so old signatures still verify.
    """

    __tablename__ = "signing_keys"
    __table_args__ = (
        # at most one key in use per user, even when two first signatures race
        Index(
            "uq_signing_keys_username_active",
            "username",
            unique=True,
            sqlite_where=text("retired_at IS NULL"),
            postgresql_where=text("retired_at IS NULL"),
        ),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    algorithm: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[str] = mapped_column(String(80), unique=True)
    public_key: Mapped[str] = mapped_column(String(128))
    sealed_private_key: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# -- outputs of signed reports (migration 0008) ----------------------------------


class ReportOutputRow(Base):
    """The outputs (PDF, DICOM SR, Encapsulated PDF) of one signed version of a consult's report.

    One row per signed version (the final one, then each signed addendum):
    the reviewing signature asks for it, the output worker claims it
    (``producing``), and marks it ``done`` with what it made, or ``failed``
    with the reason and the time of the next attempt. The PDF is kept here,
    the DICOM objects in the study (their UIDs here). ``patient_key`` is the
    patient's FHIR resource id, so a FHIR search by patient finds the rows.
    """

    __tablename__ = "report_outputs"
    __table_args__ = (
        UniqueConstraint("consult_pk", "version"),
        # the worker: rows due for an attempt
        Index("ix_report_outputs_status_next_attempt_at", "status", "next_attempt_at"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    consult_pk: Mapped[int] = mapped_column(ForeignKey("consults.pk"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    patient_key: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    study_instance_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    sr_series_instance_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    sr_sop_instance_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    pdf_series_instance_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    pdf_sop_instance_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    pdf_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pdf: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    produced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# -- referrals (migration 0010) --------------------------------------------------


class ReferralRow(Base):
    """A referral issued from a consult: up to a higher level, or down for follow-up.

    Study, patient and urgency are read from the consult, so linking a
    patient consult's study later shows on its referrals too. ``status`` and
    ``status_note`` are the current state; how it got there is in
    ``referral_history``.
    """

    __tablename__ = "referrals"
    __table_args__ = (
        # work lists: addressed to an organisation, issued by one
        Index("ix_referrals_target_organisation_status", "target_organisation", "status"),
        Index("ix_referrals_issuing_organisation_status", "issuing_organisation", "status"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(36), unique=True)
    consult_pk: Mapped[int] = mapped_column(ForeignKey("consults.pk"), index=True)
    direction: Mapped[str] = mapped_column(String(8))
    green_channel: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(1024))
    clinical_summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    instructions: Mapped[str | None] = mapped_column(Text, nullable=True)
    target_organisation: Mapped[str] = mapped_column(String(64))
    target_department: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target_specialist: Mapped[str | None] = mapped_column(String(64), nullable=True)
    issued_by: Mapped[str] = mapped_column(String(64))
    issuing_organisation: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))
    status_note: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReferralHistoryRow(Base):
    """One step of a referral, with actor and organisation. Append-only (triggers, migration 0010)."""

    __tablename__ = "referral_history"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_pk: Mapped[int] = mapped_column(ForeignKey("referrals.pk"), index=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(64))
    actor_organisation: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(String(1024), nullable=True)


# -- health kiosks (migration 0011) ------------------------------------------------


class KioskPatientRow(Base):
    """A villager measured by a kiosk, found again by the keyed hash of their resident ID number.

    The number itself is only kept encrypted (Fernet) and masked; the hash
    is an HMAC under a key derived from the service secret
    (``device_adapters/kiosk/protection.py``). ``index_patient_pk`` links
    the patient index entry with that PatientID in the measuring
    organisation's scope, once one exists. The name is the latest a kiosk
    read from the card.
    """

    __tablename__ = "kiosk_patients"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_key: Mapped[str] = mapped_column(String(32), unique=True)
    resident_id_hmac: Mapped[str] = mapped_column(String(64), unique=True)
    resident_id_encrypted: Mapped[str] = mapped_column(Text)
    resident_id_masked: Mapped[str] = mapped_column(String(18))
    organisation: Mapped[str] = mapped_column(String(32))
    name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    birth_date: Mapped[str] = mapped_column(String(8))
    sex: Mapped[str] = mapped_column(String(8))
    index_patient_pk: Mapped[int | None] = mapped_column(ForeignKey("patients.pk"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class KioskObservationRow(Base):
    """One kiosk measurement, in its canonical unit. Append-only (triggers, migration 0011).

    A message delivered twice (MQTT QoS 1 is at least once) finds its row by
    (device, time, kind) and is answered as a duplicate. Values are JSON
    (component -> value), as the device reported them in ``reported_json``.
    """

    __tablename__ = "kiosk_observations"
    __table_args__ = (
        UniqueConstraint("device_id", "measured_at", "kind"),
        Index("ix_kiosk_observations_patient_pk_measured_at", "patient_pk", "measured_at"),
        Index("ix_kiosk_observations_organisation_measured_at", "organisation", "measured_at"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    observation_id: Mapped[str] = mapped_column(String(36), unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("kiosk_patients.pk"))
    organisation: Mapped[str] = mapped_column(String(32))
    device_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(16))
    measured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    result_json: Mapped[str] = mapped_column(Text)
    unit: Mapped[str] = mapped_column(String(16))
    context: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reported_json: Mapped[str] = mapped_column(Text)
    alerts_json: Mapped[str] = mapped_column(Text)
    sop_instance_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    study_instance_uid: Mapped[str | None] = mapped_column(UID, nullable=True)


# -- ECG triage (migration 0012) --------------------------------------------------


class EcgMeasurementRow(Base):
    """What the ECG analyser made of one version of one stored ECG instance. Append-only (0012).

    One row per (SOP instance, version), written once: ``analysed`` with the
    measurements and the screen (JSON), ``not_analysable`` or ``failed``
    with the reason. A positive screen's critical consult is made in the
    same transaction (``consult_id``), so analysing an ECG twice cannot
    make two; ``note`` says why none was made when no target could take it.
    The unique key also serves the analyser's search for ECG instances
    that have no row yet (an anti-join from ``instances``).
    """

    __tablename__ = "ecg_measurements"
    __table_args__ = (UniqueConstraint("sop_instance_uid", "version"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID)
    version: Mapped[int] = mapped_column(Integer)
    study_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    series_instance_uid: Mapped[str] = mapped_column(UID)
    source_organisation: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    algorithm: Mapped[str] = mapped_column(String(128))
    measurements: Mapped[str | None] = mapped_column(Text, nullable=True)
    screen: Mapped[str | None] = mapped_column(Text, nullable=True)
    positive: Mapped[bool] = mapped_column(Boolean, default=False)
    consult_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    note: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    analysed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# -- which replica holds which live session (migration 0014) ----------------------


class LiveSessionRow(Base):
    """A live session and the replica whose memory holds it, for the other replicas to relay to.

    The media of a session (its peer connections) live in one process; the
    row tells any replica where. At most one running row per consult (a
    partial unique index), so two replicas asked at once cannot both start
    one. ``lease_until`` is pushed forward by the holder while it runs: a
    row whose lease lapsed belongs to a replica that died, and is ended by
    the next one that starts a session of the consult. Ended rows are kept:
    the holder still serves the session's state and its recording.
    """

    __tablename__ = "live_sessions"
    __table_args__ = (
        Index(
            "uq_live_sessions_consult_id_running",
            "consult_id",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
        Index("ix_live_sessions_replica_url_ended_at", "replica_url", "ended_at"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), unique=True)
    consult_id: Mapped[str] = mapped_column(String(64))
    replica_url: Mapped[str] = mapped_column(String(256))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
