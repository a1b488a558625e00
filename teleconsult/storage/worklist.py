"""The modality worklist: scheduled procedure steps a device fetches instead of typing them.

A township ultrasound asks the gateway's Modality Worklist SCP for today's
patients and gets name, ID, birth date, sex, accession number and Study
Instance UID, so nobody types a Chinese name on the device and the images
come back with the accession number and study UID the order was given.

Items are created by the product (``add_item``; the CLI today, the
authenticated HTTP API later), listed, cancelled and queried here. A
cancelled item is kept with status ``CANCELLED`` and is never offered again.

Matching follows PS3.4 K.6 with the same semantics as C-FIND and QIDO-RS
(``teleconsult.storage.matching``): empty value = universal, ``*``/``?``
wildcards, ``A-B``/``A-``/``-B`` ranges on dates and times, value lists on
UIDs and codes, person names in any component group and case-insensitively.
Only ``SCHEDULED`` items ever match a query.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update

from teleconsult.domain.instances import person_name_groups
from teleconsult.domain.uids import check_uid, generate_uid
from teleconsult.errors import InvalidWorklistItemError, NotFoundError
from teleconsult.storage.index import Index

# The private helpers are imported on purpose: one implementation of DICOM
# matching, so a worklist query and a C-FIND answer a pattern alike.
from teleconsult.storage.matching import AttributeKind, match_person_name, match_range, match_text
from teleconsult.storage.tables import WorklistEntry

__all__ = [
    "MATCHING_KEYWORDS",
    "InvalidWorklistItemError",
    "PatientSex",
    "WorklistItem",
    "WorklistStatus",
    "add_item",
    "cancel_item",
    "get_item",
    "list_items",
    "query_items",
]

logger = logging.getLogger(__name__)

_worklist = WorklistEntry.__table__


class WorklistStatus(StrEnum):
    """Status of a scheduled procedure step (SCHEDULED is the DICOM defined term)."""

    SCHEDULED = "SCHEDULED"
    CANCELLED = "CANCELLED"


class PatientSex(StrEnum):
    """Patient's Sex (0010,0040) enumerated values."""

    MALE = "M"
    FEMALE = "F"
    OTHER = "O"


# keyword -> (how it matches, column). Scheduled Procedure Step Sequence
# sub-keys are listed flat: their keywords do not occur at the top level.
MATCHING_KEYWORDS: dict[str, tuple[AttributeKind, Any]] = {
    "PatientName": (AttributeKind.PERSON_NAME, _worklist.c.patient_name),
    "PatientID": (AttributeKind.TEXT, _worklist.c.patient_id),
    "IssuerOfPatientID": (AttributeKind.TEXT, _worklist.c.organisation),
    "PatientBirthDate": (AttributeKind.DATE, _worklist.c.patient_birth_date),
    "PatientSex": (AttributeKind.CODE, _worklist.c.patient_sex),
    "AccessionNumber": (AttributeKind.TEXT, _worklist.c.accession_number),
    "StudyInstanceUID": (AttributeKind.UID, _worklist.c.study_instance_uid),
    "RequestedProcedureID": (AttributeKind.TEXT, _worklist.c.requested_procedure_id),
    "RequestedProcedureDescription": (AttributeKind.TEXT_CI, _worklist.c.procedure_description),
    "Modality": (AttributeKind.CODE, _worklist.c.modality),
    "ScheduledStationAETitle": (AttributeKind.CODE, _worklist.c.scheduled_station_ae_title),
    "ScheduledProcedureStepStartDate": (AttributeKind.DATE, _worklist.c.scheduled_start_date),
    "ScheduledProcedureStepStartTime": (AttributeKind.TIME, _worklist.c.scheduled_start_time),
    "ScheduledProcedureStepDescription": (AttributeKind.TEXT_CI, _worklist.c.procedure_description),
    "ScheduledProcedureStepID": (AttributeKind.TEXT, _worklist.c.scheduled_procedure_step_id),
    "ScheduledProcedureStepStatus": (AttributeKind.CODE, _worklist.c.status),
}


