"""The query mix: what a county viewer asks, with values drawn from the corpus and the count it expects.

Each kind is drawn ``runs`` times with a different random study as the source
of its value (a study's UID, its patient, its month and modality, its year,
its patient's name prefix), so frequent modalities and common surnames are
asked about as often as they occur. The expected number of matches is
computed from the corpus, never from a server.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pydicom.dataset import Dataset

from bench.query.corpus import Corpus, Study

__all__ = ["KINDS", "Query", "QueryKind", "draw_queries"]

_STUDY_RETURN_KEYS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
_SERIES_RETURN_KEYS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "NumberOfSeriesRelatedInstances",
)


@dataclass(frozen=True, slots=True)
class QueryKind:
    name: str
    level: str
    label: str  # how the table names it


KINDS = (
    QueryKind("study_uid", "STUDY", "StudyInstanceUID"),
    QueryKind("patient_id", "STUDY", "PatientID"),
    QueryKind("series", "SERIES", "series of a study"),
    QueryKind("month_modality", "STUDY", "one month + modality"),
    QueryKind("name_prefix", "STUDY", 'name prefix, e.g. "王小*"'),
    QueryKind("year", "STUDY", "one year"),
)


@dataclass(frozen=True, slots=True)
class Query:
    """One C-FIND: its matching keys and the UIDs it must return (study or series UIDs by level)."""

    kind: QueryKind
    keys: dict[str, str]
    expected_uids: frozenset[str]

    @property
    def expected(self) -> int:
        return len(self.expected_uids)

    @property
    def unique_key(self) -> str:
        """The keyword whose values ``expected_uids`` holds."""
        return "SeriesInstanceUID" if self.kind.level == "SERIES" else "StudyInstanceUID"

    def identifier_keys(self) -> list[tuple[str, str]]:
        """(keyword, value) of every identifier element in order: return keys empty, matching keys set."""
        keywords = _SERIES_RETURN_KEYS if self.kind.level == "SERIES" else _STUDY_RETURN_KEYS
        return [
            ("SpecificCharacterSet", "ISO_IR 192"),
            ("QueryRetrieveLevel", self.kind.level),
            *((keyword, self.keys.get(keyword, "")) for keyword in keywords),
        ]

    def identifier(self) -> Dataset:
        """The Study Root identifier, UTF-8 declared."""
        ds = Dataset()
        for keyword, value in self.identifier_keys():
            setattr(ds, keyword, value)
        return ds


def _month_range(study_date: str) -> tuple[str, str]:
    year, month = int(study_date[:4]), int(study_date[4:6])
    next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
    last = date(next_year, next_month, 1) - timedelta(days=1)
    return f"{year:04d}{month:02d}01", last.strftime("%Y%m%d")


def _uids(studies: Iterable[Study]) -> frozenset[str]:
    return frozenset(study.study_instance_uid for study in studies)


class _Drawer:
    """Draws queries of each kind from random studies of one corpus."""

    def __init__(self, corpus: Corpus, seed: int) -> None:
        self.corpus = corpus
        self.rng = random.Random(seed)
        self.by_patient: dict[str, list[Study]] = defaultdict(list)
        for study in corpus.studies:
            self.by_patient[study.patient.patient_id].append(study)

    def study(self) -> Study:
        return self.corpus.studies[self.rng.randrange(len(self.corpus.studies))]

    def draw(self, kind: QueryKind) -> Query:
        method: Any = getattr(self, f"_{kind.name}")
        keys, expected = method()
        return Query(kind, keys, expected)

    def _study_uid(self) -> tuple[dict[str, str], frozenset[str]]:
        study = self.study()
        return {"StudyInstanceUID": study.study_instance_uid}, _uids([study])

    def _patient_id(self) -> tuple[dict[str, str], frozenset[str]]:
        patient_id = self.study().patient.patient_id
        return {"PatientID": patient_id}, _uids(self.by_patient[patient_id])

    def _series(self) -> tuple[dict[str, str], frozenset[str]]:
        study = self.study()
        series = frozenset(s.series_instance_uid for s in study.series)
        return {"StudyInstanceUID": study.study_instance_uid}, series

    def _month_modality(self) -> tuple[dict[str, str], frozenset[str]]:
        study = self.study()
        low, high = _month_range(study.study_date)
        modality = self.rng.choice(sorted(study.modalities))
        studies = self.corpus.studies_between(low, high, modality)
        return {"StudyDate": f"{low}-{high}", "ModalitiesInStudy": modality}, _uids(studies)

    def _name_prefix(self) -> tuple[dict[str, str], frozenset[str]]:
        while (prefix := self.study().patient.hanzi_prefix) is None:
            pass
        pattern = f"{prefix}*"
        return {"PatientName": pattern}, _uids(self.corpus.studies_named(pattern))

    def _year(self) -> tuple[dict[str, str], frozenset[str]]:
        year = self.study().study_date[:4]
        low, high = f"{year}0101", f"{year}1231"
        return {"StudyDate": f"{low}-{high}"}, _uids(self.corpus.studies_between(low, high))


def draw_queries(corpus: Corpus, runs: int, seed: int) -> dict[str, list[Query]]:
    """``runs`` queries of each kind, reproducible from ``seed``."""
    drawer = _Drawer(corpus, seed)
    return {kind.name: [drawer.draw(kind) for _ in range(runs)] for kind in KINDS}
