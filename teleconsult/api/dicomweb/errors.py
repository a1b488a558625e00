"""HTTP errors that only DICOMweb raises, rendered as problem+json by ``api/problems.py``.

They subclass ``TeleconsultError`` so the existing handler turns them into
RFC 9457 bodies with a fixed ``code``; they carry no DIMSE status because no
DICOM network service can raise them.
"""

from __future__ import annotations

from teleconsult.errors import TeleconsultError

__all__ = [
    "InvalidRequestError",
    "NotAcceptableError",
    "PayloadTooLargeError",
    "UnprocessableInstanceError",
    "UnsupportedMediaTypeError",
]


class InvalidRequestError(TeleconsultError):
    """The request is malformed: unknown query key, bad frame list, broken multipart body."""

    code = "invalid-request"
    http_status = 400


class NotAcceptableError(TeleconsultError):
    """None of the media types or transfer syntaxes in Accept can be produced."""

    code = "not-acceptable"
    http_status = 406


class PayloadTooLargeError(TeleconsultError):
    """The request body is larger than ``http_max_upload_bytes``."""

    code = "payload-too-large"
    http_status = 413


class UnsupportedMediaTypeError(TeleconsultError):
    """The request body is not of a media type this resource accepts."""

    code = "unsupported-media-type"
    http_status = 415


class UnprocessableInstanceError(TeleconsultError):
    """A stored instance that can be sent as stored but not parsed (deflated, too large inflated)."""

    code = "unprocessable-instance"
    http_status = 422
