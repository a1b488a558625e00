"""The one builder of DICOM images from legacy exports: a Secondary Capture Image (PS3.3 A.8.1).

A township DR machine or an old ultrasound cart that cannot send DICOM
exports a JPEG, PNG or BMP; with its sidecar (patient, exam) it becomes a
single-frame Secondary Capture Image:

- Patient and General Study from the sidecar (or from the stored study the
  sidecar names); General Series with the sidecar's Modality (DX, US ...),
  body part and laterality, so viewers group it with the exam's images.
- SC Equipment: Conversion Type ``WSD`` (a workstation's export) unless the
  sidecar says ``DI`` (digital interface) or ``DF`` (digitized film, with
  Nominal Scanned Pixel Spacing).
- General Image: Burned In Annotation ``YES`` (exports usually show the
  patient's name), Lossy Image Compression ``01`` for anything that was a
  lossy JPEG, ``00`` otherwise; Patient Orientation empty (unknown).
- Image Pixel: MONOCHROME2 for grey (8 or 16 bits), RGB for colour;
  a kept JPEG Baseline bitstream is encapsulated as it came (transfer
  syntax JPEG Baseline, Photometric Interpretation as its components are
  coded), everything else is Explicit VR Little Endian.
- A 16-bit grey image gets a VOI window over its full range of values,
  so it is not shown black by a viewer that windows over 0-65535.

Specific Character Set ``ISO_IR 192`` (UTF-8). Nothing depends on the time
of import (no Instance Creation or Date of Secondary Capture), so the same
export imported twice encodes to the same bytes and is stored once.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit
from pydicom.valuerep import DA, TM, format_number_as_ds

from device_adapters.images.reader import ExportedImage
from device_adapters.images.sidecar import UNPAIRED_BODY_PARTS, ConversionType, ImageSidecar
from device_adapters.images.uids import ExportUids

__all__ = ["MANUFACTURER", "UTF8", "build_secondary_capture", "encode"]

UTF8 = "ISO_IR 192"
MANUFACTURER = "teleconsult"
_JPEG_METHOD = "ISO_10918_1"
_TIMES_OF_IMPORT = (
    "InstanceCreationDate",
    "InstanceCreationTime",
    "DateOfSecondaryCapture",
    "TimeOfSecondaryCapture",
)


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))  # type: ignore[no-any-return]


def _monochrome_window(ds: Dataset, pixels: np.ndarray) -> None:
    low, high = int(pixels.min()), int(pixels.max())
    ds.WindowCenter = _ds((low + high) / 2)
    ds.WindowWidth = _ds(max(1, high - low + 1))
    ds.WindowCenterWidthExplanation = "FULL RANGE"


def _keep_jpeg(ds: Dataset, image: ExportedImage) -> None:
    """The export's own JPEG Baseline bitstream as the pixel data, one fragment."""
    assert image.jpeg is not None
    assert image.jpeg_photometric is not None
    ds.PixelData = encapsulate([image.jpeg])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.PhotometricInterpretation = image.jpeg_photometric
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    samples = 1 if image.grey else 3
    ratio = ds.Rows * ds.Columns * samples / len(image.jpeg)
    ds.LossyImageCompressionRatio = _ds(round(ratio, 2))


