"""Why a signalling message was not acted on; each becomes an ``error`` message on the socket.

    LiveError                   (400) the base: a message the session cannot act on
    ├── InvalidMessageError     (400) not JSON, not an object, an unknown type or bad fields
    ├── InvalidOfferError       (400) the offer's SDP cannot be used (or lacks the media its role needs)
    ├── InvalidCandidateError   (400) a candidate that cannot be parsed, or before any offer
    ├── RoleDeniedError         (403) the caller may not take this role in this consult's session
    ├── SessionFullError        (503) the session has as many viewers as it takes
    └── SessionEndedError       (410) the session has ended

None of them closes the socket or touches the session: the client may
correct itself and send again. Messages are sentences for people and never
carry patient data.
"""

from __future__ import annotations

__all__ = [
    "InvalidCandidateError",
    "InvalidMessageError",
    "InvalidOfferError",
    "LiveError",
    "RoleDeniedError",
    "SessionEndedError",
    "SessionFullError",
]


class LiveError(Exception):
    code = "invalid-message"
    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidMessageError(LiveError):
    code = "invalid-message"


class InvalidOfferError(LiveError):
    code = "invalid-offer"


class InvalidCandidateError(LiveError):
    code = "invalid-candidate"


class RoleDeniedError(LiveError):
    code = "forbidden"
    status = 403


class SessionFullError(LiveError):
    code = "session-full"
    status = 503


class SessionEndedError(LiveError):
    code = "session-ended"
    status = 410
