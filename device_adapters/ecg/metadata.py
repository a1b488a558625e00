"""``# key: value`` lines: how CSV files and WFDB headers carry patient and acquisition details.

CSV has no place for a patient, and a WFDB header only free comments, so
both take the same comment lines (documented in docs/devices.md). Their
text is UTF-8, or GB18030 as Chinese spreadsheet exports write it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime

from device_adapters.ecg.errors import EcgImportError
from device_adapters.ecg.record import Device, Filters, Patient

__all__ = [
    "KEYS",
    "acquired_at",
    "collect",
    "decode_text",
    "device_from",
    "filters_from",
    "parse_metadata_line",
    "patient_from",
    "positive_number",
]

KEYS = frozenset(
    {
        "patient_id",
        "patient_name",
        "birth_date",
        "sex",
        "sampling_rate",
        "units",
        "acquired",
        "manufacturer",
        "model",
        "serial_number",
        "institution",
        "filter_low",
        "filter_high",
        "notch",
    }
)
_LINE = re.compile(r"^#\s*([A-Za-z][A-Za-z0-9 _-]*?)\s*[:=]\s*(.*?)\s*$")
_SEX = {"M": "M", "MALE": "M", "男": "M", "F": "F", "FEMALE": "F", "女": "F", "O": "O", "OTHER": "O"}


def decode_text(raw: bytes, what: str) -> str:
    """UTF-8 (a byte order mark is dropped), else GB18030; anything else is refused."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    for codec in ("utf-8", "gb18030"):
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            continue
    raise EcgImportError(f"{what} is neither UTF-8 nor GB18030 text")


def parse_metadata_line(line: str) -> tuple[str, str] | None:
    """``("patient_id", "P1")`` for ``# patient_id: P1`` or ``# Patient ID = P1``; None for other comments."""
    match = _LINE.match(line.strip())
    if match is None:
        return None
    key = re.sub(r"[ -]+", "_", match[1].strip().lower())
    return (key, match[2]) if key in KEYS else None


def _date(value: str, what: str) -> date | None:
    text = value.strip()
    if not text:
        return None
    for pattern in ("%Y%m%d", "%Y-%m-%d", "%Y/%m/%d"):
        try:
            return datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    raise EcgImportError(f"{what} {text!r} is not a date (YYYY-MM-DD or YYYYMMDD)")


def acquired_at(meta: Mapping[str, str], what: str) -> datetime | None:
    """``acquired``: ISO 8601 (offset optional) or YYYYMMDDHHMMSS."""
    text = meta.get("acquired", "").strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%S")
    except ValueError:
        raise EcgImportError(
            f"{what} acquired {text!r} is not a date and time (ISO 8601, e.g. 2026-11-24T09:30:00+08:00)"
        ) from None


def positive_number(value: str, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise EcgImportError(f"{what} {value.strip()[:20]!r} is not a number") from None
    if not 0 < number < float("inf"):
        raise EcgImportError(f"{what} must be a positive number, not {value.strip()[:20]!r}")
    return number


def patient_from(meta: Mapping[str, str], what: str) -> Patient:
    name = meta.get("patient_name", "").strip()
    family, _, given = name.partition("^")
    sex_text = meta.get("sex", "").strip()
    sex = _SEX.get(sex_text.upper()) if sex_text else ""
    if sex is None:
        raise EcgImportError(f"{what} sex {sex_text[:10]!r} is not M, F or O")
    return Patient(
        patient_id=meta.get("patient_id", "").strip(),
        family_name=family.strip(),
        given_name=given.strip().replace("^", " "),
        birth_date=_date(meta.get("birth_date", ""), f"{what} birth_date"),
        sex=sex,
    )


def device_from(meta: Mapping[str, str]) -> Device:
    return Device(
        manufacturer=meta.get("manufacturer", "").strip(),
        model=meta.get("model", "").strip(),
        serial_number=meta.get("serial_number", "").strip(),
        institution=meta.get("institution", "").strip(),
    )


def filters_from(meta: Mapping[str, str], what: str) -> Filters:
    values: dict[str, float | None] = {}
    for key, field in (("filter_low", "low_hz"), ("filter_high", "high_hz"), ("notch", "notch_hz")):
        text = meta.get(key, "").strip()
        values[field] = positive_number(text, f"{what} {key}") if text else None
    return Filters(**values)


def collect(lines: Iterable[str]) -> dict[str, str]:
    """The metadata of ``lines``; a key given twice keeps its last value."""
    meta: dict[str, str] = {}
    for line in lines:
        parsed = parse_metadata_line(line)
        if parsed is not None:
            meta[parsed[0]] = parsed[1]
    return meta
