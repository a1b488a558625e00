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
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import DA, DT, TM

__all__ = ["SERIES_NUMBER", "UTF8", "build_video_capture"]

UTF8 = "ISO_IR 192"
SERIES_NUMBER = 9101  # after the acquisitions' series and the report series (9001, 9002)
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
