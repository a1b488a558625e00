"""UID checks: what a peer sends must never reach a path, a row or a log unchecked."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teleconsult.domain.uids import check_uid, generate_uid, is_valid_uid
from teleconsult.errors import InvalidUIDError

component = st.one_of(st.just("0"), st.from_regex(r"[1-9][0-9]{0,8}", fullmatch=True))
valid_uids = st.lists(component, min_size=2, max_size=8).map(".".join).filter(lambda uid: len(uid) <= 64)


@given(valid_uids)
def test_valid_uids_pass_unchanged(uid: str) -> None:
    assert check_uid(uid, "UID") == uid


@given(st.text(max_size=80))
def test_anything_accepted_is_digits_and_dots(value: str) -> None:
    try:
        accepted = check_uid(value, "UID")
    except InvalidUIDError:
        return
    assert re.fullmatch(r"[0-9.]{1,64}", accepted)
    assert ".." not in accepted
    assert "/" not in accepted


@pytest.mark.parametrize(
    "value",
    ["", "1", "1.2.03", "1..2", "1.2.", ".1.2", "1.2.3/../4", "1.2.abc", "1.2 .3", "1." + "1" * 70, None],
)
def test_invalid_uids_are_refused_with_the_attribute_named(value: object) -> None:
    with pytest.raises(InvalidUIDError, match="Study Instance UID"):
        check_uid(value, "Study Instance UID")


def test_trailing_nul_padding_is_removed() -> None:
    assert check_uid("1.2.3\x00", "UID") == "1.2.3"


@given(st.none() | st.from_regex(r"1\.2\.[1-9][0-9]{0,20}", fullmatch=True))
def test_generated_uids_are_valid(root: str | None) -> None:
    uid = generate_uid(root)
    assert is_valid_uid(uid)
    assert uid.startswith(root + "." if root else "2.25.")
