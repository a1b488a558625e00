"""The DICOM JSON Model (PS3.18 F.2): data sets and index rows as ``application/dicom+json``.

Two sources feed it: pydicom data sets read from stored files (WADO-RS
metadata, the STOW-RS response) and index rows keyed by DICOM keyword
(QIDO-RS). Both end as ``{"GGGGEEEE": {"vr": VR, "Value": [...]}}`` with PN
values split into Alphabetic/Ideographic/Phonetic groups, numbers as JSON
numbers, and large binary values replaced by a ``BulkDataURI`` without ever
reading them (a data set read with ``defer_size`` keeps them on disk).
"""

from __future__ import annotations

import base64
import json
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from json.encoder import encode_basestring  # the C string encoder of json.dumps (ensure_ascii=False)
from typing import Any

from fastapi.responses import JSONResponse
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import PersonName

from teleconsult.api.dicomweb.media import DICOM_JSON

__all__ = [
    "BULK_VRS",
    "DicomJSONResponse",
    "attribute_json",
    "dataset_to_json",
    "keyword_attribute",
    "person_name_json",
    "rows_to_json",
    "rows_to_json_text",
    "tag_key",
]

# Binary VRs whose values may go to a BulkDataURI (PS3.18 F.2.6 allows it for these).
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_INTEGER_VRS = frozenset({"SL", "SS", "UL", "US", "SV", "UV", "IS"})
_FLOAT_VRS = frozenset({"FL", "FD", "DS"})
# Always referenced, never inlined, whatever their size: viewers fetch pixels by frame anyway.
_ALWAYS_BULK = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009, 0x54001010})
INLINE_BINARY_LIMIT = 1024
_UTF8 = "ISO_IR 192"

BulkURI = Callable[[str], str]


class DicomJSONResponse(JSONResponse):
    """``application/dicom+json``, UTF-8 without escapes (Chinese names stay readable and short)."""

    media_type = DICOM_JSON

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def tag_key(tag: int) -> str:
    return f"{int(tag):08X}"


def person_name_json(value: str | PersonName) -> dict[str, str]:
    """One PN value as its component groups; empty groups are left out (F.2.2)."""
    if isinstance(value, PersonName):
        groups = (value.alphabetic or "", value.ideographic or "", value.phonetic or "")
    else:
        parts = str(value).split("=")
        groups = (parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else "")
    return {
        name: group
        for name, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=True)
        if group
    }


def _number(value: Any, vr: str) -> int | float | str | None:
    """A numeric value as a JSON number; a value that is no valid number is kept as its text."""
    if value is None or value == "":
        return None
    try:
        number = int(value) if vr in _INTEGER_VRS else float(value)
    except (TypeError, ValueError):
        return str(value)
    if isinstance(number, float):
        if not math.isfinite(number):
            return str(value)
        if number.is_integer() and vr == "DS" and "." not in str(value) and "e" not in str(value).lower():
            return int(number)
    return number


def _values(value: Any) -> list[Any]:
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def attribute_json(vr: str, value: Any) -> dict[str, Any]:
    """One attribute from a Python value (str, int, PersonName, or a list of them)."""
    if value is None or value == "" or (isinstance(value, MultiValue | list | tuple) and len(value) == 0):
        return {"vr": vr}
    values = _values(value)
    if vr == "PN":
        converted: list[Any] = [person_name_json(v) if v not in (None, "") else None for v in values]
    elif vr in _INTEGER_VRS or vr in _FLOAT_VRS:
        converted = [_number(v, vr) for v in values]
    elif vr == "AT":
        converted = [tag_key(Tag(v)) for v in values]
    else:
        converted = [None if v in (None, "") else str(v) for v in values]
    if all(v is None for v in converted):
        return {"vr": vr}
    return {"vr": vr, "Value": converted}


@lru_cache(maxsize=512)
def keyword_attribute(keyword: str) -> tuple[str, str]:
    """(tag key, VR) of a dictionary keyword; ambiguous VRs take their first choice."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return tag_key(tag), dictionary_VR(tag).split(" or ")[0]


def _implicit_vr(ds: Dataset, tag: BaseTag) -> str:
    """The VR of a raw element read with Implicit VR, without converting (and so reading) its value."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    if vr == "OB or OW":
        return "OW" if int(ds.get("BitsAllocated", 8) or 8) > 8 else "OB"
    return vr.split(" or ")[0]


def _binary_json(elem: DataElement, path: str, bulk_uri: BulkURI | None, tag: int) -> dict[str, Any]:
    data = elem.value
    if isinstance(data, list | MultiValue):  # encapsulated fragments or odd multi-values
        data = b"".join(bytes(part) for part in data)
    data = bytes(data or b"")
    if bulk_uri is not None and (tag in _ALWAYS_BULK or len(data) > INLINE_BINARY_LIMIT):
        return {"vr": elem.VR, "BulkDataURI": bulk_uri(path)}
    if not data:
        return {"vr": elem.VR}
    return {"vr": elem.VR, "InlineBinary": base64.b64encode(data).decode("ascii")}


