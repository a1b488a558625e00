"""The exception tree of teleconsult.

    TeleconsultError
    ├── InvalidInstanceError        the data set cannot be stored as sent (Cxxx / 400)
    │   ├── InvalidUIDError         a UID is missing or not a valid UID
    │   └── SOPClassMismatchError   data set and context disagree (A900 / 400)
    ├── InvalidWorklistItemError    a worklist item cannot be created as given (400)
    ├── InvalidConsultError         a consult request or change cannot be made as given (422)
    ├── InvalidReportError          report content does not fit its template (422)
    ├── NotFoundError               no such object (404)
    ├── ConflictError               it exists already (409)
    │   ├── ConsultStateError       the consult's state does not allow this (409)
    │   ├── ReportSignedError       the report is final: only a signed addendum changes it (409)
    │   └── AlreadySignedError      this signature has been given already (409)
    ├── AuthenticationError         no valid credentials (401)
    ├── PermissionDeniedError       valid credentials without the right (403)
    └── OutOfResourcesError         a resource failed: a retry later may succeed (A7xx)
        ├── StorageFullError        the disk or a quota is full (A700 / 507)
        ├── IndexUnavailableError   the SQL index cannot be reached (A701 / 503)
        └── StorageUnavailableError the object storage cannot be reached or refused (A702 / 503)

Each class carries a fixed ``code`` slug, an HTTP status and, where it
applies, the DIMSE status a C-STORE handler answers with. Messages name the
object (a UID, an AE title) and never carry patient name, ID or birth date.
"""

from __future__ import annotations

__all__ = [
    "AlreadySignedError",
    "ConsultStateError",
    "IndexUnavailableError",
    "InvalidConsultError",
    "InvalidInstanceError",
    "InvalidReferralError",
    "InvalidReportError",
    "InvalidUIDError",
    "InvalidWorklistItemError",
    "NotFoundError",
    "OutOfResourcesError",
    "ReferralStateError",
    "ReportSignedError",
    "SOPClassMismatchError",
    "StorageFullError",
    "StorageUnavailableError",
    "TeleconsultError",
]


class TeleconsultError(Exception):
    """Base of every error teleconsult raises on purpose."""

    code = "error"
    http_status = 500
    dimse_status = 0xC000

    def __init__(self, message: str, *, comment: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # A DIMSE ErrorComment is LO (64 characters): a short form that still
        # says what failed; the full message goes to the log.
        self.comment = (comment or message)[:64]


class InvalidInstanceError(TeleconsultError):
    code = "invalid-instance"
    http_status = 400
    dimse_status = 0xC000  # Error: cannot understand


class InvalidUIDError(InvalidInstanceError):
    code = "invalid-uid"
    dimse_status = 0xC001


class SOPClassMismatchError(InvalidInstanceError):
    code = "sop-class-mismatch"
    dimse_status = 0xA900  # Error: data set does not match SOP class


class InvalidWorklistItemError(TeleconsultError):
    code = "invalid-worklist-item"
    http_status = 400


class InvalidConsultError(TeleconsultError):
    code = "invalid-consult"
    http_status = 422


class InvalidReferralError(TeleconsultError):
    """A referral that cannot be made as given: its target, direction, flag or texts (422)."""

    code = "invalid-referral"
    http_status = 422


class InvalidReportError(TeleconsultError):
    code = "invalid-report"
    http_status = 422


class NotFoundError(TeleconsultError):
    code = "not-found"
    http_status = 404


class ConflictError(TeleconsultError):
    code = "conflict"
    http_status = 409


class ConsultStateError(ConflictError):
    code = "consult-state"


class ReferralStateError(ConflictError):
    """The referral's state (or an open referral of the same kind) does not allow this (409)."""

    code = "referral-state"


class ReportSignedError(ConflictError):
    code = "report-signed"


class AlreadySignedError(ConflictError):
    code = "already-signed"


class AuthenticationError(TeleconsultError):
    code = "unauthenticated"
    http_status = 401


class PermissionDeniedError(TeleconsultError):
    code = "forbidden"
    http_status = 403


class OutOfResourcesError(TeleconsultError):
    """Nothing was wrong with the request; what it needs is missing for now (DICOM "out of resources").

    A request storing several objects stops at the first one: the rest would
    fail the same way.
    """

    code = "out-of-resources"
    http_status = 503
    dimse_status = 0xA700


class StorageFullError(OutOfResourcesError):
    code = "storage-full"
    http_status = 507
    dimse_status = 0xA700  # Refused: out of resources


class IndexUnavailableError(OutOfResourcesError):
    code = "index-unavailable"
    http_status = 503
    dimse_status = 0xA701


class StorageUnavailableError(OutOfResourcesError):
    """The object storage (TELECONSULT_STORAGE_URL) did not take or give a file: unreachable, 5xx, refused."""

    code = "storage-unavailable"
    http_status = 503
    dimse_status = 0xA702  # Refused: out of resources
