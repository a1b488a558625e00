"""Patient and signer names as the PDF and FHIR show them: as people write them."""

from __future__ import annotations

import pytest

from teleconsult.consults.outputs.document import person_name_text


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("王^小明", "王小明"),  # a Chinese name in the first group, as many devices write it
        ("王小明", "王小明"),
        ("Wang^Xiaoming", "Wang Xiaoming"),
        ("Wang^Xiaoming=王^小明", "王小明 (Wang Xiaoming)"),
        ("=王^小明", "王小明"),
        ("欧阳^娜娜", "欧阳娜娜"),
        ("王^Xiaoming", "王 Xiaoming"),  # mixed scripts keep the separating space
        ("", ""),
    ],
)
def test_names_read_as_written(name: str, shown: str) -> None:
    assert person_name_text(name) == shown
