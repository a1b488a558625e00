"""C-FIND/C-MOVE/C-GET identifiers to index queries, and matches back to datasets.

The matching itself lives in ``teleconsult.storage.matching`` (shared with
QIDO-RS); this module only speaks DICOM: information models and levels,
decoding the identifier in its own character set, and building responses.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from pydicom.charset import convert_encodings, default_encoding, python_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import PersonName

from teleconsult.domain.instances import person_name_groups
from teleconsult.storage.matching import ATTRIBUTES, UNIQUE_KEYS, Level

__all__ = [
    "PATIENT_ROOT_FIND",
    "PATIENT_ROOT_GET",
    "PATIENT_ROOT_MOVE",
    "QUERY_RETRIEVE_SOP_CLASSES",
    "RESPONSE_CHARSETS",
    "STUDY_ROOT_FIND",
    "STUDY_ROOT_GET",
    "STUDY_ROOT_MOVE",
    "QueryError",
    "QueryRequest",
    "encoded_response",
    "identifier_value_text",
    "parse_identifier",
    "response_dataset",
]

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
QUERY_RETRIEVE_SOP_CLASSES = (
    PATIENT_ROOT_FIND,
    STUDY_ROOT_FIND,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_MOVE,
    PATIENT_ROOT_GET,
    STUDY_ROOT_GET,
)
_STUDY_ROOT = {STUDY_ROOT_FIND, STUDY_ROOT_MOVE, STUDY_ROOT_GET}

# Character sets a response may be written in: the query's own if it is one
# of these, else UTF-8 whenever a value is not plain ASCII.
RESPONSE_CHARSETS = {"ISO_IR 192", "GB18030", "GBK"}


class QueryError(Exception):
    """An identifier that cannot be answered; ``status`` is the DIMSE status."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment[:64]


@dataclass(frozen=True, slots=True)
class QueryRequest:
    level: Level
    keys: dict[str, str]  # keyword -> matching value (may be empty: return key only)
    requested: tuple[tuple[str, str], ...]  # (keyword, VR) of every identifier element, in order
    charset: str | None

    def retrieve_keys(self) -> dict[str, str]:
        """Keys to select instances for C-MOVE/C-GET: the levels down to the query level."""
        return {
            k: v
            for k, v in self.keys.items()
            if k in ATTRIBUTES and ATTRIBUTES[k].level.depth <= self.level.depth
        }


def identifier_value_text(ds: Dataset, keyword: str) -> str:
    element = ds[keyword]
    if element.VR == "SQ":
        return ""
    if element.VR == "PN":
        value = ds.get(keyword)
        return person_name_groups(value)[0] if value else ""
    raw = ds.get_item(keyword).value
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", "replace")
    elif raw is None:
        text = ""
    elif isinstance(raw, list | tuple | MultiValue):
        text = "\\".join(str(v) for v in raw)
    else:
        text = str(raw)
    return text.replace("\x00", "").strip()


def parse_identifier(identifier: Dataset, sop_class_uid: str, *, retrieve: bool = False) -> QueryRequest:
    """Read level and keys from a request identifier.

    Raises
    ------
    QueryError
        0xA900 for a missing or invalid level, or a level the information
        model does not have; 0xC000 for an identifier that cannot be read.
    """
    try:
        level_text = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    except Exception as exc:
        raise QueryError(0xC000, "Identifier cannot be parsed") from exc
    try:
        level = Level(level_text)
    except ValueError as exc:
        raise QueryError(0xA900, "Query/Retrieve Level missing or invalid") from exc
    if level is Level.PATIENT and sop_class_uid in _STUDY_ROOT:
        raise QueryError(0xA900, "PATIENT level is not in the Study Root model")
    keys: dict[str, str] = {}
    requested: list[tuple[str, str]] = []
    try:
        for element in identifier:
            keyword = element.keyword
            if not keyword or keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
                continue
            requested.append((keyword, str(element.VR)))
            keys[keyword] = identifier_value_text(identifier, keyword)
    except Exception as exc:
        raise QueryError(0xC000, "Identifier cannot be parsed") from exc
    if retrieve:
        unique = UNIQUE_KEYS[level]
        if not keys.get(unique) or "*" in keys[unique] or "?" in keys[unique]:
            raise QueryError(0xA900, f"{unique} is required to retrieve at {level} level")
    charset = identifier.get("SpecificCharacterSet")
    if charset is not None and not isinstance(charset, str):
        charset = "\\".join(charset)
    return QueryRequest(level=level, keys=keys, requested=tuple(requested), charset=charset or None)


def _is_ascii(value: Any) -> bool:
    return not isinstance(value, str) or value.isascii()


def response_dataset(request: QueryRequest, row: dict[str, Any], retrieve_ae_title: str) -> Dataset:
    """One C-FIND match: the requested keys with our values (empty if not indexed)."""
    ds = Dataset()
    unique = UNIQUE_KEYS[request.level]
    wanted = dict(request.requested)
    wanted.setdefault(unique, "UI" if unique != "PatientID" else "LO")
    values: dict[str, Any] = {}
    for keyword in wanted:
        attribute = ATTRIBUTES.get(keyword)
        known = attribute is not None and attribute.level.depth <= request.level.depth
        values[keyword] = row.get(keyword) if known else None
    if request.charset in RESPONSE_CHARSETS:
        ds.SpecificCharacterSet = request.charset
    elif not all(_is_ascii(value) for value in values.values()):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = request.level.value
    ds.RetrieveAETitle = retrieve_ae_title
    for keyword, value in values.items():
        if value is None or value == "":
            # Not indexed, or empty: returned as a zero-length element.
            ds.add_new(keyword, wanted[keyword], None)
            continue
        if keyword == "ModalitiesInStudy":
            value = [code for code in str(value).split("\\") if code]
        elif keyword == "PatientName":
            value = PersonName(value)
        elif isinstance(value, int):
            value = str(value)
        setattr(ds, keyword, value)
    return ds