@dataclass(frozen=True, slots=True)
class WorklistItem:
    """One scheduled procedure step, as the CLI prints it and the SCP returns it."""

    id: int
    status: WorklistStatus
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    accession_number: str
    study_instance_uid: str
    requested_procedure_id: str
    procedure_description: str
    scheduled_procedure_step_id: str
    modality: str
    scheduled_station_ae_title: str
    scheduled_start_date: str
    scheduled_start_time: str
    organisation: str
    created_at: datetime
    cancelled_at: datetime | None

    def dicom_value(self, keyword: str) -> str:
        """The value of a matching key in DICOM form ("" when the item has none)."""
        return {
            "PatientName": self.patient_name,
            "PatientID": self.patient_id,
            "IssuerOfPatientID": self.organisation,
            "PatientBirthDate": self.patient_birth_date,
            "PatientSex": self.patient_sex,
            "AccessionNumber": self.accession_number,
            "StudyInstanceUID": self.study_instance_uid,
            "RequestedProcedureID": self.requested_procedure_id,
            "RequestedProcedureDescription": self.procedure_description,
            "Modality": self.modality,
            "ScheduledStationAETitle": self.scheduled_station_ae_title,
            "ScheduledProcedureStepStartDate": self.scheduled_start_date,
            "ScheduledProcedureStepStartTime": self.scheduled_start_time,
            "ScheduledProcedureStepDescription": self.procedure_description,
            "ScheduledProcedureStepID": self.scheduled_procedure_step_id,
            "ScheduledProcedureStepStatus": self.status.value,
        }.get(keyword, "")

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["created_at"] = self.created_at.isoformat()
        data["cancelled_at"] = self.cancelled_at.isoformat() if self.cancelled_at else None
        return data


# -- checking input -----------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
_CODE = re.compile(r"^[A-Z0-9 _]{1,16}$")


def _invalid(field: str, problem: str) -> InvalidWorklistItemError:
    # Messages name the field, never the value: it may be a patient's name or ID.
    return InvalidWorklistItemError(f"worklist item: {field} {problem}", comment=f"{field} {problem}")


def _text(value: str | None, field: str, max_length: int, *, required: bool = False) -> str:
    """A LO/SH value: no backslash (it separates values), no control characters."""
    text = (value or "").strip()
    if not text:
        if required:
            raise _invalid(field, "is required")
        return ""
    if "\\" in text or _CONTROL.search(text):
        raise _invalid(field, "must not contain a backslash or control characters")
    if len(text) > max_length:
        raise _invalid(field, f"is longer than {max_length} characters")
    return text


def _person_name(value: str) -> tuple[str, str, str, str]:
    text = _text(value, "patient name", 324, required=True)
    groups = text.split("=")
    if len(groups) > 3:
        raise _invalid("patient name", "has more than three component groups")
    for group in groups:
        if len(group) > 64 or group.count("^") > 4:
            raise _invalid("patient name", "has a component group over 64 characters or 5 components")
    return person_name_groups(text)


def _date(value: str | None, field: str) -> str:
    text = (value or "").strip()
    if not text:
        return ""
    try:
        if len(text) != 8 or not text.isdigit():
            raise ValueError(text)
        datetime.strptime(text, "%Y%m%d")  # a calendar date: no time zone
    except ValueError:
        raise _invalid(field, "must be a date YYYYMMDD") from None
    return text


_START_FORMATS = {14: "%Y%m%d%H%M%S", 12: "%Y%m%d%H%M", 8: "%Y%m%d"}


def _scheduled_start(value: datetime | str | None) -> tuple[str, str]:
    """(DA, TM) of the scheduled start in local time, as the device's clock shows it."""
    if value is None:
        value = datetime.now()  # DICOM DA/TM are local time
    if isinstance(value, datetime):
        return value.strftime("%Y%m%d"), value.strftime("%H%M%S")
    text = value.strip()
    try:
        pattern = _START_FORMATS.get(len(text))
        if pattern is None or not text.isdigit():
            raise ValueError(text)
        parsed = datetime.strptime(text, pattern)  # local time, as above
    except ValueError:
        raise _invalid("scheduled start", "must be YYYYMMDDHHMMSS (or YYYYMMDDHHMM, YYYYMMDD)") from None
    return parsed.strftime("%Y%m%d"), parsed.strftime("%H%M%S")


def _sex(value: str | PatientSex | None) -> str:
    if value is None or value == "":
        return ""
    try:
        return PatientSex(str(value).strip().upper()).value
    except ValueError:
        raise _invalid("patient sex", "must be M, F or O") from None


def _code(value: str, field: str) -> str:
    text = (value or "").strip().upper()
    if not _CODE.match(text):
        raise _invalid(field, "must be 1-16 upper-case letters, digits, spaces or underscores")
    return text


