"""Why an ECG file cannot be imported.

    TeleconsultError (teleconsult.errors)
    ├── EcgImportError              the file cannot become a DICOM ECG (422)
    │   ├── UnknownEcgFormatError   not a format teleconsult reads (422)
    │   └── UnsupportedEcgError     a known format, using a feature not supported (422)
    ├── EcgRequestError             the upload itself is wrong: no file, an empty one (400)
    └── EcgTooLargeError            larger than TELECONSULT_ECG_MAX_FILE_BYTES (413)

Messages say what is wrong and where in the file (section, tag, line), so
the reason written beside a quarantined file can be acted on; they never
carry patient names, IDs or birth dates.
"""

from __future__ import annotations

from teleconsult.errors import TeleconsultError

__all__ = [
    "EcgImportError",
    "EcgRequestError",
    "EcgTooLargeError",
    "UnknownEcgFormatError",
    "UnsupportedEcgError",
]


class EcgImportError(TeleconsultError):
    code = "ecg-invalid"
    http_status = 422


class UnknownEcgFormatError(EcgImportError):
    code = "ecg-unknown-format"


class UnsupportedEcgError(EcgImportError):
    code = "ecg-unsupported"


class EcgRequestError(TeleconsultError):
    code = "ecg-bad-request"
    http_status = 400


class EcgTooLargeError(TeleconsultError):
    code = "ecg-too-large"
    http_status = 413
