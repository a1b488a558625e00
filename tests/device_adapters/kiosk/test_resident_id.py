"""GB 11643 resident ID numbers: the MOD 11-2 check character, masking, what the number tells."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from device_adapters.kiosk.resident_id import ResidentId, check_character, mask
from tests.device_adapters.kiosk.conftest import ID_DIGIT, ID_X, resident_id


def test_the_published_example_has_check_character_x() -> None:
    # GB 11643-1999's worked example: 11010519491231002 -> X
    assert check_character("11010519491231002") == "X"
    assert ResidentId("11010519491231002X").number == "11010519491231002X"


def test_valid_numbers_with_a_digit_and_with_x() -> None:
    assert ResidentId(ID_DIGIT).number == ID_DIGIT
    assert ResidentId(ID_X.lower()).number == ID_X  # a lower-case x is read as X
    assert ResidentId(f"  {ID_X} ").number == ID_X


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (ID_X[:-1] + "0", "check character"),
        (ID_DIGIT[:-1] + "X", "check character"),
        (ID_DIGIT[:17], "18 characters, not 17"),
        (ID_DIGIT + "1", "18 characters, not 19"),
        ("0" + ID_DIGIT[1:], "first digit not 0"),
        (ID_DIGIT[:5] + "A" + ID_DIGIT[6:], "17 digits and a check character"),
        (resident_id("19490231"), "not a date"),
        (resident_id("21990101"), "not plausible"),
    ],
)
def test_invalid_numbers_are_refused_without_repeating_them(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        ResidentId(value)
    assert value not in str(caught.value)
    assert value[6:14] not in str(caught.value)  # not even the birth date


digits = st.text("0123456789", min_size=3, max_size=3)
births = st.dates(min_value=date(1900, 1, 1), max_value=date(2025, 12, 31))


@given(births, digits, st.integers(0, 16), st.integers(1, 9))
def test_every_single_digit_error_is_caught(born: date, sequence: str, position: int, shift: int) -> None:
    """MOD 11-2 detects any one changed digit: the point of the check character."""
    number = resident_id(born.strftime("%Y%m%d"), sequence)
    assert ResidentId(number).number == number
    changed = str((int(number[position]) + shift) % 10)
    wrong = number[:position] + changed + number[position + 1 :]
    assert check_character(wrong[:17]) != wrong[17]
    # refused for its check character (or, first, for the date or leading zero the change made)
    with pytest.raises(ValueError, match=r"check character|birth date|first digit not 0"):
        ResidentId(wrong)


def test_masked_everywhere_it_is_printed() -> None:
    rid = ResidentId(ID_X)
    assert rid.masked == "110105********002X" == mask(ID_X)
    for text in (str(rid), repr(rid), f"{rid}", "%s" % rid):  # noqa: UP031 - the logging style
        assert ID_X not in text
        assert "********" in text

    class Holder(BaseModel):
        resident_id: ResidentId

    holder = Holder(resident_id=ID_X)
    assert ID_X not in holder.model_dump_json()
    assert ID_X not in repr(holder)
    assert holder.model_dump()["resident_id"] == "110105********002X"


def test_birth_date_and_sex_come_from_the_number() -> None:
    man = ResidentId(resident_id("19620304", "123"))  # 3: odd
    woman = ResidentId(resident_id("19620304", "124"))
    assert man.birth_date == date(1962, 3, 4)
    assert (man.sex, woman.sex) == ("male", "female")
