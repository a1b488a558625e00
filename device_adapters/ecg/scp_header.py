"""SCP-ECG Section 1: patient and acquisition data, and the character set of its text.

Section 1 (EN 1064:2005 / ISO 11073-91064:2009, 5.4) is a list of
``tag (1 byte), length (2 bytes, little-endian), value`` fields ended by
tag 255. The fields read here:

====  ==================================  ======================================
tag   field                               value
====  ==================================  ======================================
0     last name                           text
1     first name                          text
2     patient ID                          text (required)
5     date of birth                       year (2 bytes), month, day
8     sex                                 0 unknown, 1 male, 2 female, 9 unspecified
14    acquiring device ID                 35 fixed bytes, then strings (below)
16    acquiring institution               text
18    acquiring department                text
20    referring physician                 text
25    date of acquisition                 year (2 bytes), month, day
26    time of acquisition                 hour, minute, second
27    baseline (high-pass) filter         cut-off in 0.01 Hz (2 bytes)
28    low-pass filter                     cut-off in Hz (2 bytes)
29    filter bit map                      bit 0 60 Hz notch, bit 1 50 Hz notch
34    date/time zone                      offset from UTC in minutes (signed 2 bytes; 0x7FFF none)
====  ==================================  ======================================

Text values are NUL-terminated strings in the character set given by the
*language support code*, byte 17 of tag 14 (offset 16): bit 0 clear means
ASCII; ``xxxxxx01`` ISO 8859-1; 0x03, 0x0B, 0x13, 0x1B, 0x23, 0x2B, 0x33,
0x3B ISO 8859-2, -4, -5, -6, -7, -8, -11, -15; 0x07 ISO/IEC 10646; 0x0F,
0x17, 0x1F JIS X0201, X0208, X0212; 0x27 GB 2312; 0x2F KS C5601. Other
codes are refused. How each is decoded, and why:

- GB 2312 (0x27) is decoded as GB18030, its superset, because Chinese carts
  that declare GB 2312 write GBK/GB18030 for the many surnames and given-name
  characters GB 2312 lacks.
- ISO/IEC 10646 (0x07) is decoded as UTF-8 (ISO/IEC 10646 Annex D), the only
  form of it that fits a NUL-terminated byte string; text that starts with
  a UTF-16 byte order mark is read as UTF-16.
- "ASCII" (bit 0 clear, or no tag 14) text that is not ASCII is decoded as
  UTF-8, else GB18030: carts sold in China write Chinese names while leaving
  the code at 0, and neither reading can mistake the other's Chinese text.
- ``TELECONSULT_ECG_SCP_TEXT_ENCODING`` overrides the code for carts that
  declare one character set and write another.
"""

from __future__ import annotations

import codecs
import struct
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from device_adapters.ecg.errors import EcgImportError, UnsupportedEcgError
from device_adapters.ecg.record import Device, Filters, Patient

__all__ = ["SectionOne", "read_section_one"]

_TERMINATOR = 255
_ISO_8859 = {0x03: "iso8859_2", 0x0B: "iso8859_4", 0x13: "iso8859_5", 0x1B: "iso8859_6",
             0x23: "iso8859_7", 0x2B: "iso8859_8", 0x33: "iso8859_11", 0x3B: "iso8859_15"}  # fmt: skip
_WIDE = {
    0x07: "iso-10646",
    0x0F: "shift_jis",
    0x17: "euc_jp",
    0x1F: "euc_jp",
    0x27: "gb18030",
    0x2F: "euc_kr",
}
_AUTO = "auto"  # ASCII, else UTF-8, else GB18030
_SEX = {1: "M", 2: "F"}


@dataclass(frozen=True, slots=True)
class SectionOne:
    patient: Patient
    acquired_at: datetime | None
    device: Device
    filters: Filters
    referring_physician: str
    charset: str  # the codec the text was read with (for the import log)


def _codec(language_code: int | None, override: str | None) -> str:
    if override:
        return codecs.lookup(override).name
    if language_code is None or not language_code & 0x01:
        return _AUTO
    if language_code & 0x03 == 0x01:
        return "latin-1"
    codec = _ISO_8859.get(language_code) or _WIDE.get(language_code)
    if codec is None:
        raise UnsupportedEcgError(
            f"SCP-ECG Section 1 tag 14 gives language support code 0x{language_code:02X}, "
            "which EN 1064 does not define; set TELECONSULT_ECG_SCP_TEXT_ENCODING to the cart's "
            "character set"
        )
    return codec


