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
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    "Computed",
    "DicomJSONResponse",
    "attribute_json",
    "dataset_to_json",
    "keyword_attribute",
    "person_name_json",
    "rows_to_json",
    "rows_to_json_bytes",
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
# the C string encoder), a column at a time: one comprehension per attribute
# over all rows, with the common case (one value, or none) inline, instead of
# a function call per value. ``rows_to_json`` is the reference they are tested
# against.

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


def _as_text(values: Sequence[Any]) -> Sequence[str]:
    """Index values as text; a value that is not (an integer in a text column) is spelt as ``str`` does.

    Like ``_row_converter``, a false value (``None``, ``""``, ``0``) is empty.
    """
    if set(map(type, values)) <= {str}:
        return values
    return [value if type(value) is str else (str(value) if value else "") for value in values]


def _column_text(key: str, vr: str, values: Sequence[Any]) -> list[str]:
    """The JSON text of one attribute (``"GGGGEEEE":{...}``) in every row, as ``_row_converter`` builds it.

    Index text holds multiple values as DICOM writes them (``CT\\MR``), so
    they are split into JSON values here.
    """
    empty = f'"{key}":{{"vr":"{vr}"}}'
    head = f'"{key}":{{"vr":"{vr}","Value":['
    encode = encode_basestring
    if vr in _INTEGER_VRS or vr in _FLOAT_VRS:
        integers = vr in _INTEGER_VRS
        return [
            empty
            if value is None or value == ""
            else (
                f"{head}{value}]}}"
                if integers and type(value) is int
                else head + _number_text(_number(value, vr)) + "]}"
            )
            for value in values
        ]
    texts = _as_text(values)
    if vr == "PN":
        return [
            (
                head + '{"Alphabetic":' + encode(text) + "}]}"
                if "=" not in text and "\\" not in text
                else head + ",".join([_person_name_text(part) for part in text.split("\\")]) + "]}"
            )
            if text
            else empty
            for text in texts
        ]
    if vr in _SINGLE_VALUED_TEXT:
        return [head + encode(text) + "]}" if text else empty for text in texts]
    return [
        (
            head + encode(text) + "]}"
            if "\\" not in text
            else head + ",".join(map(encode, text.split("\\"))) + "]}"
        )
        if text
        else empty
        for text in texts
    ]


Computed = tuple[str, Sequence[str], Callable[..., Any]]


def rows_to_json_bytes(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    keywords: Iterable[str],
    *,
    constants: Mapping[str, dict[str, Any]] | None = None,
    computed: Mapping[str, Computed] | None = None,
) -> bytes:
    """``rows_to_json`` as UTF-8 JSON (an array), without building the objects.

    ``rows`` are sequences of values named by ``columns`` (DICOM keywords);
    a keyword that is no column is returned empty. ``computed`` maps a tag
    key to (VR, the columns it is derived from, a function of their values),
    such as RetrieveURL; constants are written once and repeated. Attributes
    come out in tag order. Each object is encoded on its own and the bytes
    joined: one text of the whole answer would be widened to two bytes a
    character by the first Chinese name, then encoded again.
    """
    if not rows:
        return b"[]"
    count = len(rows)
    position = {name: index for index, name in enumerate(columns)}
    values = list(zip(*rows, strict=True))  # column-wise

    texts: dict[str, Sequence[str]] = {}
    for keyword in keywords:
        key, vr = keyword_attribute(keyword)
        if key not in texts:
            if keyword in position:
                texts[key] = _column_text(key, vr, values[position[keyword]])
            else:
                texts[key] = [f'"{key}":{{"vr":"{vr}"}}'] * count
    for key, value in (constants or {}).items():
        fragment = f"{encode_basestring(key)}:{json.dumps(value, ensure_ascii=False, separators=(',', ':'))}"
        texts[key] = [fragment] * count
    for key, (vr, names, function) in (computed or {}).items():
        texts[key] = _column_text(key, vr, list(map(function, *(values[position[name]] for name in names))))
    objects = map(",".join, zip(*(texts[key] for key in sorted(texts)), strict=True))
    return b"[{" + b"},{".join(map(str.encode, objects)) + b"}]"
