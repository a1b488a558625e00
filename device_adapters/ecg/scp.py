"""SCP-ECG (EN 1064:2005 / ISO 11073-91064:2009) records: structure, CRCs, leads, rhythm data.

Followed, all integers little-endian:

- Record: CRC (2 bytes) over every byte after it, record size (4 bytes),
  then the sections. The CRC is CRC-CCITT: polynomial 0x1021, initial
  value 0xFFFF, no reflection (``binascii.crc_hqx(..., 0xFFFF)``).
- Each section: a 16-byte header (CRC over the rest of the section, section
  ID, section length including the header, section version, protocol
  version, 6 reserved bytes; "SCPECG" in Section 0 from version 2.0).
- Section 0, pointers: 10 bytes each (section ID, length, index of its
  first byte counted from 1); length 0 means absent.
- Section 1: patient and acquisition data (``scp_header``).
- Section 2: Huffman tables; only the default table (19999) is supported.
- Section 3, lead definition: number of leads, flags (bit 0 reference beat
  subtraction used, bit 2 all leads recorded simultaneously), then 9 bytes
  per lead: first and last sample number, lead identification number.
- Section 6, rhythm data: amplitude value multiplier (nV per count), sample
  time interval (µs), difference encoding (0 none, 1 first, 2 second
  differences; the first one or two values are samples), bimodal
  compression flag, the byte count of each lead's data, then the data:
  16-bit values without Huffman coding (no Section 2), else the Huffman
  stream.

Refused with a message naming what is missing: custom Huffman tables,
bimodal compression, reference beat subtraction (rhythm data stored as
residuals of Section 5), leads recorded at different times, and a record
with no Section 6. Every CRC of the record and of Sections 0-11 must hold:
a damaged file is refused, not half read.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from device_adapters.ecg.errors import EcgImportError, UnsupportedEcgError
from device_adapters.ecg.leads import scp_lead_name
from device_adapters.ecg.record import EcgFormat, EcgRecord, Lead, WaveformGroup
from device_adapters.ecg.scp_header import read_section_one
from device_adapters.ecg.scp_huffman import decode_default_huffman

__all__ = ["looks_like_scp_ecg", "read_scp_ecg"]

_HEADER = 16
_DEFAULT_HUFFMAN_TABLE = 19999
_STANDARD_SECTIONS = range(12)


@dataclass(frozen=True, slots=True)
class _Section:
    id: int
    start: int  # offset of the section header in the record
    length: int

    def body(self, record: bytes) -> bytes:
        return record[self.start + _HEADER : self.start + self.length]


@dataclass(frozen=True, slots=True)
class _LeadDefinition:
    first: int
    last: int
    number: int

    @property
    def samples(self) -> int:
        return self.last - self.first + 1


def looks_like_scp_ecg(data: bytes) -> bool:
    """Section 0's header where SCP-ECG puts it: ID 0 at byte 9 and, from version 2.0, "SCPECG"."""
    if len(data) < 6 + _HEADER:
        return False
    section_id, length = struct.unpack_from("<HI", data, 8)
    return (
        section_id == 0 and length >= _HEADER and (data[16:22] == b"SCPECG" or (length - _HEADER) % 10 == 0)
    )


def _crc(data: bytes) -> int:
    return binascii.crc_hqx(data, 0xFFFF)


def _record(data: bytes) -> bytes:
    if len(data) < 6 + _HEADER:
        raise EcgImportError(f"the file has {len(data)} bytes, too few for an SCP-ECG record")
    if not looks_like_scp_ecg(data):
        raise EcgImportError("the file is not an SCP-ECG record: no Section 0 header at byte 7")
    crc, size = struct.unpack_from("<HI", data)
    if size > len(data):
        raise EcgImportError(
            f"the SCP-ECG record says it has {size} bytes but the file has {len(data)}: "
            "the file is truncated (incomplete transfer?)"
        )
    if size < 6 + _HEADER:
        raise EcgImportError(f"the SCP-ECG record size {size} is too small")
    record = data[:size]
    actual = _crc(record[2:])
    if actual != crc:
        raise EcgImportError(
            f"the SCP-ECG record CRC is 0x{crc:04X} but its bytes give 0x{actual:04X}: the file is damaged"
        )
    return record


