"""What the index knows about one instance, read from its encoded data set.

The gateway hands over the data set exactly as it arrived; this module reads
only the header attributes the index matches or returns (pixel data and
waveform samples are never decoded), decodes text with the data set's own
Specific Character Set (ISO_IR 192, GB18030, GBK, ISO 2022 IR 58 ...), and
refuses what cannot be stored safely.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.filereader import data_element_generator
from pydicom.tag import BaseTag, Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian
from pydicom.valuerep import PersonName
from pydicom.values import convert_value

from teleconsult.domain.uids import check_uid
from teleconsult.errors import InvalidInstanceError, SOPClassMismatchError

__all__ = ["InstanceAttributes", "person_name_groups", "read_instance_attributes"]

# The attributes the index keeps; reading only these keeps header parsing
# cheap on large multi-frame objects.
_KEYWORDS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "Modality",
    "InstitutionName",
    "ReferringPhysicianName",
    "StudyDescription",
    "SeriesDescription",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "BodyPartExamined",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyID",
    "SeriesNumber",
    "InstanceNumber",
    "SeriesDate",
    "SeriesTime",
    "NumberOfFrames",
)
_TAGS = [Tag(keyword) for keyword in _KEYWORDS]
_UID_KEYWORDS = frozenset({"SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"})

# pydicom 3.0 decodes ISO 2022 IR 58 with Python's gb2312 codec, which keeps
# the "ESC $ ) A" designations in the text; drop any escape sequence left.
_ESCAPE_SEQUENCE = re.compile(r"\x1b[$()\-]{1,2}[@-~]")


def _clean(text: str) -> str:
    if "\x1b" in text:
        text = _ESCAPE_SEQUENCE.sub("", text)
    return text.replace("\x00", "").strip()


_LAST_TAG = max(_TAGS)
_WANTED: dict[BaseTag, tuple[str, str]] = {
    tag: (keyword, dictionary_VR(tag)) for keyword, tag in zip(_KEYWORDS, _TAGS, strict=True)
}
_SPECIFIC_CHARACTER_SET = Tag("SpecificCharacterSet")


def _past_last_tag(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return tag > _LAST_TAG


@dataclass(frozen=True, slots=True)
class InstanceAttributes:
    """The indexed attributes of one instance, decoded to Python text."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    specific_character_set: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_name_alphabetic: str
    patient_name_ideographic: str
    patient_name_phonetic: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician_name: str
    institution_name: str
    series_date: str
    series_time: str
    modality: str
    series_number: int | None
    series_description: str
    body_part_examined: str
    instance_number: int | None
    number_of_frames: int | None


def person_name_groups(value: Any) -> tuple[str, str, str, str]:
    """(whole value, alphabetic, ideographic, phonetic) of a decoded PN value."""
    if value is None or value == "":
        return "", "", "", ""
    if not isinstance(value, PersonName):
        value = PersonName(str(value))
    return (
        _clean(str(value)),
        _clean(value.alphabetic or ""),
        _clean(value.ideographic or ""),
        _clean(value.phonetic or ""),
    )


def _text(values: dict[str, Any], keyword: str, max_length: int = 64) -> str:
    value = values.get(keyword)
    if value is None or value == "":
        return ""
    if not isinstance(value, str) and hasattr(value, "__iter__"):
        value = "\\".join(str(v) for v in value)
    return _clean(str(value))[:max_length]


def _integer(values: dict[str, Any], keyword: str) -> int | None:
    value = values.get(keyword)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if -(2**31) <= number < 2**31 else None


