"""A stored deflated data set measured before anything inflates it whole in memory.

The store keeps a Deflated Explicit VR Little Endian data set as it came and
indexes it from a bounded prefix, so 2 MB that inflate to 2 GiB are stored
as 2 MB and can be sent back as stored. Whatever parses the file with
pydicom (WADO-RS metadata, bulk data, frames, rendering and conversion; C-GET
and C-MOVE; the ECG analyser) would inflate all of it first: one such file
took a WADO-RS metadata request 11.5 s and the server from 390 MiB to
4.4 GiB. Here the data set is inflated a block at a time, counted and
dropped, and the caller refuses it past its limit.

The files are teleconsult's own Part 10 (``storage/part10.py``), whose File
Meta starts with its group length: that says where the data set begins and
lets the transfer syntax be read without parsing.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import BinaryIO

from pydicom.uid import DeflatedExplicitVRLittleEndian

__all__ = ["MAX_INFLATED_BYTES", "inflates_past", "is_deflated"]

# Deflate is used for reports, waveforms and documents: tens of MiB at most.
MAX_INFLATED_BYTES = 256 << 20
_PREAMBLE_AND_GROUP_LENGTH = 144  # 128-byte preamble, "DICM", (0002,0000) UL element
_BLOCK = 1 << 20
_DEFLATED = DeflatedExplicitVRLittleEndian.encode("ascii")


def _skip_to_deflated_data_set(f: BinaryIO) -> bool:
    """Past the File Meta of the open file ``f``; whether the data set that follows is deflated."""
    head = f.read(_PREAMBLE_AND_GROUP_LENGTH)
    if len(head) < _PREAMBLE_AND_GROUP_LENGTH or head[128:132] != b"DICM":
        return False
    return _DEFLATED in f.read(int.from_bytes(head[140:144], "little"))


def is_deflated(path: Path) -> bool:
    with path.open("rb") as f:
        return _skip_to_deflated_data_set(f)


def inflates_past(source: Path | BinaryIO, limit: int) -> bool:
    """Whether ``source`` (a stored file, or one open at its start) is deflated and inflates past ``limit``.

    A broken or truncated stream counts as what it inflates to before it
    breaks: pydicom reports the break itself when it reads the file.
    """
    if isinstance(source, Path):
        with source.open("rb") as f:
            return inflates_past(f, limit)
    if not _skip_to_deflated_data_set(source):
        return False
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = 0
    while not inflater.eof and (block := source.read(_BLOCK)):
        pending = block
        while pending and not inflater.eof:
            try:
                out = inflater.decompress(pending, _BLOCK)
            except zlib.error:
                return False
            if not out and inflater.unconsumed_tail == pending:
                return False  # no progress: nothing more comes out of this stream
            inflated += len(out)
            if inflated > limit:
                return True
            pending = inflater.unconsumed_tail
    return False
