"""DICOM attribute matching over the index, shared by C-FIND and QIDO-RS.

A query names a level (PATIENT, STUDY, SERIES, IMAGE) and gives matching keys
as DICOM keyword -> string value, exactly as they appear in a C-FIND
identifier or a QIDO-RS query string. Matching follows PS3.4 C.2.2.2:

- empty value: universal matching (the key is only returned);
- ``*`` and ``?``: wildcard matching;
- ``A-B``, ``A-``, ``-B`` on dates and times: range matching;
- ``uid1\\uid2``: list of UID matching (and a value list for CS keys such as
  Modality and ModalitiesInStudy);
- anything else: single value matching.

Person names match case-insensitively in any component group (alphabetic,
ideographic, phonetic), so "王*" finds a name sent in GB18030 or UTF-8 in
either group. Keys of the query level and the levels above it are matched;
keys of lower levels are ignored (hierarchical query). Keys teleconsult
does not index are returned empty, as PS3.4 allows.

Conditions are written so that an index can answer them: a person name
("王小*", "WANG^XIAO*" or a whole name) is ``upper(group) LIKE 'PATTERN'`` on
PostgreSQL and ``group LIKE 'PATTERN'`` on SQLite, the forms the indexes of
migration 0006 serve (see ``_CaseInsensitiveMatch``); the upper end of a date
range is also a plain comparison the study date index can use; and
ModalitiesInStudy probes the series of each candidate study instead of
collecting every series of that modality.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    FromClause,
    Select,
    and_,
    exists,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, Label
from sqlalchemy.sql.visitors import InternalTraversal

from teleconsult.storage.tables import Instance, Patient, Series, Study

__all__ = [
    "ATTRIBUTES",
    "AttributeKind",
    "Level",
    "build_query",
    "match_person_name",
    "match_range",
    "match_text",
    "supported_keywords",
    "wildcard_to_like",
]

_patients = Patient.__table__
_studies = Study.__table__
_series = Series.__table__
_instances = Instance.__table__

# Aliases for the count subqueries, built once: an alias computes its column
# collection on first use, which cost more than the SQL of a one-row C-FIND.
_count_studies = _studies.alias("c_st")
_modality_series = _series.alias("m_se")  # ModalitiesInStudy: the series of the matched study


class Level(StrEnum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        return _DEPTH[self]


_DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.IMAGE: 3}


class AttributeKind(StrEnum):
    TEXT = "text"  # LO, SH, CS: case-sensitive, wildcards
    TEXT_CI = "text_ci"  # descriptions: case-insensitive
    UID = "uid"  # list of UID matching, no wildcards
    CODE = "code"  # CS with value lists (Modality)
    DATE = "date"
    TIME = "time"
    PERSON_NAME = "pn"
    INTEGER = "int"
    MODALITIES = "modalities"  # ModalitiesInStudy
    COUNT = "count"  # computed, return only


@dataclass(frozen=True, slots=True)
class Attribute:
    keyword: str
    level: Level
    kind: AttributeKind
    column: Any = None


ATTRIBUTES: dict[str, Attribute] = {
    a.keyword: a
    for a in (
        Attribute("PatientName", Level.PATIENT, AttributeKind.PERSON_NAME, _patients.c.patient_name),
        Attribute("PatientID", Level.PATIENT, AttributeKind.TEXT, _patients.c.patient_id),
        Attribute("IssuerOfPatientID", Level.PATIENT, AttributeKind.TEXT, _patients.c.issuer_of_patient_id),
        Attribute("PatientBirthDate", Level.PATIENT, AttributeKind.DATE, _patients.c.patient_birth_date),
        Attribute("PatientSex", Level.PATIENT, AttributeKind.CODE, _patients.c.patient_sex),
        Attribute("NumberOfPatientRelatedStudies", Level.PATIENT, AttributeKind.COUNT),
        Attribute("NumberOfPatientRelatedSeries", Level.PATIENT, AttributeKind.COUNT),
        Attribute("NumberOfPatientRelatedInstances", Level.PATIENT, AttributeKind.COUNT),
        Attribute("StudyInstanceUID", Level.STUDY, AttributeKind.UID, _studies.c.study_instance_uid),
        Attribute("StudyDate", Level.STUDY, AttributeKind.DATE, _studies.c.study_date),
        Attribute("StudyTime", Level.STUDY, AttributeKind.TIME, _studies.c.study_time),
        Attribute("AccessionNumber", Level.STUDY, AttributeKind.TEXT, _studies.c.accession_number),
        Attribute("StudyID", Level.STUDY, AttributeKind.TEXT, _studies.c.study_id),
        Attribute("StudyDescription", Level.STUDY, AttributeKind.TEXT_CI, _studies.c.study_description),
        Attribute(
            "ReferringPhysicianName",
            Level.STUDY,
            AttributeKind.TEXT_CI,
            _studies.c.referring_physician_name,
        ),
        Attribute("InstitutionName", Level.STUDY, AttributeKind.TEXT_CI, _studies.c.institution_name),
        Attribute("ModalitiesInStudy", Level.STUDY, AttributeKind.MODALITIES, _studies.c.modalities_in_study),
        Attribute("NumberOfStudyRelatedSeries", Level.STUDY, AttributeKind.COUNT),
        Attribute("NumberOfStudyRelatedInstances", Level.STUDY, AttributeKind.COUNT),
        Attribute("SeriesInstanceUID", Level.SERIES, AttributeKind.UID, _series.c.series_instance_uid),
        Attribute("Modality", Level.SERIES, AttributeKind.CODE, _series.c.modality),
        Attribute("SeriesNumber", Level.SERIES, AttributeKind.INTEGER, _series.c.series_number),
        Attribute("SeriesDescription", Level.SERIES, AttributeKind.TEXT_CI, _series.c.series_description),
        Attribute("BodyPartExamined", Level.SERIES, AttributeKind.CODE, _series.c.body_part_examined),
        Attribute("SeriesDate", Level.SERIES, AttributeKind.DATE, _series.c.series_date),
        Attribute("SeriesTime", Level.SERIES, AttributeKind.TIME, _series.c.series_time),
        Attribute("NumberOfSeriesRelatedInstances", Level.SERIES, AttributeKind.COUNT),
        Attribute("SOPInstanceUID", Level.IMAGE, AttributeKind.UID, _instances.c.sop_instance_uid),
        Attribute("SOPClassUID", Level.IMAGE, AttributeKind.UID, _instances.c.sop_class_uid),
        Attribute("InstanceNumber", Level.IMAGE, AttributeKind.INTEGER, _instances.c.instance_number),
        Attribute("NumberOfFrames", Level.IMAGE, AttributeKind.INTEGER, _instances.c.number_of_frames),
        Attribute(
            "AvailableTransferSyntaxUID", Level.IMAGE, AttributeKind.UID, _instances.c.transfer_syntax_uid
        ),
    )
}

# Unique key of each level: returned whenever that level is queried.
UNIQUE_KEYS = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}


def supported_keywords(level: Level) -> list[str]:
    return [k for k, a in ATTRIBUTES.items() if a.level.depth <= level.depth]


def wildcard_to_like(value: str) -> str:
    """A DICOM wildcard value (``*``, ``?``) as a SQL LIKE pattern with ``\\`` escapes."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def match_text(column: Any, value: str) -> ColumnElement[bool]:
    if _has_wildcard(value):
        return column.like(wildcard_to_like(value), escape="\\")  # type: ignore[no-any-return]
    return column == value  # type: ignore[no-any-return]