def _ae_title(value: str) -> str:
    if not _AE_TITLE.match(value or "") or not value.strip():
        raise _invalid("scheduled station AE title", "must be 1-16 printable ASCII characters, no backslash")
    return value.strip()


# -- writing -------------------------------------------------------------------


def add_item(
    index: Index,
    *,
    patient_id: str,
    patient_name: str,
    accession_number: str,
    modality: str,
    scheduled_station_ae_title: str,
    organisation: str,
    patient_birth_date: str = "",
    patient_sex: str | PatientSex | None = None,
    scheduled_start: datetime | str | None = None,
    procedure_description: str = "",
    requested_procedure_id: str | None = None,
    scheduled_procedure_step_id: str | None = None,
    study_instance_uid: str | None = None,
    uid_root: str | None = None,
) -> WorklistItem:
    """Schedule one procedure step and return it.

    Every value is checked before anything is written, and the error names
    the field (never the value, which may identify the patient).
    ``organisation`` is required: devices see only the items of their own
    organisation and those below it (the gateway's query scope), and it is
    returned as the Issuer of Patient ID, the organisation whose patient ID
    this is. The
    Requested Procedure ID and the Scheduled Procedure Step ID default to the
    accession number (one step per order); the Study Instance UID to a new
    UID under ``uid_root``, so the device's images carry the UID of the order.

    Raises
    ------
    InvalidWorklistItemError
        A value is missing or malformed, or the organisation already has a
        scheduled item with this accession number.
    InvalidUIDError
        ``study_instance_uid`` is not a valid UID.
    """
    accession = _text(accession_number, "accession number", 16, required=True)
    groups = _person_name(patient_name)
    start_date, start_time = _scheduled_start(scheduled_start)
    values: dict[str, Any] = {
        "status": WorklistStatus.SCHEDULED.value,
        "patient_id": _text(patient_id, "patient ID", 64, required=True),
        "patient_name": groups[0],
        "patient_name_alphabetic": groups[1],
        "patient_name_ideographic": groups[2],
        "patient_name_phonetic": groups[3],
        "patient_birth_date": _date(patient_birth_date, "patient birth date"),
        "patient_sex": _sex(patient_sex),
        "accession_number": accession,
        "study_instance_uid": (
            check_uid(study_instance_uid, "Study Instance UID")
            if study_instance_uid
            else generate_uid(uid_root)
        ),
        "requested_procedure_id": _text(requested_procedure_id, "requested procedure ID", 16) or accession,
        "procedure_description": _text(procedure_description, "procedure description", 64),
        "scheduled_procedure_step_id": (
            _text(scheduled_procedure_step_id, "scheduled procedure step ID", 16)
            or _text(requested_procedure_id, "requested procedure ID", 16)
            or accession
        ),
        "modality": _code(modality, "modality"),
        "scheduled_station_ae_title": _ae_title(scheduled_station_ae_title),
        "scheduled_start_date": start_date,
        "scheduled_start_time": start_time,
        "organisation": _text(organisation, "organisation", 64, required=True),
        "created_at": datetime.now(UTC),
    }
    with index._writing() as conn:
        clash = conn.execute(
            select(_worklist.c.pk).where(
                _worklist.c.status == WorklistStatus.SCHEDULED.value,
                or_(
                    and_(
                        _worklist.c.accession_number == accession,
                        _worklist.c.organisation == values["organisation"],
                    ),
                    _worklist.c.study_instance_uid == values["study_instance_uid"],
                ),
            )
        ).first()
        if clash is not None:
            raise InvalidWorklistItemError(
                f"worklist item {clash.pk} is already scheduled with accession number {accession} "
                "or this Study Instance UID; cancel it first",
                comment="Accession number or study already scheduled",
            )
        pk = conn.execute(_worklist.insert().values(**values).returning(_worklist.c.pk)).scalar_one()
        row = conn.execute(select(_worklist).where(_worklist.c.pk == pk)).one()
    logger.info(
        "worklist item %d scheduled: accession %s, %s at %s on %s %s",
        pk,
        accession,
        values["modality"],
        values["scheduled_station_ae_title"],
        start_date,
        start_time,
    )
    return _item(row)


