"""The demographics sidecar: what it takes, what it refuses, and that errors name the field."""

from __future__ import annotations

import contextlib
import json
from datetime import date, time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_adapters.images.errors import SidecarError
from device_adapters.images.formats import sidecar_for
from device_adapters.images.sidecar import (
    ConversionType,
    Laterality,
    Modality,
    Sex,
    read_sidecar,
    sidecar_from_fields,
)
from tests.device_adapters.images.conftest import SIDECAR, sidecar


def test_the_documented_example_is_read() -> None:
    parsed = read_sidecar(sidecar(), "x.json")
    assert parsed.patient_id == "IMG0001"
    assert parsed.patient_name == "王^小明"
    assert parsed.sex is Sex.M
    assert parsed.birth_date == date(1962, 3, 4)
    assert parsed.modality is Modality.DX
    assert parsed.study_date == date(2026, 11, 24)
    assert parsed.study_time == time(9, 30, 15)
    assert parsed.conversion_type is ConversionType.WSD
    assert (parsed.series_number, parsed.instance_number) == (1, 1)


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        ({"sex": "女"}, "sex", Sex.F),
        ({"sex": "female"}, "sex", Sex.F),
        ({"sex": ""}, "sex", None),
        ({"birth_date": "19620304"}, "birth_date", date(1962, 3, 4)),
        ({"study_date": 20261124}, "study_date", date(2026, 11, 24)),
        ({"study_time": "0930"}, "study_time", time(9, 30)),
        ({"modality": "us", "body_part": "abdomen"}, "body_part", "ABDOMEN"),
        ({"body_part": "KNEE", "laterality": "右"}, "laterality", Laterality.R),
        ({"pixel_spacing_mm": 0.139}, "pixel_spacing_mm", (0.139, 0.139)),
        ({"pixel_spacing_mm": "0.1,0.2"}, "pixel_spacing_mm", (0.1, 0.2)),
        ({"patient_id": 12345}, "patient_id", "12345"),
        ({"conversion_type": "df"}, "conversion_type", ConversionType.DF),
    ],
)
def test_lenient_where_it_is_safe(changes: dict[str, object], field: str, value: object) -> None:
    assert getattr(read_sidecar(sidecar(**changes), "x.json"), field) == value


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"patient_id": None}, "patient_id", "required"),
        ({"study_date": None}, "study_date", "required"),
        ({"modality": None}, "modality", "required"),
        ({"modality": "XX"}, "modality", "Input should be"),
        ({"patient_id": "A\\B"}, "patient_id", "backslash"),
        ({"patient_name": "a=b=c=d"}, "patient_name", "three groups"),
        ({"birth_date": "2099-01-01"}, "birth_date", "future"),
        ({"study_date": "24.11.2026"}, "study_date", "not a date"),
        ({"study_time": "25:00"}, "study_time", "not a time"),
        ({"study_time": "930"}, "study_time", "not a time"),
        ({"study_date": "2026112"}, "study_date", "not a date"),
        ({"sex": "X"}, "sex", "not M, F or O"),
        ({"body_part": "胸部"}, "body_part", "at most 16 letters"),
        ({"laterality": "L"}, "laterality", "only for a paired body part"),  # CHEST
        ({"accession_number": "A" * 17}, "accession_number", "at most 16"),
        ({"study_instance_uid": "1.2.03"}, "study_instance_uid", "not a DICOM UID"),
        ({"pixel_spacing_mm": [0, 1]}, "pixel_spacing_mm", "above 0"),
        ({"instance_number": 0}, "instance_number", "greater than or equal to 1"),
        ({"PatientID": "X"}, "PatientID", "not a sidecar field"),
    ],
)
def test_invalid_fields_are_named(changes: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(SidecarError) as raised:
        read_sidecar(sidecar(**changes), "exam.json")
    errors = dict(raised.value.errors)
    assert field in errors, raised.value.message
    assert message in errors[field]
    assert f"{field}: " in raised.value.message
    assert "'exam.json'" in raised.value.message


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "is empty"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "one JSON object"),
        (b"{}" + b" " * 70_000, "larger than"),
        (b"\xff\xfe{\x00}\x00", "neither UTF-8 nor GB18030"),
    ],
)
def test_files_that_are_no_sidecar(raw: bytes, message: str) -> None:
    with pytest.raises(SidecarError, match=message):
        read_sidecar(raw, "x.json")


def test_gb18030_and_a_byte_order_mark_are_read() -> None:
    text = json.dumps(SIDECAR, ensure_ascii=False)
    assert read_sidecar(text.encode("gb18030"), "x.json").patient_name == "王^小明"
    assert read_sidecar(b"\xef\xbb\xbf" + text.encode(), "x.json").patient_name == "王^小明"


def test_form_fields_are_validated_the_same_way() -> None:
    fields = {key: str(value) for key, value in SIDECAR.items()}
    assert sidecar_from_fields(fields) == read_sidecar(sidecar(), "x.json")
    with pytest.raises(SidecarError) as raised:
        sidecar_from_fields({**fields, "series_number": "two"})
    assert dict(raised.value.errors).keys() == {"body.series_number"}


def test_the_sidecar_of_an_image_is_the_file_of_its_stem() -> None:
    names = {"a.jpg", "a.JSON", "b.png", "b.txt", "c.json"}
    assert sidecar_for("a.jpg", names) == "a.JSON"
    assert sidecar_for("b.png", names) is None


@given(st.binary(max_size=400))
def test_any_bytes_are_a_sidecar_or_a_sidecar_error(raw: bytes) -> None:
    with contextlib.suppress(SidecarError):
        read_sidecar(raw, "x.json")


@given(
    st.dictionaries(
        st.sampled_from([*sorted(SIDECAR), "series_number", "pixel_spacing_mm", "laterality", "other"]),
        st.one_of(
            st.text(max_size=30), st.integers(), st.floats(), st.none(), st.lists(st.integers(), max_size=3)
        ),
    )
)
def test_any_values_are_a_sidecar_or_a_sidecar_error(changes: dict[str, object]) -> None:
    """Whatever a device writes, the answer is a sidecar or a SidecarError naming fields, never a crash."""
    raw = json.dumps({**SIDECAR, **changes}).encode()
    try:
        parsed = read_sidecar(raw, "x.json")
    except SidecarError:
        with pytest.raises(SidecarError) as raised:
            read_sidecar(raw, "x.json")
        assert raised.value.errors  # a valid JSON object: every refusal names its fields
    else:
        assert parsed.patient_id


def test_a_sidecar_nested_past_the_parsers_depth_is_refused_with_a_reason() -> None:
    """json.loads raises RecursionError, not JSONDecodeError, on deep nesting (was an upload's 500)."""
    with pytest.raises(SidecarError, match="too deep"):
        read_sidecar(b"[" * 30_000, "deep.json")