# -- responses encoded once, for the pending responses of a large match -------------

# VRs whose values are written in the response's character set; every other
# string VR is in the default repertoire (PS3.5 6.1.2.3).
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "PN", "LT", "UC", "UT"})
_STRING_VRS = _CHARSET_VRS | frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
_QUERY_RETRIEVE_LEVEL = BaseTag(0x00080052)
_SPECIFIC_CHARACTER_SET = BaseTag(0x00080005)
_RETRIEVE_AE_TITLE = BaseTag(0x00080054)


@cache
def _element_key(keyword: str) -> tuple[BaseTag, str] | None:
    """(tag, dictionary VR) of a keyword, None if it has no tag or a VR we do not write raw."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    vr = dictionary_VR(tag)
    return (BaseTag(tag), vr) if vr in _STRING_VRS else None


def _value_bytes(value: Any, vr: str, codec: str) -> bytes:
    """A string VR's value as pydicom writes it: encoded, padded to an even length."""
    data = (value if isinstance(value, str) else str(value)).encode(codec if vr in _CHARSET_VRS else "ascii")
    return _padded(data, vr)


def _person_name_bytes(names: list[str], encodings: list[str]) -> bytes:
    """PN values through pydicom's own encoder, which drops empty trailing groups ("Wang=")."""
    return _padded(b"\\".join(PersonName(name).encode(encodings) for name in names), "PN")


def _padded(data: bytes, vr: str) -> bytes:
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return data


class _NotRawError(Exception):
    """A value that only pydicom's writer can encode; the response is built by ``response_dataset``."""


def encoded_response(
    request: QueryRequest, row: dict[str, Any], retrieve_ae_title: str, transfer_syntax: UID
) -> Dataset:
    """``response_dataset``, with every element already encoded for ``transfer_syntax``.

    A C-FIND of one year returns thousands of matches, and building each one
    through pydicom's element classes (value checks on every assignment,
    conversion again on writing) cost more than everything else the gateway
    does per match. The same bytes are built here directly as raw elements,
    with the original encoding set so that pydicom's writer (which pynetdicom
    calls) copies them unchanged (``Dataset.set_original_encoding``). The
    result is byte for byte what ``response_dataset`` gives
    (tests/dicom_gateway/handlers/test_find.py checks it). Person names go
    through pydicom's own PN encoder; any other text this cannot encode, such
    as a character outside GBK, takes ``response_dataset`` instead.
    """
    try:
        return _encoded_response(request, row, retrieve_ae_title, transfer_syntax)
    except (_NotRawError, UnicodeError):
        return response_dataset(request, row, retrieve_ae_title)


def _encoded_response(
    request: QueryRequest, row: dict[str, Any], retrieve_ae_title: str, transfer_syntax: UID
) -> Dataset:
    implicit, little = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian
    unique = UNIQUE_KEYS[request.level]
    wanted = dict(request.requested)
    wanted.setdefault(unique, "UI" if unique != "PatientID" else "LO")
    values: dict[str, Any] = {}
    for keyword in wanted:
        attribute = ATTRIBUTES.get(keyword)
        known = attribute is not None and attribute.level.depth <= request.level.depth
        values[keyword] = row.get(keyword) if known else None
    charset: str | None = None
    if request.charset in RESPONSE_CHARSETS:
        charset = request.charset
    elif not all(_is_ascii(value) for value in values.values()):
        charset = "ISO_IR 192"
    codec = python_encoding[charset] if charset else "ascii"
    encodings = convert_encodings(charset) if charset else [default_encoding]

    elements: dict[BaseTag, RawDataElement] = {}

    def add(tag: BaseTag, vr: str, data: bytes) -> None:
        elements[tag] = RawDataElement(tag, vr, len(data), data, 0, implicit, little)

    if charset:
        add(_SPECIFIC_CHARACTER_SET, "CS", _value_bytes(charset, "CS", codec))
    add(_QUERY_RETRIEVE_LEVEL, "CS", _value_bytes(request.level.value, "CS", codec))
    add(_RETRIEVE_AE_TITLE, "AE", _value_bytes(retrieve_ae_title, "AE", codec))
    for keyword, value in values.items():
        key = _element_key(keyword)
        if value is None or value == "":
            # Not indexed, or empty: a zero-length element with the VR the peer sent.
            tag = key[0] if key else tag_for_keyword(keyword)
            if tag is None:
                raise _NotRawError(keyword)
            add(BaseTag(tag), wanted[keyword], b"")
            continue
        if key is None:
            raise _NotRawError(keyword)
        tag, vr = key
        if vr == "PN":
            # As response_dataset sets them: the patient's name as one value,
            # any other name split into values at each backslash.
            names = [str(value)] if keyword == "PatientName" else str(value).split("\\")
            add(tag, vr, _person_name_bytes(names, encodings))
            continue
        if keyword == "ModalitiesInStudy":
            value = "\\".join(code for code in str(value).split("\\") if code)
        add(tag, vr, _value_bytes(value, vr, codec))
    ds = Dataset(elements)
    ds.set_original_encoding(implicit, little, encodings if charset else default_encoding)
    return ds
