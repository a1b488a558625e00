"""What the gateway accepts: every storage SOP class, stored as received.

Images are never transcoded: the first transfer syntax the sender proposes
that appears below is accepted, so compressed pixel data (JPEG, JPEG-LS,
JPEG 2000, RLE, MPEG-4/H.264/HEVC video) is kept byte for byte.
"""

from __future__ import annotations

from pynetdicom import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

__all__ = [
    "STORAGE_SOP_CLASSES",
    "TRANSFER_SYNTAXES",
    "UNCOMPRESSED_TRANSFER_SYNTAXES",
    "VERIFICATION_SOP_CLASS",
]

VERIFICATION_SOP_CLASS: str = Verification

STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(
    str(context.abstract_syntax) for context in AllStoragePresentationContexts
)

# pynetdicom accepts, for each proposed context, the first syntax of THIS
# list that the sender offers, so the order is the gateway's preference:
# lossless compressed first (a compressed image is never decompressed in
# transit), then uncompressed, then lossy (a sender offering both never
# compresses an uncompressed image lossily for us).
TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless Only
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old devices)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.4.100",  # MPEG2 Main Profile / Main Level
    "1.2.840.10008.1.2.4.101",  # MPEG2 Main Profile / High Level
    "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264 High Profile / Level 4.1
    "1.2.840.10008.1.2.4.103",  # MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1
    "1.2.840.10008.1.2.4.104",  # MPEG-4 AVC/H.264 High Profile / Level 4.2 for 2D video
    "1.2.840.10008.1.2.4.105",  # MPEG-4 AVC/H.264 High Profile / Level 4.2 for 3D video
    "1.2.840.10008.1.2.4.106",  # MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2
    "1.2.840.10008.1.2.4.107",  # HEVC/H.265 Main Profile / Level 5.1
    "1.2.840.10008.1.2.4.108",  # HEVC/H.265 Main 10 Profile / Level 5.1
)

UNCOMPRESSED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1.99",
)