def _text(value: bytes, codec: str, tag: int) -> str:
    if codec == "iso-10646" and value[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raw = value
        end = next((i for i in range(0, len(raw) - 1, 2) if raw[i : i + 2] == b"\x00\x00"), len(raw))
        candidates: tuple[str, ...] = ("utf-16",)
        value = raw[: end - end % 2]
    else:
        value = value.split(b"\x00", 1)[0]
        candidates = {
            _AUTO: ("ascii", "utf-8", "gb18030"),
            "iso-10646": ("utf-8",),
        }.get(codec, (codec,))
    for candidate in candidates:
        try:
            return value.decode(candidate).strip()
        except UnicodeDecodeError:
            continue
    shown = "ASCII, UTF-8 or GB18030" if codec == _AUTO else codec
    raise EcgImportError(
        f"SCP-ECG Section 1 tag {tag} is not valid {shown} text; set TELECONSULT_ECG_SCP_TEXT_ENCODING "
        "to the cart's character set"
    )


def _date(value: bytes, tag: int) -> date | None:
    if len(value) < 4:
        raise EcgImportError(f"SCP-ECG Section 1 tag {tag} (a date) has {len(value)} bytes, not 4")
    year, month, day = struct.unpack_from("<HBB", value)
    if not (year or month or day):
        return None
    try:
        return date(year, month, day)
    except ValueError:
        raise EcgImportError(
            f"SCP-ECG Section 1 tag {tag} is not a valid date ({year}-{month}-{day})"
        ) from None


def _device(value: bytes, codec: str) -> Device:
    """Tag 14: the fixed 35 bytes, the analysing program's revision (length-prefixed), then strings."""
    if len(value) < 36:
        return Device()
    model = value[8:14].split(b"\x00", 1)[0].decode("ascii", "replace").strip()
    revision_length = value[35]
    strings = value[36 + revision_length :].split(b"\x00") + [b""] * 4
    decode = "utf-8" if codec in (_AUTO, "iso-10646") else codec

    def text(raw: bytes) -> str:
        return raw.decode(decode, "replace").strip()

    return Device(
        manufacturer=text(strings[3]),
        model=model,
        serial_number=text(strings[0]),
        software_version=text(strings[1]),
    )


def _fields(body: bytes) -> dict[int, list[bytes]]:
    fields: dict[int, list[bytes]] = {}
    pos = 0
    while pos + 3 <= len(body):
        tag, length = struct.unpack_from("<BH", body, pos)
        pos += 3
        if tag == _TERMINATOR:
            return fields
        if pos + length > len(body):
            raise EcgImportError(
                f"SCP-ECG Section 1 tag {tag} says {length} bytes but only {len(body) - pos} remain "
                "in the section: the file is damaged"
            )
        fields.setdefault(tag, []).append(body[pos : pos + length])
        pos += length
    raise EcgImportError("SCP-ECG Section 1 has no terminator (tag 255): the file is damaged")


def read_section_one(body: bytes, text_encoding: str | None = None) -> SectionOne:
    """The patient, acquisition time, device and filters of Section 1's data part."""
    fields = _fields(body)

    def first(tag: int) -> bytes | None:
        values = fields.get(tag)
        return values[0] if values else None

    machine = first(14)
    codec = _codec(machine[16] if machine is not None and len(machine) > 16 else None, text_encoding)

    def text(tag: int) -> str:
        value = first(tag)
        return "" if value is None else _text(value, codec, tag)

    sex = first(8)
    birth = first(5)
    patient = Patient(
        patient_id=text(2),
        family_name=text(0),
        given_name=text(1),
        birth_date=_date(birth, 5) if birth is not None else None,
        sex=_SEX.get(sex[0], "") if sex else "",
    )
    device = _device(machine, codec) if machine is not None else Device()
    device = Device(
        manufacturer=device.manufacturer,
        model=device.model,
        serial_number=device.serial_number,
        software_version=device.software_version,
        institution=text(16),
        department=text(18),
    )
    return SectionOne(
        patient=patient,
        acquired_at=_acquired_at(first(25), first(26), first(34)),
        device=device,
        filters=_filters(first(27), first(28), first(29)),
        referring_physician=text(20),
        charset={_AUTO: "ASCII/UTF-8/GB18030"}.get(codec, codec),
    )


def _acquired_at(day: bytes | None, time: bytes | None, zone: bytes | None) -> datetime | None:
    when = _date(day, 25) if day is not None else None
    if when is None:
        return None
    hour = minute = second = 0
    if time is not None:
        if len(time) < 3:
            raise EcgImportError(f"SCP-ECG Section 1 tag 26 (time) has {len(time)} bytes, not 3")
        hour, minute, second = time[0], time[1], time[2]
    tzinfo = None
    if zone is not None and len(zone) >= 2:
        (offset,) = struct.unpack_from("<h", zone)
        if offset != 0x7FFF and -780 <= offset <= 840:
            tzinfo = timezone(timedelta(minutes=offset))
    try:
        return datetime(when.year, when.month, when.day, hour, minute, second, tzinfo=tzinfo)
    except ValueError:
        raise EcgImportError(
            f"SCP-ECG Section 1 tag 26 is not a valid time ({hour}:{minute}:{second})"
        ) from None


def _filters(baseline: bytes | None, low_pass: bytes | None, bitmap: bytes | None) -> Filters:
    def u16(value: bytes | None) -> int:
        return struct.unpack_from("<H", value)[0] if value is not None and len(value) >= 2 else 0

    notch = None
    if bitmap:
        notch = 60.0 if bitmap[0] & 0x01 else 50.0 if bitmap[0] & 0x02 else None
    return Filters(low_hz=(u16(baseline) / 100) or None, high_hz=float(u16(low_pass)) or None, notch_hz=notch)