def build_secondary_capture(
    image: ExportedImage,
    sidecar: ImageSidecar,
    uids: ExportUids,
    *,
    software_versions: str,
) -> hd.sc.SCImage:
    """The Secondary Capture of one export.

    Parameters
    ----------
    image
        The export as read (``reader.read_image``).
    sidecar
        Its demographics, already merged with a stored study's attributes where it names one.
    uids
        Study, series and instance UIDs (``uids.derive_uids``).
    software_versions
        teleconsult's version, as the SC device's software.
    """
    pixels = image.pixels
    if pixels.ndim == 3 and (pixels.shape[2] != 3 or pixels.dtype != np.uint8):
        raise ValueError(f"colour pixels must be (rows, columns, 3) uint8, not {pixels.shape} {pixels.dtype}")
    bits_allocated = 8 if pixels.dtype == np.uint8 else 16
    if not 1 <= image.bits_stored <= bits_allocated:
        raise ValueError(f"bits_stored must be 1-{bits_allocated}, not {image.bits_stored}")
    ds = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation="MONOCHROME2" if image.grey else "RGB",
        bits_allocated=bits_allocated,
        # highdicom asks for an orientation in the patient coordinate system; an export has
        # none, and Patient Orientation (type 2C) is emptied below, which says "unknown".
        coordinate_system="PATIENT",
        patient_orientation=("L", "F"),
        study_instance_uid=uids.study_instance_uid,
        series_instance_uid=uids.series_instance_uid,
        series_number=sidecar.series_number,
        sop_instance_uid=uids.sop_instance_uid,
        instance_number=sidecar.instance_number,
        manufacturer=MANUFACTURER,
        patient_id=sidecar.patient_id,
        patient_birth_date=DA(sidecar.birth_date) if sidecar.birth_date else None,
        accession_number=sidecar.accession_number,
        study_date=DA(sidecar.study_date),
        study_time=TM(sidecar.study_time) if sidecar.study_time else None,
        pixel_spacing=sidecar.pixel_spacing_mm,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        specific_character_set=UTF8,
        series_description=sidecar.series_description or None,
    )
    # Set here rather than through highdicom, whose name check refuses a name without "^" (王小明).
    ds.PatientName = sidecar.patient_name
    ds.PatientSex = sidecar.sex.value if sidecar.sex else ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = sidecar.accession_number  # SH, like the accession number: empty without one
    if sidecar.study_description:
        ds.StudyDescription = sidecar.study_description
    # General Series / General Equipment: the device that made the picture is not known
    ds.Modality = sidecar.modality.value
    if sidecar.body_part:
        ds.BodyPartExamined = sidecar.body_part
    ds.Manufacturer = ""
    if sidecar.body_part not in UNPAIRED_BODY_PARTS:
        # Type 2C: required for a paired (or unknown) body part; empty says "not known"
        ds.Laterality = sidecar.laterality.value if sidecar.laterality else ""
    # General Image
    ds.PatientOrientation = ""
    ds.ContentDate = DA(sidecar.study_date)
    ds.ContentTime = TM(sidecar.study_time) if sidecar.study_time else ""
    ds.BurnedInAnnotation = "YES"
    ds.LossyImageCompression = "01" if image.lossy else "00"
    if image.lossy:
        ds.LossyImageCompressionMethod = _JPEG_METHOD
    # Only what the export says: nothing of the time of import, so a re-import is a duplicate.
    for keyword in _TIMES_OF_IMPORT:
        if keyword in ds:
            delattr(ds, keyword)
    for item in ds.get("ContributingEquipmentSequence", []):  # highdicom, named as the library used
        if "ContributionDateTime" in item:
            del item.ContributionDateTime
    # SC Equipment
    ds.ConversionType = sidecar.conversion_type.value
    ds.SecondaryCaptureDeviceManufacturer = MANUFACTURER
    ds.SecondaryCaptureDeviceSoftwareVersions = software_versions
    if sidecar.conversion_type is ConversionType.DF:
        spacing = sidecar.pixel_spacing_mm
        ds.NominalScannedPixelSpacing = [_ds(value) for value in spacing] if spacing else None
    # Image Pixel
    if image.bits_stored != bits_allocated:
        ds.BitsStored = image.bits_stored
        ds.HighBit = image.bits_stored - 1
    if image.grey and bits_allocated == 16:
        _monochrome_window(ds, pixels)
    if image.jpeg is not None:
        _keep_jpeg(ds, image)
    return ds


def encode(ds: Dataset) -> bytes:
    """The data set as the store takes it: no File Meta, explicit VR little endian (as both syntaxes are)."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    ds.set_original_encoding(False, True, UTF8)
    write_dataset(fp, ds)
    return fp.getvalue()
