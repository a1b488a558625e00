"""The one builder of DICOM images from live video: a Secondary Capture Image (PS3.3 A.8.1).

A frame captured during a live exam (a capture card on an ultrasound
machine's video output, or a camera) becomes a single-frame RGB image in
the consult's study: Patient and General Study modules are copied from an
instance of that study (so a PACS files the capture with the exam), SC
Equipment says how it was made (conversion type DV, digitized video), and
General Image says what was done to the pixels on the way: they crossed a
WebRTC link as VP8 or H.264, so Lossy Image Compression is ``01``, and a
device's screen usually shows the patient's name, so Burned In Annotation
is ``YES``.

Secondary Capture rather than Ultrasound Image: the frame is a picture of
whatever the device showed, without the calibration (regions, spacing) an
Ultrasound Image would claim. The series keeps the study's modality (US for
an ultrasound exam), so viewers group it with the exam's images.

Clips (``build_video_clip``) are multi-frame objects of the same kind,
played at the rate they were recorded (Cine module, Frame Increment Pointer
to Frame Time), their frames JPEG Baseline (``encode_jpeg_frame``: 4:2:2
chroma, so Photometric Interpretation ``YBR_FULL_422``, Lossy Image
Compression Method ``ISO_10918_1``) so that half a minute of video is tens
of megabytes, not gigabytes:

- ``ClipKind.SECONDARY_CAPTURE``, a **Multi-frame True Color Secondary
  Capture Image** (PS3.3 A.8.5): what the server captures from a live
  session, for the snapshot's reasons (a picture of a screen that crossed
  WebRTC);
- ``ClipKind.ULTRASOUND``, an **Ultrasound Multi-frame Image** (PS3.3
  A.7): what the township's capture-card adapter records straight off the
  ultrasound machine's video output (``device_adapters.video.clip``). It
  claims no calibration either: the US Region Calibration module is
  optional, and is left out.

The frames are handed in already encoded (one JPEG each), as they were
collected: holding 900 decoded 720p frames to let a library encode them
would take gigabytes. highdicom (``SOPClass``) makes the common modules, as
for the snapshot; it has no Ultrasound IOD and encodes only from pixel
arrays, so the image modules are written here.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from enum import StrEnum

import highdicom as hd
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.tag import Tag
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    UltrasoundMultiFrameImageStorage,
)
from pydicom.valuerep import DA, DT, TM

__all__ = [
    "CLIP_SERIES_NUMBER",
    "JPEG_QUALITY",
    "SERIES_NUMBER",
    "UTF8",
    "ClipKind",
    "build_video_capture",
    "build_video_clip",
    "encode_jpeg_frame",
]

UTF8 = "ISO_IR 192"
SERIES_NUMBER = 9101  # after the acquisitions' series and the report series (9001, 9002)
CLIP_SERIES_NUMBER = 9102  # clips recorded by the township's capture-card adapter
JPEG_QUALITY = 90  # libjpeg's scale; ultrasound speckle stays, blocking does not show
_MODALITY = re.compile(r"^[A-Z0-9_ ]{1,16}$")


def _study_clock(header: Dataset, captured_at: datetime) -> datetime:
    """``captured_at`` in the study's time zone (its Timezone Offset From UTC), else this server's."""
    offset = str(header.get("TimezoneOffsetFromUTC", "") or "").strip()
    match = re.fullmatch(r"([+-])([01][0-9])([0-5][0-9])", offset)
    if match is None:
        return captured_at.astimezone()
    delta = timedelta(hours=int(match[2]), minutes=int(match[3]))
    return captured_at.astimezone(timezone(-delta if match[1] == "-" else delta))


def build_video_capture(
    header: Dataset,
    pixels: np.ndarray,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    instance_number: int,
    captured_at: datetime,
    manufacturer: str,
    software_versions: str,
    series_description: str = "Live exam capture",
    operator: str | None = None,
) -> hd.sc.SCImage:
    """A Secondary Capture of one RGB video frame in the study ``header`` comes from.

    Parameters
    ----------
    header
        A data set of the study (no pixel data needed): its patient and study attributes are copied.
    pixels
        The frame, ``(rows, columns, 3)`` unsigned 8-bit RGB.
    captured_at
        When the frame was received (aware datetime).
    operator
        Who asked for the capture (a username), as Operators' Name.
    """
    if not header.get("StudyInstanceUID"):
        raise ValueError("header must name its study (StudyInstanceUID)")
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(
            f"pixels must be an RGB frame of shape (rows, columns, 3) and dtype uint8, "
            f"not {pixels.shape} {pixels.dtype}"
        )
    if not (1 <= pixels.shape[0] <= 65535 and 1 <= pixels.shape[1] <= 65535):
        raise ValueError(f"pixels must have 1-65535 rows and columns, not {pixels.shape[:2]}")
    if captured_at.tzinfo is None:
        raise ValueError("captured_at must be an aware datetime")
    if instance_number < 1:
        raise ValueError(f"instance_number must be at least 1, not {instance_number}")
    local = _study_clock(header, captured_at)
    ds = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=header,
        pixel_array=np.ascontiguousarray(pixels),
        photometric_interpretation="RGB",
        bits_allocated=8,
        # highdicom asks for an orientation with the patient coordinate system; a video frame
        # has none, and PatientOrientation (type 2C) is emptied below, which says "unknown".
        coordinate_system="PATIENT",
        patient_orientation=("L", "F"),
        series_instance_uid=series_instance_uid,
        series_number=SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=manufacturer,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        specific_character_set=UTF8,
        series_description=series_description[:64],
        software_versions=software_versions,
        content_date=DA(local.date()),
        content_time=TM(local.time()),
        series_date=DA(local.date()),
        series_time=TM(local.time()),
    )
    ds.copy_patient_and_study_information(header)
    modality = str(header.get("Modality", "") or "").strip()
    ds.Modality = modality if _MODALITY.match(modality) else "OT"
    ds.PatientOrientation = ""
    # Type 2C: required when the body part is paired; which side a video frame shows is not
    # known, so it is copied from the exam where it says, and empty (unknown) otherwise.
    ds.Laterality = str(header.get("Laterality", "") or "")
    if header.get("BodyPartExamined"):
        ds.BodyPartExamined = header.BodyPartExamined
    ds.ConversionType = "DV"  # digitized video
    ds.DateOfSecondaryCapture = DA(local.date())
    ds.TimeOfSecondaryCapture = TM(local.time())
    ds.AcquisitionDateTime = DT(local)
    ds.InstanceCreationDate, ds.InstanceCreationTime = DA(local.date()), TM(local.time())
    ds.TimezoneOffsetFromUTC = local.strftime("%z")
    ds.SecondaryCaptureDeviceManufacturer = manufacturer
    ds.SecondaryCaptureDeviceSoftwareVersions = software_versions
    ds.LossyImageCompression = "01"  # the frame crossed a WebRTC link as VP8 or H.264
    ds.BurnedInAnnotation = "YES"
    if operator:
        ds.OperatorsName = operator.replace("^", " ")[:63] + "^"
    return ds


# -- clips ----------------------------------------------------------------------------------


class ClipKind(StrEnum):
    """Which IOD a clip becomes."""

    SECONDARY_CAPTURE = "sc"  # Multi-frame True Color Secondary Capture Image
    ULTRASOUND = "us"  # Ultrasound Multi-frame Image


_CLIP_SOP_CLASS = {
    ClipKind.SECONDARY_CAPTURE: MultiFrameTrueColorSecondaryCaptureImageStorage,
    ClipKind.ULTRASOUND: UltrasoundMultiFrameImageStorage,
}
_FRAME_TIME = Tag(0x0018, 0x1063)
_SOF0 = 0xC0  # baseline DCT; other SOF markers are other JPEG processes


def encode_jpeg_frame(rgb: np.ndarray, *, quality: int = JPEG_QUALITY) -> bytes:
    """One RGB frame as JPEG Baseline with 4:2:2 chroma (``YBR_FULL_422`` in DICOM's terms).

    4:2:2 is what PS3.5 8.2.1 names for lossy JPEG of colour images (and what
    viewers expect with ``YBR_FULL_422``); libjpeg's default would be 4:2:0.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(
            f"rgb must be of shape (rows, columns, 3) and dtype uint8, not {rgb.shape} {rgb.dtype}"
        )
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1-100, not {quality}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").save(
        buffer, format="JPEG", quality=quality, subsampling=1, optimize=False, progressive=False
    )
    return buffer.getvalue()


