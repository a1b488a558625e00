"""Why a kiosk message is refused.

    TeleconsultError (teleconsult.errors)
    ├── KioskMessageError           not a valid message: schema, unit, impossible value (422)
    ├── AuthenticationError
    │   └── KioskTokenError         no token, or not the token of a registered kiosk (401)
    ├── PermissionDeniedError
    │   └── KioskDeviceError        the device is not registered, or not the one sending (403)
    └── ConflictError
        └── KioskConflictError      a message repeated with other values (409)

Messages name the field and what to do; they never carry the resident ID
number (at most its masked form) or the patient's name. ``errors`` lists
the invalid fields as the API's validation problems do.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from teleconsult.errors import AuthenticationError, ConflictError, PermissionDeniedError, TeleconsultError

__all__ = [
    "KioskConflictError",
    "KioskDeviceError",
    "KioskMessageError",
    "KioskTokenError",
    "field_errors",
]


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """The invalid fields of a message, without the values sent (which may hold the ID number)."""
    return [
        {
            "field": ".".join(str(part) for part in error.get("loc", ())),
            "message": str(error.get("msg", "")).removeprefix("Value error, "),
        }
        for error in exc.errors(include_input=False, include_url=False, include_context=False)
    ]


class KioskMessageError(TeleconsultError):
    code = "kiosk-invalid"
    http_status = 422

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []

    @classmethod
    def of(cls, exc: ValidationError) -> KioskMessageError:
        errors = field_errors(exc)
        summary = "; ".join(f"{e['field'] or 'message'}: {e['message']}" for e in errors[:5])
        return cls(f"the kiosk message is invalid: {summary}"[:1000], errors)

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.message, "errors": self.errors}


class KioskTokenError(AuthenticationError):
    code = "unauthenticated"


class KioskDeviceError(PermissionDeniedError):
    code = "kiosk-device-unknown"


class KioskConflictError(ConflictError):
    code = "kiosk-conflict"
