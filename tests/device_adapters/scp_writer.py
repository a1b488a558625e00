"""A test-side SCP-ECG writer, built from EN 1064:2005 / ISO 11073-91064 (see device_adapters/ecg/scp.py).

Writes what the reader claims to read: Section 0 with the twelve pointers
(and "SCPECG" in its reserved bytes), Section 1 tags with the language
support code in tag 14, Section 2 (default Huffman table) when asked,
Section 3 and Section 6 with uncompressed 16-bit or default-Huffman data,
as samples or first or second differences. Every CRC is CRC-CCITT (0x1021,
initial 0xFFFF) stored little-endian. An independent reader (ecgdatakit)
reads these files in the tests too, so writer and reader cannot merely
agree with each other.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np

SCP_LEAD_NUMBERS = {
    "I": 1, "II": 2, "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8,
    "III": 61, "aVR": 62, "aVL": 63, "aVF": 64,
}  # fmt: skip
LANGUAGE_ASCII = 0x00
LANGUAGE_LATIN1 = 0x01
LANGUAGE_ISO10646 = 0x07
LANGUAGE_GB2312 = 0x27


def crc(data: bytes) -> int:
    return binascii.crc_hqx(data, 0xFFFF)


def section(section_id: int, body: bytes, *, reserved: bytes = b"\x00" * 6, version: int = 20) -> bytes:
    if len(body) % 2:
        body += b"\x00"  # sections have an even length
    rest = struct.pack("<HIBB", section_id, 16 + len(body), version, version) + reserved + body
    return struct.pack("<H", crc(rest)) + rest


def text(value: str, encoding: str) -> bytes:
    return value.encode(encoding) + b"\x00"


def machine_id(
    language_code: int, *, manufacturer: str = "ACME", model: str = "CART1", serial: str = "SN42"
) -> bytes:
    fixed = struct.pack("<HHHBB", 1, 2, 3, 0, 255) + model.encode("ascii")[:5].ljust(6, b"\x00")
    fixed += bytes([20, 0xA0, language_code, 0x00, 1]) + b"\x00" * 16
    assert len(fixed) == 35
    revision = b"1.0\x00"
    strings = [serial, "CART-SW 2.1", "SCP 2.0", manufacturer]
    return fixed + bytes([len(revision)]) + revision + b"".join(s.encode("ascii") + b"\x00" for s in strings)


def section1(tags: Sequence[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack("<BH", tag, len(value)) + value for tag, value in tags)
    return body + struct.pack("<BH", 255, 0)


def differences(samples: np.ndarray, order: int) -> np.ndarray:
    x = samples.astype(np.int64)
    if order == 1:
        return np.concatenate((x[:1], np.diff(x)))
    if order == 2:
        return np.concatenate((x[:2], x[2:] - 2 * x[1:-1] + x[:-2]))
    return x


def huffman(values: np.ndarray) -> bytes:
    """The default table's codes (most significant bit first), padded with zeros to a byte."""
    bits: list[str] = []
    for value in values.tolist():
        magnitude = abs(value)
        if value == 0:
            bits.append("0")
        elif magnitude <= 8:
            bits.append("1" * magnitude + "0" + ("1" if value < 0 else "0"))
        elif -128 <= value <= 127:
            bits.append("1111111110" + format(value & 0xFF, "08b"))
        else:
            bits.append("1111111111" + format(value & 0xFFFF, "016b"))
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return int(stream, 2).to_bytes(len(stream) // 8, "big") if stream else b""


@dataclass
class ScpSpec:
    """What to write; defaults make a valid 12-lead, 10 s, 500 Hz, GB 2312-coded record."""

    leads: dict[str, np.ndarray]
    patient_id: str = "P0001"
    family_name: str = "王"
    given_name: str = "小明"
    text_encoding: str = "gb18030"
    language_code: int | None = LANGUAGE_GB2312
    birth_date: date | None = date(1962, 3, 4)
    sex: int = 1
    acquired: datetime | None = datetime(2026, 11, 24, 9, 30, 15)
    timezone_minutes: int | None = 480
    avm_nv: int = 5000
    interval_us: int = 2000
    difference_order: int = 0
    use_huffman: bool = False
    huffman_tables: int = 19999
    bimodal: int = 0
    lead_flags: int | None = None
    extra_tags: list[tuple[int, bytes]] = field(default_factory=list)
    omit_tags: set[int] = field(default_factory=set)


def section6(spec: ScpSpec) -> bytes:
    chunks = []
    for samples in spec.leads.values():
        values = differences(samples, spec.difference_order)
        chunks.append(huffman(values) if spec.use_huffman else values.astype("<i2").tobytes())
    head = struct.pack("<HHBB", spec.avm_nv, spec.interval_us, spec.difference_order, spec.bimodal)
    return head + struct.pack(f"<{len(chunks)}H", *map(len, chunks)) + b"".join(chunks)


def section3(spec: ScpSpec) -> bytes:
    count = len(spec.leads)
    flags = spec.lead_flags if spec.lead_flags is not None else (0x04 | (min(count, 31) << 3))
    body = bytes([count, flags])
    for name, samples in spec.leads.items():
        body += struct.pack("<IIB", 1, len(samples), SCP_LEAD_NUMBERS[name])
    return body


def tags(spec: ScpSpec) -> list[tuple[int, bytes]]:
    out = [
        (0, text(spec.family_name, spec.text_encoding)),
        (1, text(spec.given_name, spec.text_encoding)),
        (2, text(spec.patient_id, "ascii")),
    ]
    if spec.birth_date:
        out.append((5, struct.pack("<HBB", spec.birth_date.year, spec.birth_date.month, spec.birth_date.day)))
    out.append((8, bytes([spec.sex])))
    if spec.language_code is not None:
        out.append((14, machine_id(spec.language_code)))
    out.append(
        (
            16,
            text(
                "一号乡镇卫生院" if spec.text_encoding in ("gb18030", "utf-8") else "Township 1",
                spec.text_encoding,
            ),
        )
    )
    if spec.acquired:
        a = spec.acquired
        out.append((25, struct.pack("<HBB", a.year, a.month, a.day)))
        out.append((26, bytes([a.hour, a.minute, a.second])))
    out.append((27, struct.pack("<H", 5)))  # 0.05 Hz
    out.append((28, struct.pack("<H", 150)))  # 150 Hz
    out.append((29, bytes([0x02])))  # 50 Hz notch
    if spec.timezone_minutes is not None:
        out.append((34, struct.pack("<hH", spec.timezone_minutes, 0)))
    out.extend(spec.extra_tags)
    return [(tag, value) for tag, value in out if tag not in spec.omit_tags]


def build_record(sections: dict[int, bytes]) -> bytes:
    """Section 0 (pointers to 0-11 and any others present) followed by the given sections."""
    ids = sorted(set(range(12)) | set(sections))
    section0_length = 16 + 10 * len(ids)
    index = 7 + section0_length
    pointers = [(0, section0_length, 7)]
    placed = []
    for section_id in ids[1:]:
        data = sections.get(section_id)
        if data is None:
            pointers.append((section_id, 0, 0))
            continue
        pointers.append((section_id, len(data), index))
        placed.append(data)
        index += len(data)
    body0 = b"".join(struct.pack("<HII", *pointer) for pointer in pointers)
    record_body = section(0, body0, reserved=b"SCPECG") + b"".join(placed)
    size = 6 + len(record_body)
    rest = struct.pack("<I", size) + record_body
    return struct.pack("<H", crc(rest)) + rest


def write_scp(spec: ScpSpec) -> bytes:
    sections = {
        1: section(1, section1(tags(spec))),
        3: section(3, section3(spec)),
        6: section(6, section6(spec)),
    }
    if spec.use_huffman:
        sections[2] = section(2, struct.pack("<H", spec.huffman_tables))
    return build_record(sections)