def _jpeg_frame(data: bytes, index: int) -> tuple[int, int, tuple[tuple[int, int], ...]]:
    """(rows, columns, sampling factors per component) of a baseline JPEG; ValueError otherwise."""
    if data[:2] != b"\xff\xd8":
        raise ValueError(f"frame {index} is not a JPEG (no SOI marker)")
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise ValueError(f"frame {index}: JPEG marker expected at byte {at}")
        marker = data[at + 1]
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if marker != _SOF0:
                raise ValueError(f"frame {index} is not JPEG Baseline (SOF marker 0xFF{marker:02X})")
            segment = data[at + 4 : at + 2 + length]
            rows, columns = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big")
            count = segment[5]
            sampling = tuple((segment[7 + 3 * i] >> 4, segment[7 + 3 * i] & 0x0F) for i in range(count))
            return rows, columns, sampling
        at += 2 + length
    raise ValueError(f"frame {index}: no frame header (SOF) found in the JPEG")


def build_video_clip(
    header: Dataset,
    frames: Sequence[bytes],
    *,
    frame_time_ms: float,
    kind: ClipKind | str,
    series_instance_uid: str,
    sop_instance_uid: str,
    instance_number: int,
    captured_at: datetime,
    manufacturer: str,
    software_versions: str,
    series_number: int = SERIES_NUMBER,
    series_description: str = "Live exam clip",
    operator: str | None = None,
    crossed_network: bool = True,
) -> hd.SOPClass:
    """A multi-frame image of video frames, each already JPEG Baseline 4:2:2 (``encode_jpeg_frame``).

    Parameters
    ----------
    header
        A data set of the study (no pixel data needed): its patient and study attributes are copied.
    frames
        The frames in order, each a JPEG Baseline image with three components
        sampled 4:2:2, all of one size; at least two.
    frame_time_ms
        Milliseconds between frames (the clip's duration over its frame count), for Cine playback.
    kind
        ``ClipKind.SECONDARY_CAPTURE`` (``"sc"``) or ``ClipKind.ULTRASOUND`` (``"us"``).
    captured_at
        When the clip's first frame was captured (aware datetime).
    crossed_network
        The frames went through a lossy video codec before the JPEG (WebRTC's VP8 or H.264, the
        session recording's H.264). An Ultrasound clip is then ``DERIVED``, one straight off the
        device ``ORIGINAL`` (Image Type); a Secondary Capture is ``DERIVED`` either way. Lossy
        Image Compression is ``01`` in both cases, for the JPEG.
    operator
        Who asked for the clip (a username), as Operators' Name.
    """
    kind = ClipKind(kind)
    if not header.get("StudyInstanceUID"):
        raise ValueError("header must name its study (StudyInstanceUID)")
    if len(frames) < 2:
        raise ValueError(f"frames must hold at least two frames, not {len(frames)}")
    if not 0 < frame_time_ms <= 60_000:
        raise ValueError(f"frame_time_ms must be above 0 and at most 60000, not {frame_time_ms}")
    if captured_at.tzinfo is None:
        raise ValueError("captured_at must be an aware datetime")
    if instance_number < 1:
        raise ValueError(f"instance_number must be at least 1, not {instance_number}")
    rows, columns, sampling = _jpeg_frame(frames[0], 0)
    if sampling != ((2, 1), (1, 1), (1, 1)):
        raise ValueError(f"frames must be JPEG with three components sampled 4:2:2, not {sampling}")
    for index, frame in enumerate(frames[1:], start=1):
        if _jpeg_frame(frame, index) != (rows, columns, sampling):
            raise ValueError(f"frame {index} differs from frame 0 in size or sampling ({rows}x{columns})")
    local = _study_clock(header, captured_at)
    modality = str(header.get("Modality", "") or "").strip()
    if kind is ClipKind.ULTRASOUND:
        modality = "US"
    elif not _MODALITY.match(modality):
        modality = "OT"
    ds = hd.SOPClass(
        study_instance_uid=str(header.StudyInstanceUID),
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        sop_class_uid=_CLIP_SOP_CLASS[kind],
        instance_number=instance_number,
        modality=modality,
        manufacturer=manufacturer,
        transfer_syntax_uid=JPEGBaseline8Bit,
        series_description=series_description[:64],
        software_versions=software_versions,
        content_date=DA(local.date()),
        content_time=TM(local.time()),
        series_date=DA(local.date()),
        series_time=TM(local.time()),
        specific_character_set=UTF8,
    )
    ds.copy_patient_and_study_information(header)
    # General Series and General Image: which side, and the orientation of a video picture, are
    # not known (type 2C, empty); copied from the exam where it says.
    ds.Laterality = str(header.get("Laterality", "") or "")
    if header.get("BodyPartExamined"):
        ds.BodyPartExamined = header.BodyPartExamined
    ds.PatientOrientation = ""
    ds.AcquisitionDateTime = DT(local)
    ds.InstanceCreationDate, ds.InstanceCreationTime = DA(local.date()), TM(local.time())
    ds.TimezoneOffsetFromUTC = local.strftime("%z")
    ds.BurnedInAnnotation = "YES"  # a device's screen usually shows the patient's name
    if operator:
        ds.OperatorsName = operator.replace("^", " ")[:63] + "^"
    if kind is ClipKind.SECONDARY_CAPTURE:
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.ConversionType = "DV"  # digitized video
        ds.DateOfSecondaryCapture = DA(local.date())
        ds.TimeOfSecondaryCapture = TM(local.time())
        ds.SecondaryCaptureDeviceManufacturer = manufacturer
        ds.SecondaryCaptureDeviceSoftwareVersions = software_versions
    else:
        ds.ImageType = ["DERIVED" if crossed_network else "ORIGINAL", "PRIMARY"]
    # Image Pixel: JPEG Baseline of RGB is YCbCr with 4:2:2 chroma, interleaved
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    # Multi-frame and Cine: played at the recorded rate, in a loop
    ds.NumberOfFrames = len(frames)
    ds.FrameIncrementPointer = _FRAME_TIME
    ds.FrameTime = f"{frame_time_ms:.6g}"
    rate = max(1, round(1000.0 / frame_time_ms))
    ds.CineRate = rate
    ds.RecommendedDisplayFrameRate = rate
    ds.PreferredPlaybackSequencing = 0  # looping
    ds.StartTrim, ds.StopTrim = 1, len(frames)
    # General Image: what was done to the pixels
    encoded = sum(len(frame) for frame in frames)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = f"{rows * columns * 3 * len(frames) / encoded:.4g}"[:16]
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate(list(frames), has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True  # encapsulated: items up to a sequence delimiter
    return ds
