"""Rendered images (PS3.18 8.3.5.1): one frame as JPEG or PNG for display, not for diagnosis.

The pipeline is the grayscale one of PS3.3 C.11 (Modality LUT, VOI window,
MONOCHROME1 inverted) or, for colour, RGB (YBR converted, palettes
applied), then scaled to the viewport. The window comes from the ``window``
query parameter, else from the data set (Window Center/Width and VOI LUT
Function, or its VOI LUT Sequence), else from the frame's own range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from teleconsult.api.dicomweb.errors import InvalidRequestError, NotAcceptableError
from teleconsult.api.dicomweb.inflation import check_inflated_size, is_deflated

__all__ = ["THUMBNAIL", "RenderOptions", "parse_render_options", "render_frame"]

_FUNCTIONS = ("linear", "linear-exact", "sigmoid")
_MAX_VIEWPORT = 8192


@dataclass(frozen=True, slots=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    window: tuple[float, float, str] | None = None  # center, width, function
    viewport: tuple[int, int] | None = None  # fit within (width, height)
    region: tuple[int, int, int, int] | None = None  # sx, sy, sw, sh of the source
    quality: int = 90


THUMBNAIL = RenderOptions(viewport=(128, 128), quality=75)


def _numbers(name: str, text: str, count: tuple[int, ...]) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in count or not all(math.isfinite(v) for v in values):
        raise InvalidRequestError(f"{name}={text[:40]!r} must be {' or '.join(map(str, count))} numbers")
    return values


def parse_render_options(
    params: Mapping[str, str], media_type: str, *, defaults: RenderOptions
) -> RenderOptions:
    """``window``, ``viewport`` and ``quality`` from the query string; 400 for bad values."""
    window = defaults.window
    if "window" in params:
        parts = params["window"].split(",")
        center, width = _numbers("window", ",".join(parts[:2]), (2,))
        function = parts[2].strip().lower() if len(parts) > 2 else "linear"
        if len(parts) > 3 or function not in _FUNCTIONS or width <= 0:
            raise InvalidRequestError(
                f"window must be center,width[,function] with width > 0 "
                f"and function one of {', '.join(_FUNCTIONS)}"
            )
        window = (center, width, function)
    viewport, region = defaults.viewport, defaults.region
    if "viewport" in params:
        values = _numbers("viewport", params["viewport"], (2, 6))
        if not all(0 < v <= _MAX_VIEWPORT for v in values[:2]):
            raise InvalidRequestError(f"viewport width and height must be 1-{_MAX_VIEWPORT}")
        viewport = (int(values[0]), int(values[1]))
        if len(values) == 6:
            if values[4] <= 0 or values[5] <= 0 or values[2] < 0 or values[3] < 0:
                raise InvalidRequestError("the viewport's source region needs sx, sy >= 0 and sw, sh > 0")
            region = (int(values[2]), int(values[3]), int(values[4]), int(values[5]))
    quality = defaults.quality
    if "quality" in params:
        (value,) = _numbers("quality", params["quality"], (1,))
        if not 1 <= value <= 100:
            raise InvalidRequestError("quality must be 1-100")
        quality = int(value)
    return RenderOptions(media_type, window, viewport, region, quality)


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2-3: values in 0..1."""
    if function == "sigmoid":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "linear-exact":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width <= 1:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _first(value: object) -> float:
    if isinstance(value, list | tuple) or (hasattr(value, "__getitem__") and not isinstance(value, str)):
        value = value[0]  # type: ignore[index]
    return float(value)  # type: ignore[arg-type]


def _stretch(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values, dtype=np.float64)
    return (values - low) / (high - low)


def _grayscale(array: np.ndarray, ds: Dataset, options: RenderOptions) -> np.ndarray:
    values = apply_modality_lut(array, ds).astype(np.float64)
    if options.window is not None:
        scaled = _window(values, *options.window)
    elif "WindowCenter" in ds and "WindowWidth" in ds and _first(ds.WindowWidth) > 0:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").lower().replace("_", "-")
        scaled = _window(
            values,
            _first(ds.WindowCenter),
            _first(ds.WindowWidth),
            function if function in _FUNCTIONS else "linear",
        )
    elif "VOILUTSequence" in ds:
        scaled = _stretch(apply_voi_lut(values, ds).astype(np.float64))
    else:
        scaled = _stretch(values)
    image = np.rint(scaled * 255.0).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        image = 255 - image
    return image


def _colour(array: np.ndarray, ds: Dataset) -> np.ndarray:
    if str(ds.PhotometricInterpretation) == "PALETTE COLOR":
        array = apply_color_lut(array, ds)
        bits = 16 if array.dtype.itemsize > 1 else 8
    else:
        bits = int(ds.get("BitsStored", 8) or 8)
    if array.dtype == np.uint8:
        return array
    return np.clip(array.astype(np.float64) * (255.0 / ((1 << bits) - 1)), 0, 255).astype(np.uint8)


def render_frame(path: Path, index: int, options: RenderOptions) -> bytes:
    """Frame ``index`` (0-based) of the image at ``path`` as JPEG or PNG bytes.

    Raises ``NotAcceptableError`` (406) for an instance without pixel data
    (an ECG, a report): it has no image representation here.
    """
    check_inflated_size(path)
    ds = Dataset()
    try:
        if is_deflated(path):
            # pydicom reads pixels from a path without inflating: from the whole data set instead
            ds = dcmread(path)
            array = pixel_array(ds, index=index)
        else:
            array = pixel_array(path, index=index, ds_out=ds)
    except (AttributeError, KeyError, ValueError) as exc:
        raise NotAcceptableError(
            "this instance has no pixel data to render (waveform, report or document); "
            "retrieve it as application/dicom instead"
        ) from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if array.ndim == 3 or photometric == "PALETTE COLOR":
        image = Image.fromarray(_colour(array, ds), "RGB")
    else:
        image = Image.fromarray(_grayscale(array, ds, options), "L")
    if options.region is not None:
        # Only what lies on the image: a region reaching past it would make PIL pad (and
        # allocate) up to the size asked for, however large.
        sx, sy, sw, sh = options.region
        box = (
            min(sx, image.width),
            min(sy, image.height),
            min(sx + sw, image.width),
            min(sy + sh, image.height),
        )
        if box[2] <= box[0] or box[3] <= box[1]:
            raise InvalidRequestError(
                f"the viewport's source region ({sx},{sy} {sw}x{sh}) lies outside the "
                f"{image.width}x{image.height} image"
            )
        image = image.crop(box)
    if options.viewport is not None:
        scale = min(options.viewport[0] / image.width, options.viewport[1] / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        if size != image.size:
            image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = BytesIO()
    if options.media_type == "image/png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=options.quality)
    return buffer.getvalue()
