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
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "Instance", "InstanceVersion", "Patient", "Series", "Study"]

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
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer_of_patient_id"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64))
    patient_name: Mapped[str] = mapped_column(PN, default="")
    patient_name_alphabetic: Mapped[str] = mapped_column(PN, default="", index=True)
    patient_name_ideographic: Mapped[str] = mapped_column(PN, default="", index=True)
    patient_name_phonetic: Mapped[str] = mapped_column(PN, default="", index=True)
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
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


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
