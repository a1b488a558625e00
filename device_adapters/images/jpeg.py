"""What a JPEG file is, read from its markers: coding process, precision, size, components.

Only the markers before the first scan are read (ITU T.81 B.1): the frame
header (SOFn) says the process, precision and components, an Adobe APP14
segment (or the component identifiers) whether they are RGB or YCbCr.
That decides whether the bitstream can be kept as JPEG Baseline in DICOM
(``reader``) or must be decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from device_adapters.images.errors import ImageImportError

__all__ = ["JpegHeader", "read_jpeg_header"]

SOI = b"\xff\xd8"
# SOF0-3, 5-7, 9-11, 13-15: every frame header (C4 is DHT, C8 reserved, CC is DAC)
_FRAME_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length
PROCESS_NAMES = {
    0: "baseline",
    1: "extended sequential",
    2: "progressive",
    3: "lossless",
    5: "hierarchical sequential",
    6: "hierarchical progressive",
    7: "hierarchical lossless",
    9: "extended sequential, arithmetic-coded",
    10: "progressive, arithmetic-coded",
    11: "lossless, arithmetic-coded",
    13: "hierarchical sequential, arithmetic-coded",
    14: "hierarchical progressive, arithmetic-coded",
    15: "hierarchical lossless, arithmetic-coded",
}


@dataclass(frozen=True, slots=True)
class JpegHeader:
    process: int  # n of the SOFn marker: 0 baseline, 1 extended, 2 progressive, 3 lossless ...
    precision: int  # bits per sample
    rows: int
    columns: int
    components: tuple[tuple[int, int, int], ...]  # (identifier, horizontal, vertical sampling factor)
    adobe_transform: int | None  # APP14 "Adobe" colour transform: 0 none (RGB/CMYK), 1 YCbCr, 2 YCCK
    jfif: bool

    @property
    def process_name(self) -> str:
        return PROCESS_NAMES.get(self.process, f"SOF{self.process}")

    @property
    def rgb(self) -> bool:
        """Three components stored as R, G, B (no colour transform) rather than Y, Cb, Cr."""
        if len(self.components) != 3 or self.jfif:
            return False
        if self.adobe_transform is not None:
            return self.adobe_transform == 0
        return tuple(ident for ident, _, _ in self.components) == (ord("R"), ord("G"), ord("B"))


class _CutShortError(Exception):
    pass


def _u16(data: bytes, at: int) -> int:
    if at + 2 > len(data):
        raise _CutShortError
    return (data[at] << 8) | data[at + 1]


def read_jpeg_header(data: bytes, what: str, *, complete: bool = True) -> JpegHeader | None:
    """The frame header of the JPEG ``data``; ImageImportError saying what is wrong.

    With ``complete=False`` ``data`` is only the start of a file: running off
    its end answers None (nothing wrong seen yet) instead of an error.
    """
    if not data.startswith(SOI):
        raise ImageImportError(f"{what} is not a JPEG file (no start-of-image marker)")
    adobe: int | None = None
    jfif = False
    at = 2
    try:
        while True:
            if at >= len(data):
                raise _CutShortError
            if data[at] != 0xFF:
                raise ImageImportError(f"{what} is not a valid JPEG file: no marker at byte {at}")
            while at < len(data) and data[at] == 0xFF:  # fill bytes
                at += 1
            if at >= len(data):
                raise _CutShortError
            marker = data[at]
            at += 1
            if marker in _STANDALONE:
                continue
            if marker in (0xD8, 0xD9, 0xDA):
                raise ImageImportError(
                    f"{what} is not a valid JPEG file: no frame header before the image data"
                )
            length = _u16(data, at)
            if length < 2:
                raise ImageImportError(f"{what} is not a valid JPEG file: a segment of length {length}")
            segment = data[at + 2 : at + length]
            if len(segment) < length - 2:
                raise _CutShortError
            at += length
            if marker == 0xE0 and segment.startswith(b"JFIF\x00"):
                jfif = True
            elif marker == 0xEE and segment.startswith(b"Adobe") and len(segment) >= 12:
                adobe = segment[11]
            elif marker in _FRAME_MARKERS:
                return _frame(segment, marker & 0x0F, adobe, jfif, what)
    except _CutShortError:
        if complete:
            raise ImageImportError(f"{what} is cut short: it ends before the JPEG frame header") from None
        return None


def _frame(segment: bytes, process: int, adobe: int | None, jfif: bool, what: str) -> JpegHeader:
    if len(segment) < 6:
        raise ImageImportError(f"{what} is not a valid JPEG file: its frame header is too short")
    precision, rows, columns, count = segment[0], _u16(segment, 1), _u16(segment, 3), segment[5]
    if len(segment) < 6 + 3 * count or count == 0:
        raise ImageImportError(f"{what} is not a valid JPEG file: its frame header lists {count} components")
    if rows == 0 or columns == 0:
        raise ImageImportError(
            f"{what} does not state its size in the frame header ({columns} x {rows} pixels; a DNL "
            "marker is not supported)"
        )
    components = tuple(
        (segment[6 + 3 * i], segment[7 + 3 * i] >> 4, segment[7 + 3 * i] & 0x0F) for i in range(count)
    )
    return JpegHeader(process, precision, rows, columns, components, adobe, jfif)
