"""STOW-RS (PS3.18 10.5): store instances sent as multipart/related Part 10 files.

The body is read as a stream and spooled part by part (see
``dicomweb/multipart.py``); only a complete, well-formed body of at most
``http_max_upload_bytes`` is stored, so a truncated upload stores nothing.
Then each part goes through ``InstanceStore.store_instance`` on a worker
thread, recorded as the caller's organisation's, and audited one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.exc import SQLAlchemyError

from teleconsult.api.auditing import audit_request
from teleconsult.api.deps import PrincipalDep, SettingsDep, StoreDep
from teleconsult.api.dicomweb.access import StudyPath, path_uid
from teleconsult.api.dicomweb.dicomjson import DicomJSONResponse
from teleconsult.api.dicomweb.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from teleconsult.api.dicomweb.media import DICOM, DICOM_JSON, MULTIPART_RELATED, parse_content_type
from teleconsult.api.dicomweb.multipart import ReceivedPart, read_multipart
from teleconsult.api.dicomweb.storeresponse import store_response, store_status
from teleconsult.api.dicomweb.storing import PartResult, store_part
from teleconsult.api.dicomweb.uris import PREFIX, DicomwebURLs
from teleconsult.audit import AuditOutcome, Interface
from teleconsult.config import Settings
from teleconsult.domain.identity import Principal
from teleconsult.errors import OutOfResourcesError, TeleconsultError
from teleconsult.storage.store import InstanceStore

__all__ = ["router"]

router = APIRouter(prefix=PREFIX, tags=["DICOMweb STOW-RS"])

_STORE_RESPONSE = {"content": {DICOM_JSON: {"schema": {"type": "object"}}}}
_ROUTE: dict[str, Any] = {
    "response_class": DicomJSONResponse,
    "status_code": 200,
    "responses": {
        200: {"description": "Every instance stored", **_STORE_RESPONSE},
        202: {"description": "Some instances stored; FailedSOPSequence lists the others", **_STORE_RESPONSE},
        400: {"description": "Malformed multipart body, or an invalid Study Instance UID in the path"},
        401: {"description": "No valid bearer token"},
        409: {"description": "No instance stored; FailedSOPSequence gives each reason", **_STORE_RESPONSE},
        413: {"description": "Body larger than TELECONSULT_HTTP_MAX_UPLOAD_BYTES"},
        415: {"description": 'Not multipart/related; type="application/dicom"'},
        503: {
            "description": "The index or the object storage cannot be reached: the request stops at that "
            "part, parts before it stay stored (sending them again is harmless); send it again later"
        },
        507: {
            "description": "The disk of the data directory or of the index is full: the request stops at "
            "the part that found no room, parts before it stay stored; send it again once space is freed"
        },
    },
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "description": 'Part 10 files, one per part: multipart/related; type="application/dicom"',
            "content": {MULTIPART_RELATED: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
}


def _boundary(request: Request, settings: Settings) -> str:
    """The boundary of an acceptable body, after the cheap checks (type, declared size)."""
    content_type = parse_content_type(request.headers.get("content-type"))
    if content_type is None or content_type.type != MULTIPART_RELATED:
        raise UnsupportedMediaTypeError(
            f'STOW-RS takes {MULTIPART_RELATED}; type="{DICOM}", not '
            f"{content_type.type if content_type else 'a body without Content-Type'}"
        )
    part_type = content_type.params.get("type", DICOM).lower()
    if part_type != DICOM:
        raise UnsupportedMediaTypeError(
            f"STOW-RS parts must be {DICOM} (Part 10 files); {part_type} is not supported"
        )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise InvalidRequestError(f"Content-Length {declared[:20]!r} is not a number")
        if int(declared) > settings.http_max_upload_bytes:
            raise PayloadTooLargeError(
                f"the request body of {int(declared)} bytes is larger than the limit of "
                f"{settings.http_max_upload_bytes} bytes (TELECONSULT_HTTP_MAX_UPLOAD_BYTES); "
                "send fewer instances per request"
            )
    return content_type.params.get("boundary", "")


def _audit_part(request: Request, principal: Principal, result: PartResult) -> None:
    if result.stored is not None:
        outcome = AuditOutcome.SUCCESS
        detail = f"STOW-RS stored {result.sop_instance_uid} ({result.stored.outcome.value})"
    else:
        outcome = AuditOutcome.FAILURE
        detail = (
            f"STOW-RS refused {result.sop_instance_uid or 'a part'} "
            f"with 0x{result.failure_reason or 0:04X}: {result.message}"
        )
    audit_request(
        request,
        "instance.store",
        outcome,
        principal=principal,
        interface=Interface.DICOMWEB,
        study_instance_uid=result.study_instance_uid,
        patient_id=result.patient_id,
        detail=detail,
    )


def _store_all(
    request: Request, principal: Principal, store: InstanceStore, parts: list[ReceivedPart], study: str | None
) -> list[PartResult]:
    results = []
    for part in parts:
        try:
            result = store_part(part, store, organisation=principal.organisation, study=study)
        except OutOfResourcesError as exc:
            # The disk is full, or the index or the object storage is down: the rest would fail
            # too. The request answers 507 or 503; parts stored before stay stored (sending them
            # again is harmless). With the index down its audit row cannot be written either
            # (AuditLog logs that): the request fails with the error that stopped it.
            refused = PartResult("", "", failure_reason=exc.dimse_status, message=exc.message)
            with contextlib.suppress(SQLAlchemyError):
                _audit_part(request, principal, refused)
            raise
        finally:
            part.close()
        _audit_part(request, principal, result)
        results.append(result)
    return results


async def _stow(
    request: Request, principal: Principal, store: InstanceStore, settings: Settings, study: str | None
) -> DicomJSONResponse:
    try:
        if study is not None:
            study = path_uid(study, "Study Instance UID")
        boundary = _boundary(request, settings)
        parts = await read_multipart(
            request.stream(),
            boundary,
            max_bytes=settings.http_max_upload_bytes,
            spool_dir=store.files.spool_dir,
        )
    except TeleconsultError as exc:
        await asyncio.to_thread(
            audit_request,
            request,
            "instance.store",
            AuditOutcome.FAILURE,
            principal=principal,
            interface=Interface.DICOMWEB,
            study_instance_uid=study,
            detail=f"STOW-RS request refused ({exc.http_status}): {exc.message[:200]}",
        )
        raise
    try:
        results = await asyncio.to_thread(_store_all, request, principal, store, parts, study)
    finally:
        for part in parts:
            part.close()
    return DicomJSONResponse(
        store_response(results, DicomwebURLs(request)), status_code=store_status(results)
    )


@router.post("/studies", summary="Store instances (STOW-RS)", **_ROUTE)
async def store_instances(
    request: Request, principal: PrincipalDep, store: StoreDep, settings: SettingsDep
) -> DicomJSONResponse:
    return await _stow(request, principal, store, settings, None)


@router.post("/studies/{study}", summary="Store instances of one study (STOW-RS)", **_ROUTE)
async def store_study_instances(
    study: StudyPath, request: Request, principal: PrincipalDep, store: StoreDep, settings: SettingsDep
) -> DicomJSONResponse:
    return await _stow(request, principal, store, settings, study)
