"""C-FIND/C-MOVE/C-GET identifiers to index queries, and matches back to datasets.

The matching itself lives in ``teleconsult.storage.matching`` (shared with
QIDO-RS); this module only speaks DICOM: information models and levels,
decoding the identifier in its own character set, and building responses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
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
