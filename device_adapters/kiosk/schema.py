"""The JSON a kiosk sends (over MQTT or ``POST /api/kiosk/measurements``), as pydantic models.

One message is one visit at one kiosk: who (the resident ID number, and a
name if the kiosk read one from the card), when (``measured_at`` with its
UTC offset) and what (a list of measurements, each tagged by ``type``, and
optionally an ECG file). Every measurement is converted to its canonical
unit and checked against what a person can have while the message is
parsed, so a bad value is refused with the field named before anything is
stored. docs/devices.md shows an example; ``KioskMessage.model_json_schema()``
is the schema.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from device_adapters.kiosk.ranges import check_range
from device_adapters.kiosk.resident_id import ResidentId
from device_adapters.kiosk.units import CANONICAL, Unit, unit_of
from teleconsult.domain.observations import ObservationKind

__all__ = [
    "DEVICE_ID_PATTERN",
    "BloodPressure",
    "EcgAttachment",
    "EcgFile",
    "Glucose",
    "HeartRate",
    "KioskMessage",
    "Measurement",
    "Normalised",
    "SpO2",
    "Temperature",
    "Urinalysis",
    "Weight",
]

# An MQTT topic level (no / + #) and an audit actor: letters, digits, . _ -
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NO_CONTROL = re.compile(r"^[^\x00-\x1f\x7f]*$")
_MAX_ECG_FILES = 16

Number = Annotated[float, Field(allow_inf_nan=False)]


class Normalised(BaseModel):
    """A measurement in its canonical unit (what is stored and checked against alert thresholds)."""

    kind: ObservationKind
    values: dict[str, float | str]
    unit: str
    context: str | None = None


def _round(value: float) -> float:
    return round(value, 2)


class _Measurement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def normalised(self) -> Normalised:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError


class _Single(_Measurement):
    """One number and its unit; ``field`` names it in messages, ``kind`` picks the units."""

    kind: ClassVar[ObservationKind]
    field: ClassVar[str]
    value: Number
    unit: str

    def _unit(self) -> Unit:
        return unit_of(self.kind, self.unit)

    @model_validator(mode="after")
    def _check(self) -> _Single:
        unit = self._unit()  # ValueError naming the accepted units
        check_range(self.field, unit.to_canonical(self.value), self.value, unit.display)
        return self

    def normalised(self) -> Normalised:
        canonical = CANONICAL[self.kind]
        value = _round(self._unit().to_canonical(self.value))
        return Normalised(kind=self.kind, values={"value": value}, unit=canonical.ucum)


class BloodPressure(_Measurement):
    type: Literal["blood_pressure"]
    systolic: Number
    diastolic: Number
    unit: str = Field("mmHg", description="mmHg or kPa")

    @model_validator(mode="after")
    def _check(self) -> BloodPressure:
        unit = unit_of(ObservationKind.BLOOD_PRESSURE, self.unit)
        systolic, diastolic = unit.to_canonical(self.systolic), unit.to_canonical(self.diastolic)
        check_range("systolic", systolic, self.systolic, unit.display)
        check_range("diastolic", diastolic, self.diastolic, unit.display)
        if diastolic >= systolic:
            raise ValueError(
                f"diastolic {self.diastolic:g} is not below systolic {self.systolic:g}: "
                "the two were swapped or the cuff misread; measure again"
            )
        return self

    def normalised(self) -> Normalised:
        unit = unit_of(ObservationKind.BLOOD_PRESSURE, self.unit)
        return Normalised(
            kind=ObservationKind.BLOOD_PRESSURE,
            values={
                "systolic": _round(unit.to_canonical(self.systolic)),
                "diastolic": _round(unit.to_canonical(self.diastolic)),
            },
            unit=CANONICAL[ObservationKind.BLOOD_PRESSURE].ucum,
        )


class HeartRate(_Single):
    kind = ObservationKind.HEART_RATE
    field = "heart_rate"
    type: Literal["heart_rate"]
    unit: str = Field("/min", description="/min (bpm)")


class Glucose(_Single):
    kind = ObservationKind.GLUCOSE
    field = "glucose"
    type: Literal["glucose"]
    unit: str = Field(description="mmol/L or mg/dL")
    context: Literal["fasting", "random", "postprandial"] = Field(
        "random", description="When the blood was taken: fasting, random or 2 h after a meal"
    )

    def normalised(self) -> Normalised:
        return super().normalised().model_copy(update={"context": self.context})


class Temperature(_Single):
    kind = ObservationKind.TEMPERATURE
    field = "temperature"
    type: Literal["temperature"]
    unit: str = Field(description="°C (C, Cel, ℃) or °F (F, [degF], ℉)")


class SpO2(_Single):
    kind = ObservationKind.SPO2
    field = "spo2"
    type: Literal["spo2"]
    unit: str = Field("%", description="%")


class Weight(_Single):
    kind = ObservationKind.WEIGHT
    field = "weight"
    type: Literal["weight"]
    unit: str = Field("kg", description="kg, g or lb")


# Dipstick pads read semi-quantitatively. Kiosks write the grades in several ways; each is
# stored in one spelling.
GRADES = ("negative", "trace", "1+", "2+", "3+", "4+")
_GRADE_SPELLINGS = {
    "negative": "negative", "neg": "negative", "-": "negative", "−": "negative", "阴性": "negative",
    "trace": "trace", "tr": "trace", "±": "trace", "+-": "trace", "+/-": "trace", "微量": "trace",
    "1+": "1+", "+": "1+", "+1": "1+",
    "2+": "2+", "++": "2+", "+2": "2+",
    "3+": "3+", "+++": "3+", "+3": "3+",
    "4+": "4+", "++++": "4+", "+4": "4+",
}  # fmt: skip
_NITRITE_SPELLINGS = {
    "negative": "negative", "neg": "negative", "-": "negative", "−": "negative", "阴性": "negative",
    "positive": "positive", "pos": "positive", "+": "positive", "阳性": "positive",
}  # fmt: skip
_UROBILINOGEN_SPELLINGS = {"normal": "normal", "norm": "normal", "正常": "normal", **_GRADE_SPELLINGS}
_GRADED = ("glucose", "protein", "ketones", "blood", "bilirubin", "leukocytes")


def _spelled(field: str, value: str, spellings: dict[str, str]) -> str:
    key = "".join(value.split()).lower()
    if key not in spellings:
        accepted = ", ".join(dict.fromkeys(spellings.values()))
        raise ValueError(f"urinalysis {field} {value[:12]!r} is not a dipstick reading: use {accepted}")
    return spellings[key]


class Urinalysis(_Measurement):
    """A urine dipstick: each pad that was read, semi-quantitative, and pH and specific gravity."""

    type: Literal["urinalysis"]
    glucose: str | None = Field(None, description="negative, trace, 1+ ... 4+ (also -, ±, +, ++ ...)")
    protein: str | None = None
    ketones: str | None = None
    blood: str | None = None
    bilirubin: str | None = None
    leukocytes: str | None = Field(None, description="leukocyte esterase")
    urobilinogen: str | None = Field(None, description="normal, 1+ ... 4+")
    nitrite: str | None = Field(None, description="negative or positive")
    ph: Number | None = None
    specific_gravity: Number | None = None

    @field_validator(*_GRADED)
    @classmethod
    def _grade(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else _spelled(info.field_name, value, _GRADE_SPELLINGS)

    @field_validator("urobilinogen")
    @classmethod
    def _urobilinogen(cls, value: str | None) -> str | None:
        return None if value is None else _spelled("urobilinogen", value, _UROBILINOGEN_SPELLINGS)

    @field_validator("nitrite")
    @classmethod
    def _nitrite(cls, value: str | None) -> str | None:
        return None if value is None else _spelled("nitrite", value, _NITRITE_SPELLINGS)

    @model_validator(mode="after")
    def _check(self) -> Urinalysis:
        for name in ("ph", "specific_gravity"):
            value = getattr(self, name)
            if value is not None:
                check_range(name, value, value, "")
        if not self.results():
            raise ValueError("a urinalysis needs at least one pad read (glucose, protein, ... nitrite, ph)")
        return self

    def results(self) -> dict[str, float | str]:
        return {
            name: value
            for name in (*_GRADED, "urobilinogen", "nitrite", "ph", "specific_gravity")
            if (value := getattr(self, name)) is not None
        }

    def normalised(self) -> Normalised:
        return Normalised(kind=ObservationKind.URINALYSIS, values=self.results(), unit="")


Measurement = Annotated[
    BloodPressure | HeartRate | Glucose | Temperature | SpO2 | Weight | Urinalysis,
    Field(discriminator="type"),
]


class EcgFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_. -]*$",
        description="File name; its extension tells the format (.scp, .xml, .hea/.dat, .csv)",
    )
    content_base64: str = Field(min_length=4, description="The file, base64 (RFC 4648)")

    @field_validator("content_base64")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("content_base64 is not base64 (RFC 4648, with padding)") from None
        return value

    def content(self) -> bytes:
        return base64.b64decode(self.content_base64)


class EcgAttachment(BaseModel):
    """An ECG recorded at the kiosk: imported by the ECG importer as a DICOM waveform."""

    model_config = ConfigDict(extra="forbid")

    files: list[EcgFile] = Field(
        min_length=1,
        max_length=_MAX_ECG_FILES,
        description="One file; a WFDB record: the .hea and its signals",
    )

    @field_validator("files")
    @classmethod
    def _unique(cls, files: list[EcgFile]) -> list[EcgFile]:
        names = [file.name for file in files]
        if len(set(names)) != len(names):
            raise ValueError("two ECG files have one name")
        return files


class KioskMessage(BaseModel):
    """One visit at a kiosk: the villager, the time, the measurements (and an ECG)."""

    # The example is in docs/devices.md, not in the schema: schemathesis (tests/test_openapi_fuzz.py)
    # cannot combine schema examples with its generated cases.
    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(pattern=DEVICE_ID_PATTERN, description="The kiosk, as registered")
    measured_at: AwareDatetime = Field(description="When the measurements were taken, with its UTC offset")
    resident_id: ResidentId
    name: str | None = Field(
        None, min_length=1, max_length=64, description="Name as on the ID card (UTF-8), e.g. 王小明"
    )
    measurements: list[Measurement] = Field(default_factory=list, max_length=16)
    ecg: EcgAttachment | None = None

    @field_validator("measured_at")
    @classmethod
    def _measured_at(cls, value: datetime) -> datetime:
        try:
            utc = value.astimezone(UTC)
        except OverflowError:
            raise ValueError("measured_at lies outside the years 1-9999 once in UTC") from None
        if utc.year < 2000:
            raise ValueError("measured_at is before 2000: set the kiosk's clock")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value or not _NO_CONTROL.match(value) or "^" in value or "\\" in value:
            raise ValueError("name must be printable text without ^ or \\, as written on the ID card")
        return value

    @model_validator(mode="after")
    def _check(self) -> KioskMessage:
        if not self.measurements and self.ecg is None:
            raise ValueError("send at least one measurement or an ECG")
        kinds = [measurement.type for measurement in self.measurements]
        for kind in dict.fromkeys(kinds):
            if kinds.count(kind) > 1:
                raise ValueError(
                    f"two {kind} measurements in one message: send each with its own measured_at"
                )
        return self

    def measured_at_utc(self) -> datetime:
        return self.measured_at.astimezone(UTC)
