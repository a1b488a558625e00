"""The demographics sidecar of an image export: ``x.json`` beside ``x.jpg`` (docs/devices.md).

A JPEG, PNG or BMP carries no patient, so the export comes with a small
JSON object naming the patient and the exam. ``ImageSidecar`` validates it
(unknown keys are refused, so a misspelt key is not silently lost);
``read_sidecar`` reads the file's bytes, and the upload's form fields are
validated by the same model. Errors name the field and never repeat a
patient's name, ID or birth date.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import date, datetime, time
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from device_adapters.images.errors import SidecarError
from teleconsult.domain.uids import is_valid_uid

__all__ = [
    "MAX_SIDECAR_BYTES",
    "UNPAIRED_BODY_PARTS",
    "ConversionType",
    "ImageSidecar",
    "Laterality",
    "Modality",
    "Sex",
    "read_sidecar",
    "sidecar_from_fields",
]

MAX_SIDECAR_BYTES = 64 * 1024
_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")  # backslash separates DICOM values; no control characters
_CODE_STRING = re.compile(r"^[A-Z0-9_ ]{1,16}$")
# Body parts (CID 4031 terms) without a left and right, as dicom3tools' dciodvfy knows them: a
# series of one of these has no Laterality; every other one (or none named) has it, empty if unknown.
UNPAIRED_BODY_PARTS = frozenset(
    {
        "ABDOMEN",
        "ABDOMENPELVIS",
        "AORTA",
        "BACK",
        "BLADDER",
        "BRAIN",
        "CEREBELLUM",
        "CSPINE",
        "CTSPINE",
        "CERVIX",
        "CHEST",
        "CHESTABDOMEN",
        "CHESTABDPELVIS",
        "CIRCLEOFWILLIS",
        "COCCYX",
        "COLON",
        "CORONARYARTERY",
        "DUODENUM",
        "WHOLEBODY",
        "ESOPHAGUS",
        "FACE",
        "GALLBLADDER",
        "HEAD",
        "HEADNECK",
        "HEART",
        "ILEUM",
        "ILIUM",
        "JAW",
        "JEJUNUM",
        "LARYNX",
        "LIVER",
        "LSPINE",
        "LSSPINE",
        "MAXILLA",
        "MEDIASTINUM",
        "MOUTH",
        "NECK",
        "NECKCHEST",
        "NECKCHESTABDOMEN",
        "NECKCHESTABDPELV",
        "NOSE",
        "PANCREAS",
        "PELVIS",
        "PENIS",
        "PHARYNX",
        "PROSTATE",
        "RECTUM",
        "SKULL",
        "SPINE",
        "SPLEEN",
        "STERNUM",
        "STOMACH",
        "THYMUS",
        "THYROID",
        "TONGUE",
        "TRACHEA",
        "TSPINE",
        "TLSPINE",
        "URETER",
        "URETHRA",
        "UTERUS",
        "VAGINA",
        "VULVA",
    }
)


class Modality(StrEnum):
    """Modality of the exported image (PS3.3 C.7.3.1.1.1): the kinds of device that export pictures."""

    CR = "CR"  # computed radiography
    DX = "DX"  # digital radiography
    MG = "MG"  # mammography
    IO = "IO"  # intra-oral radiography
    PX = "PX"  # panoramic X-ray
    RF = "RF"  # radiofluoroscopy
    XA = "XA"  # X-ray angiography
    US = "US"  # ultrasound
    CT = "CT"
    MR = "MR"
    NM = "NM"
    ES = "ES"  # endoscopy
    XC = "XC"  # external-camera photography
    OP = "OP"  # ophthalmic photography
    GM = "GM"  # general microscopy
    SM = "SM"  # slide microscopy
    OT = "OT"  # other


class ConversionType(StrEnum):
    """SC Equipment Conversion Type (PS3.3 C.8.6.1)."""

    WSD = "WSD"  # workstation: a device's export, the default
    DI = "DI"  # digital interface: captured from the device's digital output
    DF = "DF"  # digitized film: a film scanned or photographed


class Sex(StrEnum):
    M = "M"
    F = "F"
    O = "O"  # noqa: E741 - the DICOM code


class Laterality(StrEnum):
    R = "R"
    L = "L"


_SEX = {"M": "M", "MALE": "M", "男": "M", "F": "F", "FEMALE": "F", "女": "F", "O": "O", "OTHER": "O"}
_LATERALITY = {"R": "R", "RIGHT": "R", "右": "R", "L": "L", "LEFT": "L", "左": "L"}


def _error(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


def _text(value: str, what: str) -> str:
    if _FORBIDDEN.search(value):
        raise _error("dicom_text", f"{what} must not contain a backslash or control characters")
    return value


_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$|^(\d{4})/(\d{2})/(\d{2})$")
_TIME = re.compile(r"^(\d{2}):?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?$")


def _parse_date(value: object) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    match = _DATE.match(str(value).strip()) if isinstance(value, str | int) else None
    if match is not None:
        year, month, day = (int(part) for part in match.groups() if part is not None)
        try:
            return date(year, month, day)
        except ValueError:
            pass
    raise _error("dicom_date", "not a date (YYYY-MM-DD or YYYYMMDD)")


def _parse_time(value: object) -> time:
    if isinstance(value, time):
        return value
    match = _TIME.match(value.strip()) if isinstance(value, str) else None
    if match is not None:
        hour, minute, second, fraction = match.groups()
        try:
            return time(int(hour), int(minute), int(second or 0), int((fraction or "0").ljust(6, "0")))
        except ValueError:
            pass
    raise _error("dicom_time", "not a time of day (HH:MM:SS, HH:MM or HHMMSS)")


def _check_person_name(value: str) -> str:
    """A DICOM PN: up to three ``=``-separated groups (alphabetic, ideographic, phonetic) of ``^`` parts."""
    _text(value, "a person name")
    groups = value.split("=")
    if len(groups) > 3:
        raise _error("person_name", "at most three groups: alphabetic=ideographic=phonetic")
    for group in groups:
        if len(group) > 64:
            raise _error("person_name", "each group of a name has at most 64 characters")
        if group.count("^") > 4:
            raise _error("person_name", "at most five ^-separated parts: family^given^middle^prefix^suffix")
    return value


class ImageSidecar(BaseModel):
    """Who and what an exported image shows (docs/devices.md, "Image exports")."""

    # numbers are taken as text where text is meant ("patient_id": 12345): JSON writers do that
    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=True, coerce_numbers_to_str=True
    )

    patient_id: str = Field(min_length=1, max_length=64, description="Patient ID (required)")
    patient_name: str = Field(
        "",
        max_length=194,
        description="DICOM form: family^given, optionally alphabetic=ideographic (Wang^Xiaoming=王^小明)",
    )
    sex: Sex | None = Field(None, description="M, F or O (also male, female, 男, 女)")
    birth_date: date | None = Field(None, description="YYYY-MM-DD or YYYYMMDD")
    modality: Modality = Field(description="Modality of the exported image: DX, CR, US, OT ...")
    body_part: str = Field("", description="Body Part Examined, e.g. CHEST, ABDOMEN, KNEE")
    laterality: Laterality | None = Field(None, description="R or L (also right, left, 右, 左)")
    study_date: date = Field(description="Date of the exam: YYYY-MM-DD or YYYYMMDD (required)")
    study_time: time | None = Field(None, description="Time of the exam: HH:MM[:SS] or HHMMSS")
    accession_number: str = Field("", max_length=16)
    study_description: str = Field("", max_length=64)
    study_instance_uid: str | None = Field(
        None, description="Add the image to this study (otherwise derived from accession number and patient)"
    )
    series_description: str = Field("", max_length=64)
    series_number: int = Field(1, ge=1, le=2**31 - 1)
    instance_number: int = Field(1, ge=1, le=2**31 - 1)
    pixel_spacing_mm: Annotated[tuple[float, float], Field(description="row, column spacing")] | None = None
    conversion_type: ConversionType = Field(
        ConversionType.WSD, description="WSD (a device's export), DI (digital interface), DF (digitized film)"
    )

    @field_validator("patient_id", "accession_number", "study_description", "series_description")
    @classmethod
    def _no_separators(cls, value: str) -> str:
        return _text(value, "the value")

    @field_validator("patient_name")
    @classmethod
    def _person_name(cls, value: str) -> str:
        return _check_person_name(value)

    @field_validator("sex", mode="before")
    @classmethod
    def _sex(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return None
            sex = _SEX.get(text.upper())
            if sex is None:
                raise _error("sex", "not M, F or O (male, female, other, 男, 女)")
            return sex
        return value

    @field_validator("laterality", mode="before")
    @classmethod
    def _laterality(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return None
            side = _LATERALITY.get(text.upper())
            if side is None:
                raise _error("laterality", "not R or L (right, left, 右, 左)")
            return side
        return value

    @field_validator("modality", "conversion_type", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("birth_date", mode="before")
    @classmethod
    def _birth_date(cls, value: object) -> object:
        if value is None or value == "":
            return None
        parsed = _parse_date(value)
        if parsed > date.today():
            raise _error("dicom_date", "a birth date in the future")
        return parsed

    @field_validator("study_date", mode="before")
    @classmethod
    def _study_date(cls, value: object) -> object:
        return _parse_date(value)

    @field_validator("study_time", mode="before")
    @classmethod
    def _study_time(cls, value: object) -> object:
        return None if value is None or value == "" else _parse_time(value)

    @field_validator("body_part", mode="before")
    @classmethod
    def _body_part(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip().upper()
        if text and not _CODE_STRING.match(text):
            raise _error("body_part", "at most 16 letters, digits, spaces or _ (e.g. CHEST, ABDOMEN)")
        return text

    @field_validator("study_instance_uid", mode="before")
    @classmethod
    def _uid(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not is_valid_uid(value.strip() if isinstance(value, str) else value):
            raise _error("uid", "not a DICOM UID (digits and dots, at most 64 characters)")
        return value

    @field_validator("pixel_spacing_mm", mode="before")
    @classmethod
    def _spacing(cls, value: object) -> object:
        if value is None or value == "":
            return None
        if isinstance(value, str):
            value = [part for part in re.split(r"[\s,\\]+", value.strip()) if part]
        if isinstance(value, int | float):
            value = [value, value]
        if isinstance(value, list | tuple) and len(value) == 1:
            value = [value[0], value[0]]
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise _error("pixel_spacing", "one number (square pixels) or two: row spacing, column spacing")
        try:
            numbers = [float(part) for part in value]
        except (TypeError, ValueError):
            raise _error("pixel_spacing", "not a number of millimetres") from None
        if not all(0 < number <= 100 for number in numbers):
            raise _error("pixel_spacing", "millimetres per pixel must be above 0 and at most 100")
        return tuple(numbers)

    @model_validator(mode="after")
    def _paired(self) -> ImageSidecar:
        if self.laterality is not None and self.body_part in UNPAIRED_BODY_PARTS:
            raise _error(
                "laterality",
                f"laterality is only for a paired body part, and {self.body_part} is not one: leave it out",
            )
        return self


def _field_errors(exc: ValidationError, prefix: str) -> list[tuple[str, str]]:
    errors = []
    for error in exc.errors(include_input=False, include_url=False):
        # a check across fields (laterality and body part) has no location: its type names the field
        location = ".".join(str(part) for part in error.get("loc", ())) or str(error.get("type", ""))
        message = error.get("msg", "invalid")
        if error.get("type") == "extra_forbidden":
            message = "not a sidecar field (see docs/devices.md)"
        elif error.get("type") == "missing":
            message = "required"
        errors.append((f"{prefix}{location}", message))
    return errors


def _validated(values: Mapping[str, Any], what: str, prefix: str) -> ImageSidecar:
    try:
        return ImageSidecar.model_validate(dict(values))
    except ValidationError as exc:
        errors = _field_errors(exc, prefix)
        listed = "; ".join(f"{field}: {message}" for field, message in errors)
        raise SidecarError(f"{what} is invalid: {listed}"[:900], errors=errors) from None


def _decode(raw: bytes, what: str) -> str:
    """UTF-8 (a byte order mark is dropped), else GB18030 as Chinese Windows tools write it."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    for codec in ("utf-8", "gb18030"):
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            continue
    raise SidecarError(f"{what} is neither UTF-8 nor GB18030 text")


def read_sidecar(raw: bytes, name: str) -> ImageSidecar:
    """The sidecar in ``raw`` (the bytes of the file ``name``); SidecarError naming each bad field."""
    what = f"the sidecar {name[:80]!r}"
    if len(raw) > MAX_SIDECAR_BYTES:
        raise SidecarError(f"{what} is larger than {MAX_SIDECAR_BYTES} bytes: it is not a sidecar")
    if not raw.strip():
        raise SidecarError(f"{what} is empty")
    try:
        values = json.loads(_decode(raw, what))
    except json.JSONDecodeError as exc:
        raise SidecarError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:
        raise SidecarError(f"{what} nests JSON arrays or objects too deep: it is not a sidecar") from None
    if not isinstance(values, dict):
        raise SidecarError(f"{what} must be one JSON object ({{...}}), not a {type(values).__name__}")
    return _validated(values, what, "")


def sidecar_from_fields(fields: Mapping[str, Any]) -> ImageSidecar:
    """The sidecar made of an upload's form fields (``body.<field>`` in the errors)."""
    return _validated(fields, "the form fields", "body.")
