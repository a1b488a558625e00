"""Legacy image exports: JPEG, PNG or BMP files plus a demographics sidecar become DICOM images.

Township DR machines and old ultrasound carts that cannot send DICOM export
pictures; each comes with a JSON sidecar of the same stem (``x.jpg`` +
``x.json``). ``sidecar`` validates the demographics, ``reader`` reads the
picture (``jpeg`` its markers), ``uids`` derives the study, series and
instance UIDs, ``to_dicom.build_secondary_capture`` is the one builder of
the Secondary Capture Image, and ``importer.ImageImporter`` stores it
through the store API. The ECG drop folder (``device_adapters.ecg.inbox``)
takes exports with their sidecars, and ``POST /api/devices/images``
(``teleconsult/api/routes/devices.py``) takes uploads. Sidecar format,
what is stored and limits: docs/devices.md.
"""

from device_adapters.images.errors import (
    ImageImportError,
    ImageRequestError,
    ImageTooLargeError,
    SidecarError,
    UnsupportedImageError,
)
from device_adapters.images.formats import ImageFormat, is_image_name, is_sidecar_name, sidecar_for
from device_adapters.images.importer import ImageImporter, ImportedImage
from device_adapters.images.reader import ExportedImage, read_image
from device_adapters.images.sidecar import ImageSidecar, read_sidecar, sidecar_from_fields
from device_adapters.images.to_dicom import build_secondary_capture

__all__ = [
    "ExportedImage",
    "ImageFormat",
    "ImageImportError",
    "ImageImporter",
    "ImageRequestError",
    "ImageSidecar",
    "ImageTooLargeError",
    "ImportedImage",
    "SidecarError",
    "UnsupportedImageError",
    "build_secondary_capture",
    "is_image_name",
    "is_sidecar_name",
    "read_image",
    "read_sidecar",
    "sidecar_for",
    "sidecar_from_fields",
]