def dataset_to_json(ds: Dataset, bulk_uri: BulkURI | None = None, *, _prefix: str = "") -> dict[str, Any]:
    """A data set in the DICOM JSON Model, text decoded with its own Specific Character Set.

    ``bulk_uri(path)`` names where a large binary value can be fetched;
    ``path`` is the tag (``7FE00010``), or for a value inside a sequence the
    tags and item indexes joined by ``/`` (``54000100/0/54001010``). Values
    kept on disk by ``defer_size`` are referenced without being read.
    Without ``bulk_uri`` binary values are inlined.
    """
    result: dict[str, Any] = {}
    for tag in sorted(ds.keys()):
        if tag.element == 0:  # group lengths are not part of the JSON model
            continue
        key = tag_key(tag)
        path = f"{_prefix}{key}"
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement) and raw.value is None and bulk_uri is not None:
            vr = raw.VR or _implicit_vr(ds, tag)
            if vr in BULK_VRS or raw.length == 0xFFFFFFFF:
                result[key] = {"vr": vr, "BulkDataURI": bulk_uri(path)}
                continue
        elem = ds[tag]
        if elem.VR == "SQ":
            items = [
                dataset_to_json(item, bulk_uri, _prefix=f"{path}/{index}/")
                for index, item in enumerate(elem.value)
            ]
            result[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
        elif elem.VR in BULK_VRS:
            result[key] = _binary_json(elem, path, bulk_uri, int(tag))
        elif tag == 0x00080005:
            # The JSON text is Unicode whatever the stored file used.
            result[key] = {"vr": "CS", "Value": [_UTF8]}
        else:
            result[key] = attribute_json(elem.VR, elem.value)
    return result


_SINGLE_VALUED_TEXT = frozenset({"LT", "ST", "UT", "UR"})


def _row_converter(vr: str) -> Callable[[Any], dict[str, Any]]:
    """A converter for index values of one VR: the per-row work of a search answer, kept minimal.

    Index text holds multiple values as DICOM writes them (``CT\\MR``), so
    they are split into JSON values here.
    """
    empty = {"vr": vr}
    if vr == "PN":

        def person_name(value: Any) -> dict[str, Any]:
            if not value:
                return empty
            return {"vr": vr, "Value": [person_name_json(part) for part in str(value).split("\\")]}

        return person_name
    if vr in _INTEGER_VRS or vr in _FLOAT_VRS:

        def number(value: Any) -> dict[str, Any]:
            if value is None or value == "":
                return empty
            return {"vr": vr, "Value": [_number(value, vr)]}

        return number
    if vr in _SINGLE_VALUED_TEXT:
        return lambda value: {"vr": vr, "Value": [str(value)]} if value else empty

    def text(value: Any) -> dict[str, Any]:
        if not value:
            return empty
        value = str(value)
        return {"vr": vr, "Value": value.split("\\") if "\\" in value else [value]}

    return text


def rows_to_json(
    rows: Iterable[Mapping[str, Any]],
    keywords: Iterable[str],
    *,
    constants: Mapping[str, dict[str, Any]] | None = None,
    computed: Mapping[str, Callable[[Mapping[str, Any]], dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """Index rows (DICOM keyword -> value) as DICOM JSON objects holding ``keywords``.

    ``constants`` (tag key -> attribute) are the same in every object;
    ``computed`` (tag key -> function of the row) are derived per row, such
    as RetrieveURL. A keyword absent from a row (an attribute the index does
    not keep) is returned empty, as C-FIND returns it. Attributes come out in
    tag order, planned once for all rows.
    """
    plan: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {}
    for keyword in keywords:
        key, vr = keyword_attribute(keyword)
        convert = _row_converter(vr)
        plan.setdefault(key, lambda row, keyword=keyword, convert=convert: convert(row.get(keyword)))
    for key, value in (constants or {}).items():
        plan[key] = lambda row, value=value: value
    plan.update(computed or {})
    steps = sorted(plan.items())
    return [{key: step(row) for key, step in steps} for row in rows]


# -- the same objects as JSON text, for search answers of thousands of rows --
#
# A year of studies is ~2,400 rows of ~17 attributes: building dicts and
# handing them to ``json.dumps`` cost ~100 us a row, more than the SQL. The
# writers below produce each attribute's JSON text directly (strings through
# the C string encoder), planned once per answer; ``rows_to_json`` is the
# reference they are tested against.

_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def _person_name_text(value: str) -> str:
    groups = value.split("=", 3)[:3]
    pairs = [
        f'"{name}":{encode_basestring(group)}'
        for name, group in zip(_PN_GROUPS, groups, strict=False)
        if group
    ]
    return "{" + ",".join(pairs) + "}"


def _number_text(number: int | float | str | None) -> str:
    if isinstance(number, str):
        return encode_basestring(number)
    if number is None:
        return "null"
    return repr(number)  # int, or a finite float: JSON's own spelling


def _text_writer(key: str, vr: str) -> Callable[[Any], str]:
    """The JSON text of one attribute (``"GGGGEEEE":{...}``) from an index value, as ``_row_converter``."""
    empty = f'"{key}":{{"vr":"{vr}"}}'
    head = f'"{key}":{{"vr":"{vr}","Value":['
    if vr == "PN":

        def person_name(value: Any) -> str:
            if not value:
                return empty
            return head + ",".join([_person_name_text(part) for part in str(value).split("\\")]) + "]}"

        return person_name
    if vr in _INTEGER_VRS or vr in _FLOAT_VRS:

        def number(value: Any) -> str:
            if value is None or value == "":
                return empty
            if type(value) is int and vr in _INTEGER_VRS:
                return f"{head}{value}]}}"
            return head + _number_text(_number(value, vr)) + "]}"

        return number
    if vr in _SINGLE_VALUED_TEXT:
        return lambda value: head + encode_basestring(str(value)) + "]}" if value else empty

    def text(value: Any) -> str:
        if not value:
            return empty
        value = str(value)
        if "\\" in value:
            return head + ",".join([encode_basestring(part) for part in value.split("\\")]) + "]}"
        return head + encode_basestring(value) + "]}"

    return text


def _nothing(_row: Mapping[str, Any]) -> None:
    return None


def _write_rows(
    rows: list[Mapping[str, Any]],
    ordered: list[tuple[str | None, Callable[[Any], str]]],
    derived: Mapping[str, Callable[[Mapping[str, Any]], Any]],
    present: Callable[[str], bool] | None,
) -> list[str]:
    """Each row's JSON object, from (row key, writer) pairs in tag order.

    ``present`` says which keys every row should have (read by ``itemgetter``,
    a row without one raises ``KeyError``); other values are fetched with ``get``.
    """
    pairs: list[tuple[Callable[[Mapping[str, Any]], Any], Callable[[Any], str]]] = []
    for name, writer in ordered:
        if name is None:
            pairs.append((_nothing, writer))
        elif name in derived:
            pairs.append((derived[name], writer))
        elif present is not None and present(name):
            pairs.append((operator.itemgetter(name), writer))
        else:
            pairs.append((operator.methodcaller("get", name), writer))
    return ["{" + ",".join([write(fetch(row)) for fetch, write in pairs]) + "}" for row in rows]


def rows_to_json_text(
    rows: Iterable[Mapping[str, Any]],
    keywords: Iterable[str],
    *,
    constants: Mapping[str, dict[str, Any]] | None = None,
    computed: Mapping[str, tuple[str, Callable[[Mapping[str, Any]], Any]]] | None = None,
) -> str:
    """``rows_to_json`` as JSON text (an array), without building the objects.

    ``computed`` maps a tag key to (VR, function of the row giving the value),
    such as RetrieveURL; constants are written once and repeated. Each
    attribute is a (fetch from the row, writer) pair in tag order, planned
    once per answer: a row's value is read by ``itemgetter`` (no copy of the
    row into a dict, no ``get`` through the Mapping protocol), which took a
    quarter off a year of studies.
    """
    plan: dict[str, tuple[str | None, Callable[[Any], str]]] = {}
    for keyword in keywords:
        key, vr = keyword_attribute(keyword)
        plan.setdefault(key, (keyword, _text_writer(key, vr)))
    for key, value in (constants or {}).items():
        fragment = f"{encode_basestring(key)}:{json.dumps(value, ensure_ascii=False, separators=(',', ':'))}"
        plan[key] = (None, lambda _value, fragment=fragment: fragment)
    derived_functions = {f"\0{key}": function for key, (_vr, function) in (computed or {}).items()}
    for key, (vr, _function) in (computed or {}).items():
        plan[key] = (f"\0{key}", _text_writer(key, vr))
    rows = rows if isinstance(rows, list) else list(rows)
    ordered = [plan[key] for key in sorted(plan)]
    try:
        # The rows of one query share their keys: each is read by itemgetter.
        present = set(rows[0].keys()) if rows else set()
        objects = _write_rows(rows, ordered, derived_functions, lambda name: name in present)
    except KeyError:
        # Rows with different keys: each value is looked up, missing ones are empty.
        objects = _write_rows(rows, ordered, derived_functions, None)
    return "[" + ",".join(objects) + "]"
