"""Chinese resident identity card numbers (公民身份号码, GB 11643-1999): checked, masked, never shown whole.

The number is 18 characters: a 6-digit administrative division code, the
birth date ``YYYYMMDD``, a 3-digit sequence (odd for men, even for women)
and a check character, ISO 7064 MOD 11-2 over the first 17 digits (``X``
stands for 10). It identifies a person for life, so teleconsult treats it
like a password: ``ResidentId`` prints masked (``110105********123X``) in
``str``, ``repr``, f-strings and pydantic dumps, so a log line or an API
answer that carries one by mistake still does not show it; code that really
needs the digits (the keyed hash, the encryption) asks for ``.number``.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

__all__ = ["ResidentId", "check_character", "mask"]

_SHAPE = re.compile(r"^[1-9][0-9]{16}[0-9X]$")
# ISO 7064 MOD 11-2 weights 2^(17-i) mod 11 for the 17 digits, and the check character of each remainder.
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


def check_character(first17: str) -> str:
    """The GB 11643 check character of the first 17 digits."""
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def mask(number: str) -> str:
    """The first 6 (region) and last 4 characters, the birth date and sequence hidden."""
    return f"{number[:6]}{'*' * 8}{number[-4:]}" if len(number) == 18 else "*" * len(number)


class ResidentId:
    """A checked resident ID number; its text form is always masked.

    Raises ``ValueError`` (whose message never repeats the number) when the
    value is not 18 characters of the right shape, its birth date is not a
    date, or its check character does not match.
    """

    __slots__ = ("_number",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise ValueError("a resident ID number is a string of 18 characters")
        number = value.strip().upper()
        if len(number) != 18:
            raise ValueError(f"a resident ID number has 18 characters, not {len(number)}")
        if not _SHAPE.match(number):
            raise ValueError(
                "a resident ID number is 17 digits and a check character (a digit or X), "
                "the first digit not 0"
            )
        try:
            born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
        except ValueError:
            raise ValueError(
                "the birth date in the resident ID number (characters 7-14) is not a date"
            ) from None
        if born.year < 1850 or born > date.today():
            raise ValueError("the birth date in the resident ID number (characters 7-14) is not plausible")
        if check_character(number[:17]) != number[17]:
            raise ValueError(
                "the resident ID number's check character (GB 11643, ISO 7064 MOD 11-2) does not "
                "match: a digit was mistyped or misread"
            )
        self._number = number

    @property
    def number(self) -> str:
        """All 18 characters: only for the keyed hash and the encryption, never for display or logs."""
        return self._number

    @property
    def masked(self) -> str:
        return mask(self._number)

    @property
    def birth_date(self) -> date:
        n = self._number
        return date(int(n[6:10]), int(n[10:12]), int(n[12:14]))

    @property
    def sex(self) -> str:
        """``male`` or ``female``: the parity of the sequence's last digit (GB 11643 4.3)."""
        return "male" if int(self._number[16]) % 2 else "female"

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"ResidentId({self.masked!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ResidentId) and other._number == self._number

    def __hash__(self) -> int:
        return hash(self._number)

    # -- pydantic: validated from a string, dumped masked --------------------------------

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls._validate,
            core_schema.union_schema([core_schema.is_instance_schema(cls), core_schema.str_schema()]),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "minLength": 18,
            "maxLength": 18,
            "pattern": "^[1-9][0-9]{16}[0-9Xx]$",
            "description": "Resident identity card number (GB 11643), check character verified",
        }

    @classmethod
    def _validate(cls, value: ResidentId | str) -> ResidentId:
        return value if isinstance(value, ResidentId) else cls(value)
