"""Transfer syntaxes on retrieval: send as stored, or convert when the client asks for another.

teleconsult stores every instance as it arrived. A WADO-RS client may ask
for another transfer syntax; what can be produced is decided from the
stored syntax alone (before the response starts):

- the stored syntax itself, always;
- Explicit VR Little Endian from any uncompressed or deflated syntax, and
  from every compressed syntax pydicom can decode here (JPEG, JPEG-LS,
  JPEG 2000, HTJ2K, RLE through pylibjpeg);
- Implicit VR Little Endian from the uncompressed and deflated syntaxes.

Anything else (compressing, Big Endian output, video) is not offered.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from teleconsult.api.dicomweb.inflation import check_inflated_size
from teleconsult.api.dicomweb.media import ANY_TRANSFER_SYNTAX

__all__ = ["can_convert", "choose_transfer_syntax", "convert_file"]

_LITTLE_ENDIAN = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})


def _decodable(stored: str) -> bool:
    uid = UID(stored)
    if not uid.is_compressed or uid == DeflatedExplicitVRLittleEndian:
        return False
    try:
        return bool(get_decoder(uid).is_available)
    except (NotImplementedError, ValueError):
        return False


def can_convert(stored: str, target: str) -> bool:
    """Whether an instance stored in ``stored`` can be sent in ``target``."""
    if stored == target:
        return True
    if target == ExplicitVRLittleEndian:
        return stored in _LITTLE_ENDIAN or _decodable(stored)
    if target == ImplicitVRLittleEndian:
        return stored in _LITTLE_ENDIAN
    return False


def choose_transfer_syntax(stored: str, preferences: Sequence[str]) -> str | None:
    """The first acceptable syntax of ``preferences`` (``*`` = as stored), or None."""
    for preference in preferences:
        if preference == ANY_TRANSFER_SYNTAX:
            return stored
        if can_convert(stored, preference):
            return preference
    return None


def convert_file(path: Path, target: str) -> bytes:
    """The Part 10 file at ``path`` re-encoded in ``target`` (one of ``can_convert``'s).

    Decompression keeps the SOP Instance UID (the instance is the same one,
    losslessly re-encoded, or for lossy sources decoded as stored); colour
    JPEG in YBR is delivered as RGB with Photometric Interpretation set so.
    """
    check_inflated_size(path)
    ds = dcmread(path)
    stored = UID(ds.file_meta.TransferSyntaxUID)
    if stored.is_compressed and stored != DeflatedExplicitVRLittleEndian:
        ds.decompress(generate_instance_uid=False)
    ds.file_meta.TransferSyntaxUID = UID(target)
    buffer = BytesIO()
    ds.save_as(
        buffer, implicit_vr=target == ImplicitVRLittleEndian, little_endian=True, enforce_file_format=True
    )
    return buffer.getvalue()