def _sections(record: bytes) -> dict[int, _Section]:
    section_id, length = struct.unpack_from("<HI", record, 8)
    if section_id != 0 or length < _HEADER or 6 + length > len(record):
        raise EcgImportError("the SCP-ECG record does not start with a valid Section 0 (pointers)")
    sections = {0: _Section(0, 6, length)}
    for pos in range(6 + _HEADER, 6 + length - 9, 10):
        pointed_id, pointed_length, index = struct.unpack_from("<HII", record, pos)
        if pointed_length == 0 or pointed_id == 0:
            continue
        start = index - 1
        if index < 7 or pointed_length < _HEADER or start + pointed_length > len(record):
            raise EcgImportError(
                f"SCP-ECG Section 0 points to Section {pointed_id} at byte {index} with {pointed_length} "
                f"bytes, outside the {len(record)}-byte record"
            )
        header_id, header_length = struct.unpack_from("<HI", record, start + 2)
        if header_id != pointed_id or header_length != pointed_length:
            raise EcgImportError(
                f"SCP-ECG Section 0 points to Section {pointed_id} ({pointed_length} bytes) but the header "
                f"there is Section {header_id} ({header_length} bytes)"
            )
        sections[pointed_id] = _Section(pointed_id, start, pointed_length)
    for section in sections.values():
        if section.id not in _STANDARD_SECTIONS:
            continue
        raw = record[section.start : section.start + section.length]
        (crc,) = struct.unpack_from("<H", raw)
        actual = _crc(raw[2:])
        if actual != crc:
            raise EcgImportError(
                f"SCP-ECG Section {section.id} CRC is 0x{crc:04X} but its bytes give 0x{actual:04X}: "
                "the file is damaged"
            )
    return sections


def _lead_definitions(body: bytes) -> tuple[list[_LeadDefinition], int]:
    if len(body) < 2:
        raise EcgImportError("SCP-ECG Section 3 (lead definition) is too short")
    count, flags = body[0], body[1]
    if count == 0 or 2 + 9 * count > len(body):
        raise EcgImportError(f"SCP-ECG Section 3 declares {count} leads but holds {(len(body) - 2) // 9}")
    leads = []
    for index in range(count):
        first, last, number = struct.unpack_from("<IIB", body, 2 + 9 * index)
        if first < 1 or last < first:
            raise EcgImportError(f"SCP-ECG Section 3 lead {index + 1} has samples {first} to {last}")
        leads.append(_LeadDefinition(first, last, number))
    return leads, flags


def _huffman(sections: dict[int, _Section], record: bytes) -> bool:
    """Whether rhythm data are Huffman coded (with the default table: others are refused)."""
    section = sections.get(2)
    if section is None:
        return False
    body = section.body(record)
    if len(body) < 2:
        raise EcgImportError("SCP-ECG Section 2 (Huffman tables) is too short")
    (tables,) = struct.unpack_from("<H", body)
    if tables != _DEFAULT_HUFFMAN_TABLE:
        raise UnsupportedEcgError(
            f"the SCP-ECG file uses {tables} custom Huffman table(s) (Section 2); only uncompressed data "
            "and the default Huffman table are supported: set the cart to export uncompressed SCP-ECG"
        )
    return True


def _undo_differences(values: npt.NDArray[np.int64], order: int) -> npt.NDArray[np.int64]:
    """Samples from first or second differences, in the 16-bit arithmetic the encoder used."""
    samples = values.copy()
    if order == 1:
        samples = np.cumsum(values)
    elif order == 2 and values.size > 2:
        # x[n] = d[n] + 2 x[n-1] - x[n-2], x[0] = d[0], x[1] = d[1]
        slopes = np.concatenate(([values[1] - values[0]], values[2:]))
        samples = np.concatenate(([values[0]], values[0] + np.cumsum(np.cumsum(slopes))))
    return ((samples + 32768) % 65536 - 32768).astype(np.int64)


