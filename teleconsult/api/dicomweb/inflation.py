"""A deflated data set is measured before pydicom inflates it whole in memory.

The store keeps a Deflated Explicit VR Little Endian data set as it came and
indexes it from a bounded prefix, so 2 MB that inflate to 2 GiB are stored
as 2 MB and sent back as stored. Metadata, bulk data, frames, rendering and
conversion parse the file with pydicom, which inflates all of it first: one
such file took a WADO-RS metadata request 11.5 s and the server from 390 MiB
to 4.4 GiB. Here the data set is inflated a block at a time, counted and
dropped, and refused past ``MAX_INFLATED_BYTES``.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import BinaryIO

from pydicom.uid import DeflatedExplicitVRLittleEndian

from teleconsult.api.dicomweb.errors import UnprocessableInstanceError

__all__ = ["MAX_INFLATED_BYTES", "check_inflated_size", "is_deflated"]

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


def check_inflated_size(path: Path, limit: int | None = None) -> None:
    """Return if ``path`` is not deflated or inflates to at most ``limit`` bytes; else refuse (422).

    The files are teleconsult's own Part 10 (``storage/part10.py``), whose
    File Meta starts with its group length: that says where the data set
    begins and lets the transfer syntax be read without parsing.
    """
    limit = MAX_INFLATED_BYTES if limit is None else limit
    with path.open("rb") as f:
        if not _skip_to_deflated_data_set(f):
            return
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        inflated = 0
        while not inflater.eof and (block := f.read(_BLOCK)):
            pending = block
            while pending and not inflater.eof:
                try:
                    out = inflater.decompress(pending, _BLOCK)
                except zlib.error:
                    return  # pydicom reports a broken stream as it reads it
                if not out and inflater.unconsumed_tail == pending:
                    return  # no progress: nothing more comes out of this stream
                inflated += len(out)
                if inflated > limit:
                    raise UnprocessableInstanceError(
                        f"the stored data set is deflated and inflates to more than {limit >> 20} MiB: "
                        "it is sent as stored (WADO-RS retrieve) but not parsed for metadata, bulk data, "
                        "frames, rendering or conversion"
                    )
                pending = inflater.unconsumed_tail
