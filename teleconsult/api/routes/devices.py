"""Devices: ECG files uploaded over HTTP (``POST /api/devices/ecg``), imported as the drop folder does.

The upload is the caller's organisation's; an admin may name an
organisation below their own in the ``organisation`` field. Parsing and
storing run on a worker thread. A file that cannot be imported is refused
with problem+json naming what is wrong (422), and kept in the quarantine
with that reason, as a dropped file would be. Every attempt is audited.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from pydantic import BaseModel, Field

from device_adapters.ecg.errors import EcgImportError, EcgRequestError, EcgTooLargeError
from device_adapters.ecg.importer import EcgImporter, ImportedEcg
from device_adapters.ecg.quarantine import Quarantine, safe_file_name
from teleconsult.api.auditing import audit_request
from teleconsult.api.deps import SettingsDep, StoreDep, require_roles
from teleconsult.api.openapi import problem_response
from teleconsult.audit import AuditOutcome
from teleconsult.config import Settings
from teleconsult.domain.identity import Principal, Role
from teleconsult.errors import InvalidInstanceError, NotFoundError, PermissionDeniedError, TeleconsultError
from teleconsult.storage.store import InstanceStore

__all__ = ["router"]

router = APIRouter(prefix="/api/devices", tags=["devices"])

_MAX_FILES = 16  # a WFDB header with its signal files; one file for every other format
UploaderDep = Annotated[
    Principal, Depends(require_roles(Role.SONOGRAPHER, Role.TOWNSHIP_DOCTOR, Role.SPECIALIST, Role.ADMIN))
]


class EcgImportedPublic(BaseModel):
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str = Field(description="12-Lead ECG or General ECG Waveform Storage")
    organisation: str
    source_format: str = Field(description="scp-ecg, hl7-aecg, wfdb or csv")
    outcome: str = Field(description="stored; duplicate if the same file was imported before")


def _organisation(request: Request, principal: Principal, wanted: str | None) -> str:
    if wanted is None or wanted == principal.organisation:
        return principal.organisation
    if not principal.can_see(wanted):
        request.state.audited = True
        audit_request(
            request, "instance.store", AuditOutcome.DENIED, principal=principal,
            detail=f"ECG upload for organisation {wanted!r} outside the caller's scope",
        )  # fmt: skip
        raise NotFoundError(f"organisation {wanted!r} is not one you may upload for")
    if principal.role is not Role.ADMIN:
        raise PermissionDeniedError(
            f"only an admin uploads for an organisation other than their own ({principal.organisation})"
        )
    return wanted


async def _read(uploads: list[UploadFile], settings: Settings) -> dict[str, bytes]:
    if len(uploads) > _MAX_FILES:
        raise EcgRequestError(
            f"{len(uploads)} files sent; one ECG per request (a WFDB record: header and signals)"
        )
    files: dict[str, bytes] = {}
    for upload in uploads:
        name = safe_file_name(upload.filename or "upload")
        if name in files:
            raise EcgRequestError(f"two files are named {name!r}")
        content = await upload.read(settings.ecg_max_file_bytes + 1)
        if len(content) > settings.ecg_max_file_bytes:
            raise EcgTooLargeError(
                f"{name!r} is larger than the limit of {settings.ecg_max_file_bytes} bytes "
                "(TELECONSULT_ECG_MAX_FILE_BYTES)"
            )
        files[name] = content
    return files


def _import(
    request: Request,
    principal: Principal,
    store: InstanceStore,
    settings: Settings,
    files: dict[str, bytes],
    organisation: str,
) -> ImportedEcg:
    names = ", ".join(files)[:200]
    try:
        imported = EcgImporter(settings, store).import_files(files, organisation=organisation)
    except TeleconsultError as exc:
        if isinstance(exc, EcgImportError | InvalidInstanceError):
            Quarantine(settings.quarantine_dir).keep(
                files,
                reason=exc.message,
                source=f"upload by {principal.username} (POST /api/devices/ecg)",
                organisation=organisation,
            )
        audit_request(
            request, "instance.store", AuditOutcome.FAILURE, principal=principal,
            detail=f"ECG upload {names} refused ({exc.http_status}): {exc.message[:200]}",
        )  # fmt: skip
        raise
    except Exception as exc:  # a reader's bug: the file is kept all the same, the caller gets a 500
        Quarantine(settings.quarantine_dir).keep(
            files,
            reason=f"unexpected error {type(exc).__name__} (see the teleconsult log)",
            source=f"upload by {principal.username} (POST /api/devices/ecg)",
            organisation=organisation,
        )
        audit_request(
            request, "instance.store", AuditOutcome.FAILURE, principal=principal,
            detail=f"ECG upload {names} failed: unexpected {type(exc).__name__}",
        )  # fmt: skip
        raise
    stored = imported.stored
    audit_request(
        request, "instance.store", AuditOutcome.SUCCESS, principal=principal,
        study_instance_uid=stored.study_instance_uid, patient_id=imported.patient_id,
        detail=f"ECG upload {names} ({imported.source_format.label}) stored {stored.sop_instance_uid} "
        f"({stored.outcome.value})",
    )  # fmt: skip
    return imported


@router.post(
    "/ecg",
    status_code=201,
    response_model=EcgImportedPublic,
    summary="Import an ECG file (SCP-ECG, HL7 aECG, WFDB header and signal files, CSV) as DICOM",
    responses={
        400: problem_response(
            "No usable file: an empty file name list, two files of one name, too many files"
        ),
        403: problem_response("Not allowed to upload for the organisation named"),
        404: problem_response("The organisation named is not one the caller may upload for"),
        413: problem_response("A file larger than TELECONSULT_ECG_MAX_FILE_BYTES"),
        422: problem_response(
            "The file cannot be imported (unknown format, damaged, unsupported feature, no patient ID) "
            "and was quarantined; or invalid form fields"
        ),
        503: problem_response("The index cannot be reached; send again later"),
        507: problem_response("The store is full; send again later"),
    },
)
async def upload_ecg(
    request: Request,
    principal: UploaderDep,
    store: StoreDep,
    settings: SettingsDep,
    file: Annotated[
        list[UploadFile],
        File(description="The ECG file; for WFDB the .hea header and each signal file it names"),
    ],
    organisation: Annotated[
        str | None,
        Form(
            pattern=r"^[A-Z0-9][A-Z0-9_-]{0,31}$",
            description="Organisation code the ECG belongs to (default: the caller's; others: admins only)",
        ),
    ] = None,
) -> EcgImportedPublic:
    owner = await asyncio.to_thread(_organisation, request, principal, organisation)
    files = await _read(file, settings)
    imported = await asyncio.to_thread(_import, request, principal, store, settings, files, owner)
    stored = imported.stored
    return EcgImportedPublic(
        sop_instance_uid=stored.sop_instance_uid,
        study_instance_uid=stored.study_instance_uid,
        series_instance_uid=stored.series_instance_uid,
        sop_class_uid=stored.sop_class_uid,
        organisation=owner,
        source_format=imported.source_format.value,
        outcome=stored.outcome.value,
    )