class _CaseInsensitiveMatch(ColumnElement[bool]):
    """``upper(column) LIKE pattern``, written the way each dialect can use an index for it.

    ``pattern`` is upper-cased and in LIKE syntax (``wildcard_to_like``). On
    PostgreSQL (and any other dialect) this is ``upper(column) LIKE
    pattern``, which the ``text_pattern_ops`` indexes of migration 0006 serve
    as a range (or, without wildcards, an equality). SQLite never uses an
    index on an expression for LIKE, but its own LIKE folds ASCII case exactly
    as its ``upper()`` does (and leaves other characters alone, as its
    ``upper()`` does too), so there ``column LIKE pattern`` selects the same
    rows, from the ``COLLATE NOCASE`` index of migration 0006.
    """

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # a comparison: no "= 1" where booleans are not native
    _traverse_internals = [  # noqa: RUF012 (the type SQLAlchemy declares)
        ("column", InternalTraversal.dp_clauseelement),
        ("pattern", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement[Any], pattern: str) -> None:
        self.column = column
        self.pattern: BindParameter[str] = literal(pattern)


@compiles(_CaseInsensitiveMatch)
def _compile_case_insensitive(element: _CaseInsensitiveMatch, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(func.upper(element.column).like(element.pattern, escape="\\"), **kw)


@compiles(_CaseInsensitiveMatch, "sqlite")
def _compile_case_insensitive_sqlite(element: _CaseInsensitiveMatch, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.like(element.pattern, escape="\\"), **kw)


def _match_upper(column: Any, pattern: str) -> ColumnElement[bool]:
    """``upper(column)`` against an upper-cased DICOM pattern (wildcards or a single value)."""
    return _CaseInsensitiveMatch(column, wildcard_to_like(pattern))


def match_range(column: Any, value: str) -> ColumnElement[bool]:
    if "-" not in value:
        return column == value.strip()  # type: ignore[no-any-return]
    low, _, high = value.partition("-")
    low, high = low.strip(), high.strip()
    conditions = [column != ""]
    if low:
        conditions.append(column >= low)
    if high:
        # "-20261130" includes the whole last day or second: compare on the prefix.
        conditions.append(func.substr(column, 1, len(high)) <= high)
        if high.isascii() and high.isdigit() and high.strip("9"):
            # The same bound as a plain comparison, which an index on the
            # column can use: a date up to 20261130 sorts below 20261131.
            following = str(int(high) + 1).zfill(len(high))
            conditions.append(column < following)
    return and_(*conditions)


def match_person_name(value: str, groups: Sequence[Any]) -> ColumnElement[bool]:
    """PN matching over the (alphabetic, ideographic, phonetic) group columns given."""
    if "=" in value:
        parts = value.split("=")
        conditions = [
            _match_upper(column, part.upper())
            for column, part in zip(groups, parts, strict=False)
            if part and part != "*"
        ]
        return and_(*conditions) if conditions else true()
    pattern = value.upper()
    return or_(*(_match_upper(column, pattern) for column in groups))


_PATIENT_NAME_GROUPS = (
    _patients.c.patient_name_alphabetic,
    _patients.c.patient_name_ideographic,
    _patients.c.patient_name_phonetic,
)


def _condition(attribute: Attribute, value: str) -> ColumnElement[bool] | None:
    value = value.strip()
    if value in ("", "*") or attribute.kind is AttributeKind.COUNT:
        return None
    column = attribute.column
    kind = attribute.kind
    if kind is AttributeKind.PERSON_NAME:
        return match_person_name(value, _PATIENT_NAME_GROUPS)
    if kind is AttributeKind.UID:
        uids = [uid.strip() for uid in value.split("\\") if uid.strip()]
        return column.in_(uids) if len(uids) > 1 else column == uids[0]  # type: ignore[no-any-return]
    if kind is AttributeKind.CODE:
        codes = [code.strip() for code in value.split("\\") if code.strip()]
        if len(codes) > 1:
            return or_(*(match_text(column, code) for code in codes))
        return match_text(column, codes[0])
    if kind is AttributeKind.MODALITIES:
        codes = [code.strip() for code in value.split("\\") if code.strip()]
        # Correlated, so the planner can probe the series of the studies the
        # other keys selected (one month) instead of reading every series of
        # the modality in the archive.
        # Any series of the study: an alias, so that at SERIES and IMAGE level
        # the subquery is not correlated to the row's own series.
        series = _modality_series
        return exists().where(
            series.c.study_pk == _studies.c.pk,
            or_(*(match_text(series.c.modality, code) for code in codes)),
        )
    if kind in (AttributeKind.DATE, AttributeKind.TIME):
        return match_range(column, value)
    if kind is AttributeKind.INTEGER:
        try:
            return column == int(value)  # type: ignore[no-any-return]
        except ValueError:
            return column.is_(None) & column.is_not(None)  # matches nothing
    if kind is AttributeKind.TEXT_CI:
        return match_text(func.upper(column), value.upper())
    return match_text(column, value)


def _counts(level: Level, wanted: Iterable[str], organisations: Sequence[str] | None) -> list[Label[Any]]:
    """The counts asked for, as columns of the outer row.

    A study's and a series' counts are columns the database's triggers keep
    (migration 0013); a patient's are sums over the patient's studies the
    caller may see, in subqueries over an aliased studies table (so that the
    outer query's own studies table is not correlated away).
    """
    labels: list[Label[Any]] = []
    st = _count_studies
    for keyword in wanted:
        attribute = ATTRIBUTES.get(keyword)
        if (
            attribute is None
            or attribute.kind is not AttributeKind.COUNT
            or attribute.level.depth > level.depth
        ):
            continue
        if keyword == "NumberOfStudyRelatedSeries":
            labels.append(_studies.c.number_of_series.label(keyword))
            continue
        if keyword == "NumberOfStudyRelatedInstances":
            labels.append(_studies.c.number_of_instances.label(keyword))
            continue
        if keyword == "NumberOfSeriesRelatedInstances":
            labels.append(_series.c.number_of_instances.label(keyword))
            continue
        if keyword == "NumberOfPatientRelatedStudies":
            total: Any = func.count()
        elif keyword == "NumberOfPatientRelatedSeries":
            total = func.coalesce(func.sum(st.c.number_of_series), 0)
        else:  # NumberOfPatientRelatedInstances
            total = func.coalesce(func.sum(st.c.number_of_instances), 0)
        q = select(total).select_from(st).where(st.c.patient_pk == _patients.c.pk)
        if organisations is not None:
            # A patient's counts include only the studies the caller may see.
            q = q.where(st.c.source_organisation.in_(organisations))
        labels.append(q.scalar_subquery().label(keyword))
    return labels


def _from_clause(level: Level) -> FromClause:
    clause: FromClause = _patients
    if level.depth >= 1:
        clause = clause.join(_studies, _studies.c.patient_pk == _patients.c.pk)
    if level.depth >= 2:
        clause = clause.join(_series, _series.c.study_pk == _studies.c.pk)
    if level.depth >= 3:
        clause = clause.join(_instances, _instances.c.series_pk == _series.c.pk)
    return clause


def build_query(
    level: Level | str,
    keys: Mapping[str, str],
    *,
    return_keys: Sequence[str] = (),
    organisations: Sequence[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> Select[Any]:
    """A SELECT whose rows map DICOM keywords to values for one level.

    ``organisations`` restricts studies (and what is below them) to those
    whose source organisation is listed; ``None`` means no restriction.
    """
    level = Level(level)
    wanted = set(return_keys) | set(keys)
    columns: list[Any] = [
        attribute.column.label(keyword)
        for keyword, attribute in ATTRIBUTES.items()
        if attribute.column is not None and attribute.level.depth <= level.depth
    ]
    columns += _counts(level, wanted, organisations)
    if level.depth >= 1:
        columns.append(_studies.c.source_organisation.label("_source_organisation"))
    if level.depth >= 3:
        columns.append(_instances.c.file_key.label("_file_key"))
        columns.append(_instances.c.size.label("_file_size"))
    stmt = select(*columns).select_from(_from_clause(level))
    for keyword, value in keys.items():
        attribute = ATTRIBUTES.get(keyword)
        if attribute is None or attribute.level.depth > level.depth:
            continue
        condition = _condition(attribute, value)
        if condition is not None:
            stmt = stmt.where(condition)
    if organisations is not None:
        if level is Level.PATIENT:
            stmt = stmt.where(
                _patients.c.pk.in_(
                    select(_studies.c.patient_pk).where(_studies.c.source_organisation.in_(organisations))
                )
            )
        else:
            stmt = stmt.where(_studies.c.source_organisation.in_(organisations))
    order = {
        Level.PATIENT: [_patients.c.pk],
        Level.STUDY: [_studies.c.study_date.desc(), _studies.c.study_time.desc(), _studies.c.pk],
        Level.SERIES: [_series.c.series_number, _series.c.pk],
        Level.IMAGE: [_instances.c.instance_number, _instances.c.pk],
    }[level]
    stmt = stmt.order_by(*order)
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset:
        stmt = stmt.offset(offset)
    return stmt
