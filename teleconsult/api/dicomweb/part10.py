"""The File Meta Information of a received Part 10 file (PS3.10 7.1), read by hand.

STOW-RS parts are Part 10 files; the store wants the data set alone plus its
transfer syntax, exactly as a C-STORE delivers them. Group 0002 is always
Explicit VR Little Endian, so a few lines read it without handing the whole
file to a parser, and the data set bytes after it go to the store untouched.
Files whose preamble (and even ``DICM`` prefix) is missing are accepted as
long as their File Meta is there: pydicom writes data sets read from a
network stream that way, and dicomweb-client sends what pydicom writes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from teleconsult.errors import InvalidInstanceError

__all__ = ["FileMeta", "split_part10"]

_LONG_LENGTH_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_WANTED = {0x0002: "sop_class_uid", 0x0003: "sop_instance_uid", 0x0010: "transfer_syntax_uid"}


@dataclass(frozen=True, slots=True)
class FileMeta:
    """What the File Meta says about the data set that follows it."""

    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    data_set_offset: int


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace").rstrip("\x00 ").strip()


def split_part10(data: bytes) -> tuple[FileMeta, bytes]:
    """(File Meta, data set bytes) of a Part 10 file, or ``InvalidInstanceError`` (cannot understand)."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        position = 132
    elif data[:4] == b"DICM":
        position = 4  # the preamble left out
    elif data[:2] == b"\x02\x00":
        position = (
            0  # File Meta without preamble and prefix, as pydicom writes a data set it read from a stream
        )
    else:
        raise InvalidInstanceError(
            "the part is not a DICOM Part 10 file (no DICM prefix, no File Meta Information)",
            comment="Not a DICOM Part 10 file",
        )
    found: dict[str, str] = {}
    while position + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, position)
        if group != 0x0002:
            break
        vr = data[position + 4 : position + 6]
        if vr in _LONG_LENGTH_VRS:
            if position + 12 > len(data):
                break
            (length,) = struct.unpack_from("<I", data, position + 8)
            header = 12
        else:
            (length,) = struct.unpack_from("<H", data, position + 6)
            header = 8
        if length == 0xFFFFFFFF or position + header + length > len(data):
            raise InvalidInstanceError(
                f"the File Meta element (0002,{element:04X}) runs past the end of the part",
                comment="File Meta cannot be parsed",
            )
        if element in _WANTED:
            found[_WANTED[element]] = _text(data[position + header : position + header + length])
        position += header + length
    if not found.get("transfer_syntax_uid"):
        raise InvalidInstanceError(
            "the Part 10 file has no Transfer Syntax UID (0002,0010) in its File Meta",
            comment="File Meta has no Transfer Syntax UID",
        )
    meta = FileMeta(
        transfer_syntax_uid=found["transfer_syntax_uid"],
        sop_class_uid=found.get("sop_class_uid", ""),
        sop_instance_uid=found.get("sop_instance_uid", ""),
        data_set_offset=position,
    )
    return meta, data[position:]
