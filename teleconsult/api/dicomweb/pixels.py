"""Frames and pixel bulk data as uncompressed bytes (``application/octet-stream``).

For instances stored uncompressed in little endian, frames are cut straight
out of the file (seek and read: an 8 MB image is never loaded to send one
frame); otherwise pydicom decodes the one frame asked for. Bytes are native
little endian, samples as the data set's Planar Configuration says for
stored bytes, interleaved for decoded ones (Photometric Interpretation RGB
for decoded YBR JPEG).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import fastapi
import numpy as np
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels import pack_bits, pixel_array
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from teleconsult.api.dicomweb.errors import InvalidRequestError, NotAcceptableError
from teleconsult.api.dicomweb.inflation import check_inflated_size
from teleconsult.api.dicomweb.multipart import file_chunks

__all__ = ["FrameSource", "FramesPath", "all_pixel_bytes", "parse_frame_list"]

_PIXEL_DATA = 0x7FE00010
_FRAME_LIST = re.compile(r"[0-9]+(,[0-9]+)*")
_MAX_FRAMES_PER_REQUEST = 10000

FramesPath = Annotated[
    str,
    fastapi.Path(
        description="1-based frame numbers, comma-separated (1,3,5); 0, a malformed list or a frame "
        "past the last is 400",
        json_schema_extra={"pattern": r"^[1-9][0-9]{0,8}(,[1-9][0-9]{0,8})*$"},
    ),
]


def parse_frame_list(text: str) -> list[int]:
    """``1,3,5`` as 1-based frame numbers, or ``InvalidRequestError`` (400)."""
    if not _FRAME_LIST.fullmatch(text):
        raise InvalidRequestError(
            f"frame list {text[:40]!r} must be frame numbers separated by commas, e.g. 1,2,3"
        )
    numbers = [int(part) for part in text.split(",")]
    if len(numbers) > _MAX_FRAMES_PER_REQUEST:
        raise InvalidRequestError(f"at most {_MAX_FRAMES_PER_REQUEST} frames may be asked for at once")
    if min(numbers) < 1:
        raise InvalidRequestError("frame numbers start at 1")
    return numbers


@dataclass(frozen=True, slots=True)
class _Layout:
    frames: int
    frame_size: int | None  # bytes per frame when frames can be cut from the file
    offset: int | None  # file offset of the first frame


class FrameSource:
    """The frames of one stored image instance."""

    def __init__(self, path: Path, transfer_syntax_uid: str) -> None:
        self.path = path
        self.transfer_syntax_uid = transfer_syntax_uid
        check_inflated_size(path)
        self.dataset = dcmread(path, defer_size=256)
        if _PIXEL_DATA not in self.dataset:
            raise NotAcceptableError(
                f"instance {self.dataset.get('SOPInstanceUID', '')} has no pixel data, so no frames"
            )
        self.layout = self._layout()

    @property
    def frame_count(self) -> int:
        return self.layout.frames

    def _layout(self) -> _Layout:
        ds = self.dataset
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        raw = ds.get_item(_PIXEL_DATA)
        bits = int(ds.get("BitsAllocated", 0) or 0)
        if (
            self.transfer_syntax_uid in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
            and isinstance(raw, RawDataElement)
            and raw.length != 0xFFFFFFFF
            and bits % 8 == 0
            and bits > 0
        ):
            size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * bits // 8
            if size * frames <= raw.length:
                return _Layout(frames, size, raw.value_tell)
        return _Layout(frames, None, None)

    def check(self, numbers: list[int]) -> None:
        """``InvalidRequestError`` (400) if a frame number is past the last frame."""
        too_high = [n for n in numbers if n > self.frame_count]
        if too_high:
            raise InvalidRequestError(
                f"frame {too_high[0]} is out of range: the instance has {self.frame_count} frame(s)"
            )

    def frame_length(self) -> int | None:
        return self.layout.frame_size

    def frame(self, number: int) -> Iterator[bytes]:
        """The bytes of one 1-based frame."""
        layout = self.layout
        if layout.frame_size is not None and layout.offset is not None:
            yield from file_chunks(
                self.path, layout.offset + (number - 1) * layout.frame_size, layout.frame_size
            )
            return
        yield _decoded_bytes(pixel_array(self.path, index=number - 1), self.dataset)


def _decoded_bytes(array: np.ndarray, ds: Dataset) -> bytes:
    if int(ds.get("BitsAllocated", 8) or 8) == 1:
        return pack_bits(array, pad=False)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def all_pixel_bytes(source: FrameSource) -> tuple[Iterator[bytes], int | None]:
    """All frames one after the other (the Pixel Data bulk data), with the length when known."""
    layout = source.layout
    if layout.frame_size is not None:
        length = layout.frame_size * layout.frames

        def stored() -> Iterator[bytes]:
            for number in range(1, layout.frames + 1):
                yield from source.frame(number)

        return stored(), length
    data = _decoded_bytes(pixel_array(source.path), source.dataset)
    return iter([data]), len(data)
