"""Study-level records and queries as the rest of the code sees them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = ["InstanceRecord", "StoreOutcome", "StoredInstance", "StudyQuery", "StudyRecord"]


class StoreOutcome(StrEnum):
    STORED = "stored"  # a new SOP instance
    DUPLICATE = "duplicate"  # the same SOP instance with the same content: nothing changed
    REPLACED = "replaced"  # the same SOP instance with new content: new version, old kept


@dataclass(frozen=True, slots=True)
class StoredInstance:
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sha256: str
    size: int
    version: int
    outcome: StoreOutcome
    source_organisation: str


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    instance_number: int | None
    number_of_frames: int | None
    transfer_syntax_uid: str
    size: int
    sha256: str
    file_key: str
    version: int
    received_at: datetime
    calling_ae_title: str
    source_organisation: str


@dataclass(frozen=True, slots=True)
class StudyRecord:
    study_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_description: str
    referring_physician_name: str
    institution_name: str
    modalities_in_study: tuple[str, ...]
    source_organisation: str
    number_of_series: int
    number_of_instances: int


@dataclass(frozen=True, slots=True)
class StudyQuery:
    """Study-level matching keys, with DICOM matching semantics (PS3.4 C.2.2.2).

    Empty values match everything. ``patient_name`` and text keys accept the
    wildcards ``*`` and ``?``; dates accept ``YYYYMMDD``, ``A-B``, ``A-`` and
    ``-B``; ``study_instance_uids`` is a UID list.
    """

    patient_name: str = ""
    patient_id: str = ""
    study_date: str = ""
    accession_number: str = ""
    modality: str = ""
    study_description: str = ""
    study_instance_uids: tuple[str, ...] = ()
    source_organisations: tuple[str, ...] | None = None  # None: no restriction
    limit: int | None = None
    offset: int = 0
