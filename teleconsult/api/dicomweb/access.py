"""Who may read which study over DICOMweb: path UIDs checked, instances found within scope.

A study belongs to the organisation it came from (its source organisation);
a caller sees the studies of its scope (its organisation and those below).
Outside that scope a study answers exactly as a study that does not exist
(404 with the same message), so existence does not leak, and the attempt is
audited as DENIED.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Path, Request

from teleconsult.api.auditing import audit_request
from teleconsult.audit import AuditOutcome, Interface
from teleconsult.consults.access import consult_grants_study
from teleconsult.domain.identity import Principal
from teleconsult.domain.uids import check_uid
from teleconsult.errors import NotFoundError
from teleconsult.storage.matching import Level
from teleconsult.storage.store import InstanceStore

__all__ = [
    "UID_PATTERN",
    "InstancePath",
    "InstanceRef",
    "Located",
    "SeriesPath",
    "StudyPath",
    "locate",
    "path_uid",
    "study_owner",
]

# PS3.5 9.1, as ``domain/uids.py`` checks it: documented in the OpenAPI schema
# only, so a bad UID still gets our 400 (invalid-uid) naming the attribute.
UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$"


def _uid_path(name: str) -> Any:
    return Path(
        description=f"{name} (digits and dots, at most 64 characters; anything else is 400)",
        json_schema_extra={"pattern": UID_PATTERN, "maxLength": 64},
    )


StudyPath = Annotated[str, _uid_path("Study Instance UID")]
SeriesPath = Annotated[str, _uid_path("Series Instance UID")]
InstancePath = Annotated[str, _uid_path("SOP Instance UID")]


def path_uid(value: str, name: str) -> str:
    """A UID from the path, or ``InvalidUIDError`` (400): nothing else reaches SQL or the disk."""
    return check_uid(value, name)


@dataclass(frozen=True, slots=True)
class InstanceRef:
    """One stored instance: its UIDs, encoding and file."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    number_of_frames: int | None
    file_key: str
    size: int  # bytes of the stored Part 10 file


@dataclass(frozen=True, slots=True)
class Located:
    """The instances a request addresses, all of one study the caller may see."""

    study_instance_uid: str
    patient_id: str
    instances: list[InstanceRef]


def _describe(study: str, series: str | None, instance: str | None) -> str:
    if instance is not None:
        return f"instance {instance} of series {series} of study {study}"
    if series is not None:
        return f"series {series} of study {study}"
    return f"study {study}"


def locate(
    request: Request,
    store: InstanceStore,
    principal: Principal,
    action: str,
    *,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> Located:
    """The instances under a study/series/instance path, or ``NotFoundError`` (404).

    Runs one index query at IMAGE level (the same matching as C-FIND with
    unique keys), unrestricted, then checks the study's organisation, so an
    out-of-scope attempt can be told apart in the audit trail but not by the
    caller.
    """
    study = path_uid(study, "Study Instance UID")
    if series is not None:
        series = path_uid(series, "Series Instance UID")
    if instance is not None:
        instance = path_uid(instance, "SOP Instance UID")
    rows = store.index.locate(study, series, instance)
    missing = NotFoundError(
        f"{_describe(study, series, instance)} is not stored, or not visible to {principal.username}"
    )
    if not rows:
        raise missing
    patient_id = str(rows[0].patient_id or "")
    owner = str(rows[0].source_organisation)
    if not principal.can_see(owner) and not consult_grants_study(store.index.engine, principal, study):
        audit_request(
            request,
            action,
            AuditOutcome.DENIED,
            principal=principal,
            interface=Interface.DICOMWEB,
            study_instance_uid=study,
            patient_id=patient_id,
            detail=f"study of organisation {owner} is outside the caller's scope",
        )
        raise missing
    return Located(
        study_instance_uid=study,
        patient_id=patient_id,
        instances=[_instance_ref(row) for row in rows],
    )


def _instance_ref(row: Any) -> InstanceRef:
    return InstanceRef(
        study_instance_uid=row.study_instance_uid,
        series_instance_uid=row.series_instance_uid,
        sop_instance_uid=row.sop_instance_uid,
        sop_class_uid=row.sop_class_uid,
        transfer_syntax_uid=row.transfer_syntax_uid,
        number_of_frames=row.number_of_frames,
        file_key=row.file_key,
        size=int(row.size),
    )


def study_owner(store: InstanceStore, study: str) -> tuple[str, str] | None:
    """(source organisation, patient ID) of a stored study, whoever asks; for auditing denials."""
    rows = store.index.query(Level.STUDY, {"StudyInstanceUID": study}, limit=1)
    if not rows:
        return None
    return str(rows[0]["_source_organisation"]), str(rows[0]["PatientID"] or "")
