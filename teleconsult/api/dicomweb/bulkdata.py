"""Bulk data values named by the BulkDataURIs of WADO-RS metadata.

A URI ends in ``bulkdata/{path}``: the tag of a top-level attribute
(``7FE00010``) or tags and item indexes down into sequences
(``54000100/0/54001010``, the waveform samples of the first waveform).
Pixel Data is served as uncompressed frames (see ``pixels.py``); other
values as stored, top-level ones streamed from the file without loading.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import fastapi
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from teleconsult.api.dicomweb.dicomjson import BULK_VRS
from teleconsult.api.dicomweb.errors import InvalidRequestError
from teleconsult.api.dicomweb.inflation import check_inflated_size
from teleconsult.api.dicomweb.multipart import file_chunks
from teleconsult.api.dicomweb.pixels import FrameSource, all_pixel_bytes
from teleconsult.errors import NotFoundError

__all__ = ["BulkDataPath", "bulk_value", "parse_bulk_path"]

_PATH = re.compile(r"[0-9A-Fa-f]{8}(/[0-9]{1,6}/[0-9A-Fa-f]{8})*")

BulkDataPath = Annotated[
    str,
    fastapi.Path(
        description="A tag (7FE00010) or tags and item indexes into sequences (54000100/0/54001010)",
        json_schema_extra={"pattern": f"^{_PATH.pattern}$"},
    ),
]
_PIXEL_DATA = 0x7FE00010


def parse_bulk_path(text: str) -> list[int]:
    """Tags and item indexes of a bulk data path, or ``InvalidRequestError`` (400)."""
    if not _PATH.fullmatch(text):
        raise InvalidRequestError(
            f"bulk data path {text[:80]!r} must be a tag (7FE00010) "
            "or tags and item indexes (54000100/0/54001010)"
        )
    parts = text.split("/")
    return [int(part, 16) if position % 2 == 0 else int(part) for position, part in enumerate(parts)]


def bulk_value(path: Path, transfer_syntax_uid: str, steps: list[int]) -> tuple[Iterator[bytes], int | None]:
    """The bytes of one bulk data value and its length, or ``NotFoundError`` (404)."""
    if steps == [_PIXEL_DATA]:
        return all_pixel_bytes(FrameSource(path, transfer_syntax_uid))
    check_inflated_size(path)
    ds = dcmread(path, defer_size=256)
    missing = NotFoundError(f"the instance has no bulk data at {'/'.join(str(s) for s in steps)}")
    current: Dataset = ds
    for position in range(0, len(steps) - 1, 2):
        tag, index = steps[position], steps[position + 1]
        if tag not in current or current[tag].VR != "SQ" or index >= len(current[tag].value):
            raise missing
        current = current[tag].value[index]
    tag = steps[-1]
    if tag not in current:
        raise missing
    raw = current.get_item(tag)
    if (
        len(steps) == 1
        and isinstance(raw, RawDataElement)
        and raw.value is None
        and transfer_syntax_uid in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    ):
        return file_chunks(path, raw.value_tell, raw.length), raw.length
    element = current[tag]
    if element.VR not in BULK_VRS:
        raise missing
    value = element.value
    if isinstance(value, MultiValue | list):
        value = b"".join(bytes(v) for v in value)
    data = bytes(value or b"")
    return iter([data]), len(data)
