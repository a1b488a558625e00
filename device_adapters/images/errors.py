"""Why an image export cannot be imported.

    TeleconsultError (teleconsult.errors)
    ├── ImageImportError            the export cannot become a DICOM image (422)
    │   ├── SidecarError            the demographics sidecar is missing fields or has invalid ones (422)
    │   └── UnsupportedImageError   a JPEG, PNG or BMP using a feature not supported (422)
    ├── ImageRequestError           the upload itself is wrong: no image, sidecar and fields both (400)
    └── ImageTooLargeError          larger than TELECONSULT_ECG_MAX_FILE_BYTES, or too many pixels (413)

Messages say what is wrong and where (the sidecar's field, the JPEG's
frame header), so the reason beside a quarantined export can be acted on;
they never carry patient names, IDs or birth dates.
"""

from __future__ import annotations

from collections.abc import Sequence

from teleconsult.errors import TeleconsultError

__all__ = [
    "ImageImportError",
    "ImageRequestError",
    "ImageTooLargeError",
    "SidecarError",
    "UnsupportedImageError",
]


class ImageImportError(TeleconsultError):
    code = "image-invalid"
    http_status = 422


class SidecarError(ImageImportError):
    """The sidecar (or the upload's form fields) is invalid; ``errors`` lists (field, message) pairs."""

    code = "image-sidecar-invalid"

    def __init__(self, message: str, *, errors: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.errors = tuple(errors)


class UnsupportedImageError(ImageImportError):
    code = "image-unsupported"


class ImageRequestError(TeleconsultError):
    code = "image-bad-request"
    http_status = 400


class ImageTooLargeError(TeleconsultError):
    code = "image-too-large"
    http_status = 413
