"""Matching (shared by C-FIND and QIDO-RS) against a reference implementation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.uid import ExplicitVRLittleEndian

from teleconsult.config import Settings
from teleconsult.events import EventBus
from teleconsult.storage.matching import ATTRIBUTES, Level, wildcard_to_like
from teleconsult.storage.store import InstanceStore
from tests.factories import encode, make_image

NAMES = [
    "Wang^XiaoMing=王^小明",
    "王^小红",
    "Wang^Fang=王^芳",
    "Li^Hua=李^华",
    "李^小明",
    "Zhang^Wei",
    "ZHANG^WEI^^DR",
    "O'Brien^Ann",
    "100%^Sure",
    "Under_Score^X",
]
DATES = [
    "20240105",
    "20241231",
    "20250101",
    "20250615",
    "20261123",
    "",
    "20261130",
    "19991231",
    "20000101",
    "",
]
ALPHABET = sorted({c for name in NAMES for c in name if c not in "=^"} | {"*", "?", "^"})


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstanceStore]:
    root: Path = tmp_path_factory.mktemp("matching")
    store = InstanceStore(Settings(data_dir=root), EventBus())
    store.open()
    for number, (name, date) in enumerate(zip(NAMES, DATES, strict=True)):
        ds = make_image(charset="ISO_IR 192", patient_name=name, patient_id=f"ID{number}")
        ds.StudyDate = date
        store.store_instance(
            encode(ds), ExplicitVRLittleEndian, calling_ae_title="T", source_organisation="T"
        )
    yield store
    store.close()


def _reference_wildcard(pattern: str, value: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def _reference_name_match(pattern: str, name: str) -> bool:
    groups = [*name.split("="), "", ""][:3]
    return any(_reference_wildcard(pattern.upper(), group.upper()) for group in groups)


@given(st.text(alphabet=ALPHABET, min_size=1, max_size=6))
def test_person_name_wildcards_agree_with_the_reference(populated: InstanceStore, pattern: str) -> None:
    if pattern == "*":
        return
    rows = populated.index.query("PATIENT", {"PatientName": pattern}, return_keys=["PatientName"])
    found = {row["PatientName"] for row in rows}
    expected = {name for name in NAMES if _reference_name_match(pattern, name)}
    assert found == expected


@given(
    st.sampled_from([d for d in DATES if d] + ["2024", "20250101"]),
    st.sampled_from([d for d in DATES if d] + ["2026", "20991231"]),
    st.sampled_from(["range", "from", "until", "single"]),
)
def test_date_ranges_agree_with_the_reference(
    populated: InstanceStore, low: str, high: str, form: str
) -> None:
    value = {"range": f"{low}-{high}", "from": f"{low}-", "until": f"-{high}", "single": low}[form]
    rows = populated.index.query("STUDY", {"StudyDate": value}, return_keys=["StudyDate"])
    found = sorted(row["StudyDate"] for row in rows)

    def inside(date: str) -> bool:
        if not date:
            return False
        if form == "single":
            return date == low
        after = form == "until" or date >= low
        before = form == "from" or date[: len(high)] <= high
        return after and before

    assert found == sorted(d for d in DATES if inside(d))


@pytest.mark.parametrize(
    ("value", "like"),
    [("100%", "100\\%"), ("a_b", "a\\_b"), ("王*", "王%"), ("A?C", "A_C"), ("x\\y", "x\\\\y")],
)
def test_sql_wildcards_in_values_are_literal(value: str, like: str) -> None:
    assert wildcard_to_like(value) == like


def test_literal_percent_and_underscore_match_only_themselves(populated: InstanceStore) -> None:
    names = {r["PatientName"] for r in populated.index.query("PATIENT", {"PatientName": "100%*"})}
    assert names == {"100%^Sure"}
    names = {r["PatientName"] for r in populated.index.query("PATIENT", {"PatientName": "Under_*"})}
    assert names == {"Under_Score^X"}


@pytest.mark.parametrize("level", ["PATIENT", "STUDY", "SERIES", "IMAGE"])
def test_every_count_of_this_level_and_above_can_be_returned(populated: InstanceStore, level: str) -> None:
    counts = [
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "NumberOfSeriesRelatedInstances",
    ]
    rows = populated.index.query(level, {"PatientID": "ID0"}, return_keys=counts)
    assert len(rows) == 1
    returned = {key for key in counts if key in rows[0]}
    expected = {key for key in counts if ATTRIBUTES[key].level.depth <= Level(level).depth}
    assert returned == expected
    assert all(rows[0][key] == 1 for key in returned)


# -- the same answers on both databases, in the forms the 0006 indexes serve ---------

NAME_PATTERNS = [
    "王*",
    "王^小*",
    "王^小明",
    "WANG*",
    "wang^xiao*",
    "Wang^XiaoMing",
    "李*",
    "*小*",
    "?^*",
    "100%*",
    "UNDER_*",
    "Under\\*",
    "Wang*=王*",
    "*=王^芳",
    "ZHANG^WEI",
]
DATE_RANGES = [
    "20240101-20241231",
    "20250101-20250101",
    "-20241231",
    "20250615-",
    "2024-2025",
    "-2026",
    "19991231-20000101",
    "20261130",
    "20250101-20251299",
    "99991231-",
]


@pytest.fixture
def populated_both(store: InstanceStore) -> InstanceStore:
    """The module's names and dates, on SQLite and on PostgreSQL."""
    for number, (name, date) in enumerate(zip(NAMES, DATES, strict=True)):
        ds = make_image(charset="ISO_IR 192", patient_name=name, patient_id=f"ID{number}")
        ds.StudyDate = date
        store.store_instance(
            encode(ds), ExplicitVRLittleEndian, calling_ae_title="T", source_organisation="T"
        )
    return store


def test_person_names_and_date_ranges_match_alike_on_both_databases(populated_both: InstanceStore) -> None:
    index = populated_both.index
    for pattern in NAME_PATTERNS:
        rows = index.query("STUDY", {"PatientName": pattern}, return_keys=["PatientName"])
        if "=" in pattern:
            expected = {
                name
                for name in NAMES
                if all(
                    _reference_wildcard(part.upper(), group.upper())
                    for part, group in zip(pattern.split("="), [*name.split("="), "", ""], strict=False)
                    if part and part != "*"
                )
            }
        else:
            expected = {name for name in NAMES if _reference_name_match(pattern, name)}
        assert {row["PatientName"] for row in rows} == expected, pattern
    for value in DATE_RANGES:
        rows = index.query("STUDY", {"StudyDate": value}, return_keys=["StudyDate"])
        low, dash, high = value.partition("-")
        expected_dates = sorted(
            d
            for d in DATES
            if d
            and (d == low if not dash else (not low or d >= low) and (not high or d[: len(high)] <= high))
        )
        assert sorted(row["StudyDate"] for row in rows) == expected_dates, value


def test_a_prefix_query_is_not_confused_by_a_cached_statement(populated_both: InstanceStore) -> None:
    """The same SQL shape with other values (a cached compiled statement) binds the new values."""
    index = populated_both.index
    first = {r["PatientName"] for r in index.query("PATIENT", {"PatientName": "王*"})}
    second = {r["PatientName"] for r in index.query("PATIENT", {"PatientName": "李*"})}
    assert first == {name for name in NAMES if _reference_name_match("王*", name)}
    assert second == {name for name in NAMES if _reference_name_match("李*", name)}
    assert first
    assert second
    assert not first & second