def _rhythm(body: bytes, definitions: list[_LeadDefinition], huffman: bool) -> WaveformGroup:
    head = 6 + 2 * len(definitions)
    if len(body) < head:
        raise EcgImportError("SCP-ECG Section 6 (rhythm data) is too short for its lead byte counts")
    avm, interval, differences, bimodal = struct.unpack_from("<HHBB", body)
    if avm == 0 or interval == 0:
        raise EcgImportError(
            f"SCP-ECG Section 6 gives amplitude multiplier {avm} nV and sample interval {interval} µs; "
            "both must be set"
        )
    if differences not in (0, 1, 2):
        raise UnsupportedEcgError(f"SCP-ECG Section 6 difference encoding {differences} is not 0, 1 or 2")
    if bimodal:
        raise UnsupportedEcgError("the SCP-ECG rhythm data use bimodal compression, which is not supported")
    sizes = struct.unpack_from(f"<{len(definitions)}H", body, 6)
    pos = head
    leads = []
    for definition, size in zip(definitions, sizes, strict=True):
        name = scp_lead_name(definition.number)
        if name is None:
            raise UnsupportedEcgError(
                f"SCP-ECG Section 3 names lead number {definition.number}, not in the table"
            )
        chunk = body[pos : pos + size]
        if len(chunk) < size:
            raise EcgImportError(
                f"SCP-ECG Section 6 lead {name}: {size} bytes announced, {len(chunk)} present"
            )
        pos += size
        if huffman:
            values = decode_default_huffman(chunk, definition.samples, name)
        else:
            if size != 2 * definition.samples:
                raise EcgImportError(
                    f"SCP-ECG Section 6 lead {name}: {size} bytes for {definition.samples} uncompressed "
                    "16-bit samples"
                )
            values = np.frombuffer(chunk, dtype="<i2").astype(np.int64)
        leads.append(Lead(name, _undo_differences(values, differences), avm / 1000.0))
    return WaveformGroup("RHYTHM", 1_000_000 / interval, tuple(leads))


def read_scp_ecg(data: bytes, *, text_encoding: str | None = None) -> EcgRecord:
    """The ECG of an SCP-ECG file; ``text_encoding`` overrides Section 1's language support code."""
    try:
        return _read(data, text_encoding)
    except (struct.error, IndexError, OverflowError) as exc:  # a length no check above caught
        raise EcgImportError(f"the SCP-ECG file is damaged: a field runs past its section ({exc})") from None


def _read(data: bytes, text_encoding: str | None) -> EcgRecord:
    record = _record(data)
    sections = _sections(record)
    if 3 not in sections or 6 not in sections:
        missing = 3 if 3 not in sections else 6
        what = "lead definition" if missing == 3 else "rhythm data"
        raise UnsupportedEcgError(
            f"the SCP-ECG file has no Section {missing} ({what}); only files with rhythm data can be imported"
        )
    definitions, flags = _lead_definitions(sections[3].body(record))
    if flags & 0x01:
        raise UnsupportedEcgError(
            "the SCP-ECG rhythm data are stored after reference beat subtraction (Section 3 flag bit 0), "
            "which is not supported: set the cart to export uncompressed rhythm data"
        )
    if len({(d.first, d.last) for d in definitions}) > 1:
        raise UnsupportedEcgError(
            "the SCP-ECG leads were recorded at different times (Section 3 gives different sample ranges); "
            "only simultaneously recorded leads are supported"
        )
    header = read_section_one(sections[1].body(record), text_encoding) if 1 in sections else None
    if header is None:
        raise EcgImportError("the SCP-ECG file has no Section 1, so no patient ID")
    rhythm = _rhythm(sections[6].body(record), definitions, _huffman(sections, record))
    rhythm = WaveformGroup(rhythm.label, rhythm.sampling_frequency, rhythm.leads, filters=header.filters)
    return EcgRecord(
        source_format=EcgFormat.SCP_ECG,
        patient=header.patient,
        groups=(rhythm,),
        acquired_at=header.acquired_at,
        device=header.device,
        referring_physician=header.referring_physician,
    )
