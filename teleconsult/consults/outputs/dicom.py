"""What the SR and the Encapsulated PDF builders share: UIDs, times, names, the study's header.

UIDs of the outputs are derived from the consult id (UUID version 5, in
the ``2.25`` form or under ``TELECONSULT_UID_ROOT``), not drawn at random:
a retried attempt makes the same SOP instances, which the store takes as
duplicates, so a failure halfway through never leaves two SRs of one version.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from teleconsult.consults.outputs.document import ReportDocument

__all__ = [
    "MANUFACTURER",
    "PERSON_CODING_SCHEME",
    "PERSON_CODING_SCHEME_ITEM",
    "UTF8",
    "OutputUIDs",
    "StudyClock",
    "acquired_at",
    "encode_data_set",
    "output_uids",
    "person_code",
    "person_name",
    "subject_header",
    "text_value",
]

UTF8 = "ISO_IR 192"
MANUFACTURER = "teleconsult"
# A private coding scheme (PS3.16 8.2: designators starting "99") for user accounts.
PERSON_CODING_SCHEME = "99TELECONSULT"
# Declared in the Coding Scheme Identification Sequence of every object that uses it.
PERSON_CODING_SCHEME_ITEM = CodingSchemeIdentificationItem(
    PERSON_CODING_SCHEME, name="teleconsult user accounts", responsible_organization=MANUFACTURER
)
# Series numbers of the report series, after the acquisitions'.
SR_SERIES_NUMBER = 9001
PDF_SERIES_NUMBER = 9002

# Attributes highdicom reads from the first evidence data set (Type 2: present, maybe empty).
_TYPE2_SUBJECT = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


@dataclass(frozen=True, slots=True)
class OutputUIDs:
    sr_series: str
    sr_instance: str
    pdf_series: str
    pdf_instance: str


def _derived_uid(consult_id: str, purpose: str, root: str | None) -> str:
    number = uuid.uuid5(uuid.UUID(consult_id), purpose).int
    if root is None:
        return f"2.25.{number}"
    return f"{root}.{number}"[:64].rstrip(".")


def output_uids(consult_id: str, version: int, root: str | None) -> OutputUIDs:
    """The UIDs of one version's objects: one SR and one PDF series per consult, an instance per version."""
    return OutputUIDs(
        sr_series=_derived_uid(consult_id, "report-sr-series", root),
        sr_instance=_derived_uid(consult_id, f"report-sr/{version}", root),
        pdf_series=_derived_uid(consult_id, "report-pdf-series", root),
        pdf_instance=_derived_uid(consult_id, f"report-pdf/{version}", root),
    )


@dataclass(frozen=True, slots=True)
class StudyClock:
    """Instants as the objects of a study state them.

    DICOM dates and times are local. The copied study attributes are in the
    acquiring device's time, so the outputs state theirs in the same zone:
    the header's Timezone Offset From UTC if it has one, else this server's
    (a county and its townships share one), and declare that offset.
    """

    zone: tzinfo | None  # None: this server's local time zone

    @classmethod
    def of(cls, header: Dataset) -> StudyClock:
        offset = str(header.get("TimezoneOffsetFromUTC", "") or "").strip()
        match = re.fullmatch(r"([+-])([01][0-9])([0-5][0-9])", offset)
        if match is None:
            return cls(None)
        delta = timedelta(hours=int(match[2]), minutes=int(match[3]))
        return cls(timezone(-delta if match[1] == "-" else delta))

    def local(self, value: datetime) -> datetime:
        return value.astimezone(self.zone) if self.zone is not None else value.astimezone()

    def date_time(self, value: datetime) -> tuple[str, str, str]:
        """DA, TM and DT of an instant."""
        value = self.local(value)
        date = value.strftime("%Y%m%d")
        time = value.strftime("%H%M%S.") + f"{value.microsecond:06d}"
        return date, time, date + time

    def offset(self, value: datetime) -> str:
        """Timezone Offset From UTC at an instant, e.g. +0800."""
        return self.local(value).strftime("%z")


def acquired_at(header: Dataset) -> str | None:
    """When the study's header instance was acquired (DT), from the attributes it has."""
    if header.get("AcquisitionDateTime"):
        return str(header.AcquisitionDateTime)
    for date, time in (("ContentDate", "ContentTime"), ("StudyDate", "StudyTime")):
        if header.get(date):
            return str(header.get(date)) + str(header.get(time, "") or "")
    return None


def text_value(text: str, limit: int) -> str:
    """A short string (LO, SH) value: no backslash or control characters, cut to ``limit``."""
    cleaned = "".join(" " if ord(c) < 32 or c == "\\" else c for c in text).strip()
    return cleaned[:limit].rstrip()


def person_name(display_name: str) -> str:
    """A display name (张医生, Dr Li) as a PN of one component; the trailing caret says so (PS3.5 6.2.1.1)."""
    return text_value(display_name.replace("^", " ").replace("=", " "), 63) + "^"


def person_code(username: str, display_name: str) -> Dataset:
    """A coded entry naming a user account (Person Identification / Verifying Observer codes)."""
    item = Dataset()
    item.CodeValue = text_value(username, 16)
    item.CodingSchemeDesignator = PERSON_CODING_SCHEME
    item.CodeMeaning = text_value(display_name or username, 64)
    return item


def subject_header(header: Dataset, document: ReportDocument) -> Dataset:
    """The study's header with every attribute the builders read, empty where the study has none."""
    subject = Dataset()
    for element in header:
        if element.tag.group != 0x7FE0:
            subject.add(element)
    for keyword in _TYPE2_SUBJECT:
        if keyword not in subject:
            setattr(subject, keyword, "")
    if not subject.get("StudyInstanceUID") and document.study is not None:
        subject.StudyInstanceUID = document.study.study_instance_uid
    return subject


def encode_data_set(ds: Dataset) -> bytes:
    """The data set (no File Meta) in Explicit VR Little Endian, as ``store_instance`` takes it."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, ds)
    return buffer.getvalue()