def _read_header(data: bytes, transfer_syntax_uid: str) -> dict[str, Any]:
    """Keyword -> value of the indexed attributes present in ``data``."""
    if transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
        # Only the header is needed: inflate a bounded prefix, never the whole
        # (possibly hostile) stream.
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            data = inflater.decompress(data, 16 * 1024 * 1024)
        except zlib.error as exc:
            raise InvalidInstanceError(
                f"deflated data set cannot be inflated: {exc}", comment="Deflated data set cannot be inflated"
            ) from exc
    implicit = transfer_syntax_uid == ImplicitVRLittleEndian
    little = transfer_syntax_uid != ExplicitVRBigEndian
    if len(data) >= 6:
        # pydicom would only warn and guess; a file whose encoding contradicts
        # its transfer syntax would then be stored and mislabelled.
        vr = data[4:6]
        looks_explicit = 0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B
        if looks_explicit == implicit:
            raise InvalidInstanceError(
                f"data set encoding does not match the negotiated transfer syntax {transfer_syntax_uid}",
                comment="Data set encoding contradicts the transfer syntax",
            )

    try:
        # The raw elements are walked and only the indexed ones converted:
        # building a Dataset and reading values through it costs three times
        # as much, which shows on small instances such as ECGs.
        found: dict[BaseTag, RawDataElement] = {}
        for raw in data_element_generator(BytesIO(data), implicit, little, stop_when=_past_last_tag):
            if raw.tag in _WANTED:
                found[raw.tag] = raw
        charset = found.get(_SPECIFIC_CHARACTER_SET)
        terms = convert_value("CS", charset) if charset is not None else None
        if isinstance(terms, str):
            terms = [terms]
        encodings = convert_encodings(list(terms) if terms else None)
        # Decoding every value now makes a broken one fail here, as a clear
        # refusal, rather than later in the index. UIDs stay raw: they are
        # checked by check_uid, not pydicom.
        values: dict[str, Any] = {}
        for tag, raw in found.items():
            keyword, dictionary_vr = _WANTED[tag]
            if keyword in _UID_KEYWORDS:
                value = raw.value
                if isinstance(value, bytes):
                    values[keyword] = value.decode("ascii", "replace")
                elif value is not None:
                    values[keyword] = str(value)
                continue
            vr = raw.VR if raw.VR and raw.VR != "UN" else dictionary_vr
            values[keyword] = convert_value(vr, raw, encodings)
    except InvalidInstanceError:
        raise
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise InvalidInstanceError(
            f"data set cannot be parsed: {exc}"[:300], comment="Data set cannot be parsed"
        ) from exc
    return values


def read_instance_attributes(
    data: bytes,
    transfer_syntax_uid: str,
    *,
    expected_sop_class_uid: str | None = None,
    expected_sop_instance_uid: str | None = None,
) -> InstanceAttributes:
    """Read the indexed attributes of an encoded data set (no File Meta).

    Raises
    ------
    InvalidUIDError
        A required UID is missing or malformed.
    SOPClassMismatchError
        The data set's SOP Class UID differs from ``expected_sop_class_uid``.
    InvalidInstanceError
        The data set cannot be parsed, or its SOP Instance UID differs from
        the one the command announced.
    """
    values = _read_header(data, transfer_syntax_uid)
    sop_class_uid = check_uid(values.get("SOPClassUID"), "SOP Class UID")
    sop_instance_uid = check_uid(values.get("SOPInstanceUID"), "SOP Instance UID")
    if expected_sop_class_uid is not None and sop_class_uid != expected_sop_class_uid:
        raise SOPClassMismatchError(
            f"data set SOP Class UID {sop_class_uid} differs from the negotiated {expected_sop_class_uid}",
            comment="Data set SOP Class differs from the negotiated one",
        )
    if expected_sop_instance_uid is not None and sop_instance_uid != expected_sop_instance_uid:
        raise InvalidInstanceError(
            f"data set SOP Instance UID {sop_instance_uid} differs from the "
            f"command's {expected_sop_instance_uid}",
            comment="Data set SOP Instance UID differs from the command's",
        )
    name, alphabetic, ideographic, phonetic = person_name_groups(values.get("PatientName"))
    referring, *_ = person_name_groups(values.get("ReferringPhysicianName"))
    # as text whatever VR it came with: one sent as US (numbers) raised TypeError here (C-STORE 0xC211)
    charset = _text(values, "SpecificCharacterSet", 128)
    return InstanceAttributes(
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        study_instance_uid=check_uid(values.get("StudyInstanceUID"), "Study Instance UID"),
        series_instance_uid=check_uid(values.get("SeriesInstanceUID"), "Series Instance UID"),
        transfer_syntax_uid=transfer_syntax_uid,
        specific_character_set=charset,
        patient_id=_text(values, "PatientID"),
        issuer_of_patient_id=_text(values, "IssuerOfPatientID"),
        patient_name=name[:324],
        patient_name_alphabetic=alphabetic[:324],
        patient_name_ideographic=ideographic[:324],
        patient_name_phonetic=phonetic[:324],
        patient_birth_date=_text(values, "PatientBirthDate", 8),
        patient_sex=_text(values, "PatientSex", 16),
        study_date=_text(values, "StudyDate", 8),
        study_time=_text(values, "StudyTime", 16),
        accession_number=_text(values, "AccessionNumber", 16),
        study_id=_text(values, "StudyID", 16),
        study_description=_text(values, "StudyDescription"),
        referring_physician_name=referring[:324],
        institution_name=_text(values, "InstitutionName"),
        series_date=_text(values, "SeriesDate", 8),
        series_time=_text(values, "SeriesTime", 16),
        modality=_text(values, "Modality", 16),
        series_number=_integer(values, "SeriesNumber"),
        series_description=_text(values, "SeriesDescription"),
        body_part_examined=_text(values, "BodyPartExamined", 16),
        instance_number=_integer(values, "InstanceNumber"),
        number_of_frames=_integer(values, "NumberOfFrames"),
    )