def cancel_item(index: Index, item_id: int) -> WorklistItem:
    """Stop offering an item to devices; cancelling a cancelled item changes nothing.

    Raises
    ------
    NotFoundError
        There is no item with this ID.
    """
    with index._writing() as conn:
        conn.execute(
            update(_worklist)
            .where(_worklist.c.pk == item_id, _worklist.c.status != WorklistStatus.CANCELLED.value)
            .values(status=WorklistStatus.CANCELLED.value, cancelled_at=datetime.now(UTC))
        )
        row = conn.execute(select(_worklist).where(_worklist.c.pk == item_id)).first()
    if row is None:
        raise NotFoundError(f"worklist item {item_id} does not exist; `teleconsult worklist list` shows them")
    logger.info("worklist item %d cancelled", item_id)
    return _item(row)


# -- reading -------------------------------------------------------------------


def get_item(index: Index, item_id: int) -> WorklistItem | None:
    with index._read() as conn:
        row = conn.execute(select(_worklist).where(_worklist.c.pk == item_id)).first()
    return _item(row) if row is not None else None


def list_items(
    index: Index, *, include_cancelled: bool = False, limit: int | None = None
) -> list[WorklistItem]:
    """Items in order of their scheduled start, scheduled ones only unless asked."""
    stmt = select(_worklist)
    if not include_cancelled:
        stmt = stmt.where(_worklist.c.status == WorklistStatus.SCHEDULED.value)
    stmt = stmt.order_by(
        _worklist.c.scheduled_start_date, _worklist.c.scheduled_start_time, _worklist.c.pk
    ).limit(limit)
    with index._read() as conn:
        return [_item(row) for row in conn.execute(stmt)]


def query_items(
    index: Index,
    keys: Mapping[str, str],
    *,
    organisations: Sequence[str] | None = None,
) -> list[WorklistItem]:
    """Scheduled items matching ``keys`` (DICOM keyword -> matching value).

    Keys not in ``MATCHING_KEYWORDS`` are ignored (the caller decides whether
    that deserves a warning); ``organisations`` restricts the items to those
    organisations (``None``: no restriction), as a C-FIND scope does.
    """
    stmt = select(_worklist).where(_worklist.c.status == WorklistStatus.SCHEDULED.value)
    for keyword, value in keys.items():
        condition = _condition(keyword, value)
        if condition is not None:
            stmt = stmt.where(condition)
    if organisations is not None:
        stmt = stmt.where(_worklist.c.organisation.in_(organisations))
    stmt = stmt.order_by(_worklist.c.scheduled_start_date, _worklist.c.scheduled_start_time, _worklist.c.pk)
    with index._read() as conn:
        return [_item(row) for row in conn.execute(stmt)]


_NAME_GROUPS = (
    _worklist.c.patient_name_alphabetic,
    _worklist.c.patient_name_ideographic,
    _worklist.c.patient_name_phonetic,
)


def _condition(keyword: str, value: str) -> ColumnElement[bool] | None:
    entry = MATCHING_KEYWORDS.get(keyword)
    value = value.strip()
    if entry is None or value in ("", "*"):
        return None
    kind, column = entry
    if kind is AttributeKind.PERSON_NAME:
        return match_person_name(value, _NAME_GROUPS)
    if kind in (AttributeKind.UID, AttributeKind.CODE):
        values = [v.strip() for v in value.split("\\") if v.strip()]
        if kind is AttributeKind.UID:
            return column.in_(values)  # type: ignore[no-any-return]
        return or_(*(match_text(column, v) for v in values))
    if kind in (AttributeKind.DATE, AttributeKind.TIME):
        return match_range(column, value)
    if kind is AttributeKind.TEXT_CI:
        return match_text(func.upper(column), value.upper())
    return match_text(column, value)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite returns naive datetimes
        return value.replace(tzinfo=UTC)
    return value


def _item(row: Any) -> WorklistItem:
    created_at = _aware(row.created_at)
    assert created_at is not None
    return WorklistItem(
        id=row.pk,
        status=WorklistStatus(row.status),
        patient_id=row.patient_id,
        patient_name=row.patient_name,
        patient_birth_date=row.patient_birth_date,
        patient_sex=row.patient_sex,
        accession_number=row.accession_number,
        study_instance_uid=row.study_instance_uid,
        requested_procedure_id=row.requested_procedure_id,
        procedure_description=row.procedure_description,
        scheduled_procedure_step_id=row.scheduled_procedure_step_id,
        modality=row.modality,
        scheduled_station_ae_title=row.scheduled_station_ae_title,
        scheduled_start_date=row.scheduled_start_date,
        scheduled_start_time=row.scheduled_start_time,
        organisation=row.organisation,
        created_at=created_at,
        cancelled_at=_aware(row.cancelled_at),
    )
