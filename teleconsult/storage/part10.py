"""The File Meta header (PS3.10 7.1) written in front of every stored data set.

The header has six elements, of which only the three UIDs change between
instances, so it is assembled from bytes directly: building a pydicom
FileMetaDataset and running its writer cost more than the rest of the header
work for a small instance. The tests check the bytes against pydicom's writer.
"""

from __future__ import annotations

import struct

__all__ = ["IMPLEMENTATION_CLASS_UID", "IMPLEMENTATION_VERSION_NAME", "file_meta"]

# Fixed for the product (a 2.25 UUID-derived UID, PS3.5 B.2).
IMPLEMENTATION_CLASS_UID = "2.25.165938410497395939834216788232358624213"
IMPLEMENTATION_VERSION_NAME = "TELECONSULT_0_1"

_PREAMBLE = b"\x00" * 128 + b"DICM"
_GROUP_LENGTH_TAG = struct.pack("<HH2sH", 0x0002, 0x0000, b"UL", 4)
# (0002,0001) File Meta Information Version: OB, 2 reserved bytes, 32-bit length.
_VERSION = struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"


def _short(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


_TRAILER = _short(0x0012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii"), b"\x00") + _short(
    0x0013, b"SH", IMPLEMENTATION_VERSION_NAME.encode("ascii"), b" "
)


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """Preamble, prefix and File Meta group for one instance (UIDs already checked)."""
    body = b"".join(
        (
            _VERSION,
            _short(0x0002, b"UI", sop_class_uid.encode("ascii"), b"\x00"),
            _short(0x0003, b"UI", sop_instance_uid.encode("ascii"), b"\x00"),
            _short(0x0010, b"UI", transfer_syntax_uid.encode("ascii"), b"\x00"),
            _TRAILER,
        )
    )
    return _PREAMBLE + _GROUP_LENGTH_TAG + struct.pack("<I", len(body)) + body
