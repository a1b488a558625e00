"""Reading an exported JPEG, PNG or BMP into the pixels (or bitstream) a DICOM image will carry.

What each export becomes (docs/devices.md, "What is stored"):

- **JPEG Baseline** (8-bit, one or three components): the file's bitstream
  is kept byte for byte, to be encapsulated with the JPEG Baseline transfer
  syntax; it is decoded once only to check it is whole. Photometric
  Interpretation follows the bitstream: MONOCHROME2 for one component,
  YBR_FULL_422 for YCbCr (whatever its chroma sampling: the value DICOM
  has for lossy JPEG colour), RGB where an Adobe marker says the components
  are not transformed.
- **Other 8-bit JPEG** (progressive, extended, arithmetic-coded), a CMYK
  JPEG, and a JPEG Baseline whose EXIF orientation is not "upright": decoded
  (Pillow) and kept uncompressed, still marked as lossy compressed once.
- **12-bit and lossless JPEG** (grey only): decoded with libjpeg
  (pylibjpeg-libjpeg) and kept uncompressed at their precision.
- **PNG, BMP**: decoded and kept uncompressed, lossless. 8-bit grey, 16-bit
  grey (PNG) and 8-bit colour; palette images become grey or RGB, an alpha
  channel is dropped, and a colour image whose three channels are equal
  everywhere is grey (MONOCHROME2) so viewers can window it. 16-bit colour
  is refused (DICOM colour images have 8 bits per sample).

EXIF orientation is honoured: an image the camera marked as rotated or
mirrored is turned upright, as every image viewer shows it (a kept JPEG
would otherwise be shown on its side). Nothing else of EXIF, ICC profiles
or PNG text chunks is carried into DICOM (a kept JPEG bitstream keeps its
own segments).
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import libjpeg
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from device_adapters.images.errors import ImageImportError, ImageTooLargeError, UnsupportedImageError
from device_adapters.images.formats import ImageFormat
from device_adapters.images.jpeg import SOI, JpegHeader, read_jpeg_header

__all__ = ["MAX_PIXELS", "ExportedImage", "detect_image_format", "looks_like_image", "read_image"]

MAX_PIXELS = 40_000_000  # a 4300 x 3500 DR is 15 million; Pillow itself warns at 89 million
_MAX_SIDE = 65535  # Rows and Columns are US
_PNG = b"\x89PNG\r\n\x1a\n"
_BMP = b"BM"
_ORIENTATION = 0x0112
_LOSSY_GREY_OR_COLOUR = {0, 1, 2, 9, 10}  # sequential and progressive DCT: Pillow decodes them at 8 bits


@dataclass(frozen=True, slots=True)
class ExportedImage:
    """The picture of one export, as it is to be stored."""

    source_format: ImageFormat
    pixels: npt.NDArray[np.uint8] | npt.NDArray[np.uint16]  # (rows, columns) grey or (rows, columns, 3) RGB
    bits_stored: int
    lossy: bool  # lossy compressed at some point (a JPEG other than lossless): Lossy Image Compression 01
    jpeg: bytes | None = None  # the JPEG Baseline bitstream, kept as it came
    jpeg_photometric: str | None = None  # its Photometric Interpretation
    how: str = ""  # how it was read, for the log

    @property
    def grey(self) -> bool:
        return self.pixels.ndim == 2


def detect_image_format(data: bytes, what: str) -> ImageFormat:
    if data.startswith(SOI + b"\xff"):
        return ImageFormat.JPEG
    if data.startswith(_PNG):
        return ImageFormat.PNG
    if data.startswith(_BMP):
        return ImageFormat.BMP
    raise ImageImportError(
        f"{what} is not a format teleconsult imports: not a JPEG, PNG or BMP image (by its first bytes)"
    )


def looks_like_image(head: bytes, *, complete: bool) -> bool:
    """Whether ``head`` (a file's first bytes; all of it if ``complete``) may be an image export.

    False only when it certainly is not one: then no sidecar can make it
    importable, and the drop folder need not wait for one.
    """
    try:
        kind = detect_image_format(head, "the file")
        if kind is ImageFormat.JPEG:
            read_jpeg_header(head, "the file", complete=complete)
        else:
            with _opened(head, kind, "the file"):
                pass
    except (ImageImportError, ImageTooLargeError):
        return False
    return True


def _check_size(columns: int, rows: int, what: str) -> None:
    if not (1 <= rows <= _MAX_SIDE and 1 <= columns <= _MAX_SIDE):
        raise ImageTooLargeError(f"{what} is {columns} x {rows} pixels: DICOM takes 1-{_MAX_SIDE} a side")
    if rows * columns > MAX_PIXELS:
        raise ImageTooLargeError(
            f"{what} has {rows * columns} pixels ({columns} x {rows}), more than the {MAX_PIXELS} imported"
        )


def _opened(data: bytes, kind: ImageFormat, what: str) -> Image.Image:
    """Pillow's image of ``data``, header read, pixels not decoded yet."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[kind.name])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError(f"{what} has too many pixels to be imported") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error) as exc:
        raise ImageImportError(
            f"{what} is not a readable {kind.label} image, damaged or cut short: {_why(exc)}"
        ) from None
    _check_size(*image.size, what)
    return image


def _why(exc: BaseException) -> str:
    text = str(exc).split(" <", 1)[0].strip()  # Pillow names the BytesIO object
    return text[:160] or type(exc).__name__


def _decoded(image: Image.Image, what: str) -> Image.Image:
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        raise ImageImportError(f"{what} is damaged or cut short: {_why(exc)}") from None
    return image


def _upright(image: Image.Image) -> Image.Image:
    turned = ImageOps.exif_transpose(image)
    return image if turned is None else turned


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block: as if there were none
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _is_grey_palette(image: Image.Image) -> bool:
    palette = image.getpalette() or []
    colours = [palette[i : i + 3] for i in range(0, len(palette) - 2, 3)]
    return all(r == g == b for r, g, b in colours)


def _pixels(image: Image.Image, what: str) -> tuple[npt.NDArray[np.uint8] | npt.NDArray[np.uint16], int]:
    """(array, bits stored) of a decoded Pillow image: grey uint8/uint16 or RGB uint8."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        array = np.asarray(image)
        if mode == "I" and (array.min() < 0 or array.max() > 0xFFFF):
            raise UnsupportedImageError(f"{what} has grey values outside 0-65535")
        return np.ascontiguousarray(array, dtype=np.uint16), 16
    if mode in ("P", "PA"):
        image = image.convert("L" if _is_grey_palette(image) else "RGB")
    elif mode in ("1", "LA", "La"):
        image = image.convert("L")
    elif mode in ("RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    if image.mode == "L":
        return np.ascontiguousarray(np.asarray(image), dtype=np.uint8), 8
    if image.mode != "RGB":
        raise UnsupportedImageError(f"{what} has pixels of a kind not imported (Pillow mode {mode})")
    rgb = np.ascontiguousarray(np.asarray(image), dtype=np.uint8)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0]), 8  # grey saved as colour (many DR exports)
    return rgb, 8


def _png_bit_depth(data: bytes) -> tuple[int, int]:
    """(bit depth, colour type) from the PNG's IHDR chunk."""
    return (data[24], data[25]) if len(data) >= 26 else (8, 0)


def _read_png_or_bmp(data: bytes, kind: ImageFormat, what: str) -> ExportedImage:
    if kind is ImageFormat.PNG:
        depth, colour_type = _png_bit_depth(data)
        if depth == 16 and colour_type != 0:
            raise UnsupportedImageError(
                f"{what} is a 16-bit colour PNG: DICOM colour images have 8 bits per sample; export it with "
                "8-bit colour, or as 16-bit grey"
            )
    image = _upright(_decoded(_opened(data, kind, what), what))
    pixels, bits = _pixels(image, what)
    return ExportedImage(kind, pixels, bits, lossy=False, how=f"{kind.label}, lossless")


def _jpeg_photometric(header: JpegHeader) -> str:
    if len(header.components) == 1:
        return "MONOCHROME2"
    if header.rgb:
        return "RGB"
    # YCbCr, subsampled or not: the value DICOM gives lossy JPEG colour (PS3.3 C.7.6.3.1.2, and
    # dciodvfy refuses YBR_FULL here); the decoder takes the sampling from the bitstream
    return "YBR_FULL_422"


def _read_jpeg(data: bytes, what: str) -> ExportedImage:
    header = read_jpeg_header(data, what)
    assert header is not None
    _check_size(header.columns, header.rows, what)
    count = len(header.components)
    if header.precision == 8 and header.process in _LOSSY_GREY_OR_COLOUR and count in (1, 3, 4):
        image = _decoded(_opened(data, ImageFormat.JPEG, what), what)
        orientation = _orientation(image)
        if header.process == 0 and count in (1, 3) and orientation == 1:
            pixels, _ = _pixels(image, what) if count == 1 else (np.asarray(image.convert("RGB")), 8)
            return ExportedImage(
                ImageFormat.JPEG,
                np.ascontiguousarray(pixels, dtype=np.uint8),
                8,
                lossy=True,
                jpeg=data,
                jpeg_photometric=_jpeg_photometric(header),
                how="JPEG baseline, bitstream kept",
            )
        why = f"EXIF orientation {orientation}" if orientation != 1 else header.process_name
        if count == 4:
            why = "CMYK"
        pixels, bits = _pixels(_upright(image), what)
        return ExportedImage(ImageFormat.JPEG, pixels, bits, lossy=True, how=f"JPEG ({why}), decoded")
    if header.process in (1, 3) and count == 1 and 2 <= header.precision <= 16:
        try:
            array = libjpeg.decode(data)
        except Exception as exc:  # libjpeg raises RuntimeError and others on a damaged stream
            raise ImageImportError(f"{what} is damaged or cut short: {_why(exc)}") from None
        if array.shape[:2] != (header.rows, header.columns) or array.ndim != 2:
            raise ImageImportError(f"{what} decodes to {array.shape}, not the size its header states")
        dtype = np.uint8 if header.precision <= 8 else np.uint16
        lossless = header.process == 3
        return ExportedImage(
            ImageFormat.JPEG,
            np.ascontiguousarray(array, dtype=dtype),
            header.precision,
            lossy=not lossless,
            how=f"{header.precision}-bit JPEG ({header.process_name}), decoded",
        )
    colour = "colour " if count > 1 else ""
    raise UnsupportedImageError(
        f"{what} is a {header.precision}-bit {colour}JPEG ({header.process_name}, {count} components), "
        "which is not imported: export 8-bit JPEG, PNG or BMP"
    )


def read_image(name: str, data: bytes) -> ExportedImage:
    """The image of the export file ``name``; ImageImportError (and subclasses) saying what is wrong."""
    what = repr(name[:80])
    if not data:
        raise ImageImportError(f"{what} is empty")
    kind = detect_image_format(data, what)
    if kind is ImageFormat.JPEG:
        return _read_jpeg(data, what)
    return _read_png_or_bmp(data, kind, what)
