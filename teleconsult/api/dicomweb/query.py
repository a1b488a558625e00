"""QIDO-RS query parameters (PS3.18 8.3.4) turned into the index's matching keys.

Matching itself is not done here: the keys go to ``Index.query``, the same
implementation C-FIND uses (``storage/matching.py``), so a QIDO-RS search
and a C-FIND with the same keys find the same studies. This module only
names attributes (keyword or tag), rejects what the index cannot match,
and picks the attributes to return.

The query string is already percent-decoded by the framework, so ``*``,
``?`` and ``^`` arrive the same whether the client sent them literally or
as ``%2A``, ``%3F``, ``%5E``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from teleconsult.api.dicomweb.errors import InvalidRequestError
from teleconsult.storage.matching import ATTRIBUTES, AttributeKind, Level, supported_keywords

__all__ = ["DEFAULT_RETURN_KEYS", "MAX_INTEGER", "QidoQuery", "parse_qido", "resolve_attribute"]

_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_PARAMETERS = ("limit", "offset", "includefield", "fuzzymatching")
# Kinds whose values never contain a comma, so a comma can only separate list values.
_LIST_KINDS = (AttributeKind.UID, AttributeKind.CODE, AttributeKind.MODALITIES)
# Largest limit, offset and Integer String value (PS3.5 6.2: IS is a signed 32-bit integer);
# larger numbers cannot be bound as SQL integers.
MAX_INTEGER = 2**31 - 1
# C0 controls and DEL: no DICOM text value used for matching holds them (PostgreSQL refuses NUL).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# PS3.18 Tables 10.6.3-3..5 (what the index keeps of them), plus what viewers need
# to go on without a second query (descriptions, the UIDs of the levels above).
DEFAULT_RETURN_KEYS: dict[Level, tuple[str, ...]] = {
    Level.STUDY: (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    Level.SERIES: (
        "StudyInstanceUID",
        "Modality",
        "SeriesDescription",
        "SeriesInstanceUID",
        "SeriesNumber",
        "SeriesDate",
        "SeriesTime",
        "BodyPartExamined",
        "NumberOfSeriesRelatedInstances",
    ),
    Level.IMAGE: (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceNumber",
        "NumberOfFrames",
        "AvailableTransferSyntaxUID",
    ),
}


@dataclass(frozen=True, slots=True)
class QidoQuery:
    """What one QIDO-RS request asks the index."""

    level: Level
    keys: dict[str, str]
    return_keys: tuple[str, ...]
    limit: int | None
    offset: int
    fuzzy: bool

    @property
    def index_return_keys(self) -> tuple[str, ...]:
        """Return keys to hand the index: counts of other levels are left out (returned empty).

        ``build_query`` correlates a count of another level with tables the
        query already joins (NumberOfStudyRelatedSeries at SERIES level) and
        SQLAlchemy then refuses the statement.
        """
        return tuple(
            keyword
            for keyword in self.return_keys
            if keyword not in ATTRIBUTES
            or ATTRIBUTES[keyword].kind is not AttributeKind.COUNT
            or ATTRIBUTES[keyword].level is self.level
        )


def resolve_attribute(attribute_id: str, *, what: str = "query key") -> str:
    """The keyword of an attribute given by keyword (``PatientName``) or tag (``00100010``)."""
    if "." in attribute_id:
        raise InvalidRequestError(
            f"{what} {attribute_id!r}: attributes inside sequences cannot be matched or returned"
        )
    if _TAG.fullmatch(attribute_id):
        keyword = keyword_for_tag(int(attribute_id, 16))
        if keyword:
            return keyword
    elif tag_for_keyword(attribute_id) is not None:
        return attribute_id
    if what != "query key":
        raise InvalidRequestError(f"{what} {attribute_id!r} is not a DICOM keyword or tag (8 hex digits)")
    raise InvalidRequestError(
        f"unknown query key {attribute_id!r}: use a DICOM keyword or tag, or one of {', '.join(_PARAMETERS)}"
    )


def _matchable(keyword: str, level: Level) -> str:
    attribute = ATTRIBUTES.get(keyword)
    if attribute is None or attribute.kind is AttributeKind.COUNT:
        matchable = (k for k in supported_keywords(level) if ATTRIBUTES[k].kind is not AttributeKind.COUNT)
        raise InvalidRequestError(
            f"query key {keyword!r} cannot be matched; matching keys at {level.value} level are "
            f"{', '.join(matchable)} (others may be asked for with includefield)"
        )
    if attribute.level.depth > level.depth:
        raise InvalidRequestError(
            f"query key {keyword!r} is a {attribute.level.value.lower()}-level attribute; it cannot match "
            f"at {level.value.lower()} level: search the {attribute.level.value.lower()} resource instead"
        )
    return keyword


def _integer(name: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if not minimum <= number <= MAX_INTEGER:
        raise InvalidRequestError(
            f"{name} must be an integer from {minimum} to {MAX_INTEGER}, not {value[:40]!r}"
        )
    return number


def _check_value(keyword: str, value: str) -> None:
    """A matching value the index can take, or ``InvalidRequestError`` (400) saying why not."""
    control = _CONTROL.search(value)
    if control is not None:
        raise InvalidRequestError(
            f"the value of {keyword} holds a control character (U+{ord(control.group()):04X}); "
            "matching values are text"
        )
    if ATTRIBUTES[keyword].kind is AttributeKind.INTEGER:
        try:
            number = int(value)
        except ValueError:
            return  # not a number: matches nothing, as in C-FIND
        if not -MAX_INTEGER - 1 <= number <= MAX_INTEGER:
            raise InvalidRequestError(
                f"{keyword} {value[:40]!r} is out of range: an Integer String is a signed 32-bit integer"
            )


def _include_fields(values: Iterable[str], level: Level) -> list[str]:
    keywords: list[str] = []
    for value in values:
        if not value.strip(" ,"):
            raise InvalidRequestError("includefield is empty: give attribute keywords, tags or 'all'")
        for item in filter(None, (part.strip() for part in value.split(","))):
            if item.lower() == "all":
                keywords += supported_keywords(level)
            else:
                keywords.append(resolve_attribute(item, what="includefield"))
    return keywords


def parse_qido(
    params: Sequence[tuple[str, str]],
    level: Level,
    *,
    path_keys: dict[str, str],
    default_keys: Sequence[str],
) -> QidoQuery:
    """Check and translate the query string of one search.

    Raises ``InvalidRequestError`` (400) naming the first key that is not a
    DICOM attribute, cannot be matched at this level, is repeated, or has a
    bad value.
    """
    keys: dict[str, str] = {}
    returned: list[str] = list(default_keys)
    includes: list[str] = []
    limit: int | None = None
    offset = 0
    fuzzy = False
    for name, value in params:
        if name == "includefield":
            includes.append(value)
        elif name == "limit":
            limit = _integer("limit", value, 1)
        elif name == "offset":
            offset = _integer("offset", value, 0)
        elif name == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise InvalidRequestError(f"fuzzymatching must be true or false, not {value!r}")
            fuzzy = value.lower() == "true"
        else:
            keyword = resolve_attribute(name)
            returned.append(keyword)
            if not value.strip():
                continue  # universal matching: only returned
            _matchable(keyword, level)
            _check_value(keyword, value)
            if keyword in path_keys:
                raise InvalidRequestError(f"{keyword} is given by the path; leave it out of the query")
            if ATTRIBUTES[keyword].kind in _LIST_KINDS:
                value = value.replace(",", "\\")
                if keyword in keys:
                    value = f"{keys[keyword]}\\{value}"
            elif keyword in keys:
                raise InvalidRequestError(f"query key {keyword!r} is given twice")
            keys[keyword] = value
    returned += _include_fields(includes, level)
    keys.update(path_keys)
    return QidoQuery(
        level=level,
        keys=keys,
        return_keys=tuple(dict.fromkeys(returned)),
        limit=limit,
        offset=offset,
        fuzzy=fuzzy,
    )
