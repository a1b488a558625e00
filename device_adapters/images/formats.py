"""Which files are image exports, and which sidecar goes with each: by name.

An export is a JPEG, PNG or BMP file (``.jpg``, ``.jpeg``, ``.jpe``,
``.png``, ``.bmp``, any case); its demographics are in the JSON file of the
same stem beside it (``x.jpg`` + ``x.json``). The content, not the name,
decides how the image is read (``reader``).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from pathlib import PurePath

__all__ = [
    "IMAGE_SUFFIXES",
    "SIDECAR_SUFFIX",
    "ImageFormat",
    "is_image_name",
    "is_sidecar_name",
    "sidecar_for",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".bmp")
SIDECAR_SUFFIX = ".json"


class ImageFormat(StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    BMP = "bmp"

    @property
    def label(self) -> str:
        return self.value.upper()


def is_image_name(name: str) -> bool:
    return PurePath(name).suffix.lower() in IMAGE_SUFFIXES


def is_sidecar_name(name: str) -> bool:
    return PurePath(name).suffix.lower() == SIDECAR_SUFFIX


def sidecar_for(image: str, names: Iterable[str]) -> str | None:
    """The sidecar of ``image`` among ``names`` (same stem, ``.json`` in any case), if there."""
    stem = PurePath(image).stem
    for name in sorted(names):
        if is_sidecar_name(name) and PurePath(name).stem == stem:
            return name
    return None
