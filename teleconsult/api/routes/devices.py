"""Devices: ECG files (``POST /api/devices/ecg``) and image exports (``POST /api/devices/images``)
uploaded over HTTP, imported as the drop folder does.

The upload is the caller's organisation's; an admin may name an
organisation below their own in the ``organisation`` field. Parsing and
storing run on a worker thread. A file that cannot be imported is refused
with problem+json naming what is wrong (422), and kept in the quarantine
with that reason, as a dropped file would be. Every attempt is audited.
An image export's demographics come as its sidecar file (field
``sidecar``) or as form fields of the same names (docs/devices.md).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from device_adapters.ecg.errors import EcgImportError, EcgRequestError, EcgTooLargeError
from device_adapters.ecg.importer import EcgImporter, ImportedEcg
from device_adapters.ecg.quarantine import Quarantine, safe_file_name
from device_adapters.images.errors import (
    ImageImportError,
    ImageRequestError,
    ImageTooLargeError,
    SidecarError,
)
from device_adapters.images.importer import ImageImporter, ImportedImage
from device_adapters.images.sidecar import MAX_SIDECAR_BYTES, ImageSidecar, sidecar_from_fields
from teleconsult.api.auditing import audit_request
from teleconsult.api.deps import SettingsDep, StoreDep, require_roles
from teleconsult.api.openapi import problem_response
from teleconsult.api.problems import problem
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


def _organisation(request: Request, principal: Principal, wanted: str | None, what: str = "ECG") -> str:
    if wanted is None or wanted == principal.organisation:
        return principal.organisation
    if not principal.can_see(wanted):
        request.state.audited = True
        audit_request(
            request, "instance.store", AuditOutcome.DENIED, principal=principal,
            detail=f"{what} upload for organisation {wanted!r} outside the caller's scope",
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


@contextmanager
def _kept_on_failure(
    request: Request,
    principal: Principal,
    settings: Settings,
    *,
    what: str,
    files: dict[str, bytes],
    route: str,
    organisation: str,
    kept_for: tuple[type[TeleconsultError], ...],
) -> Iterator[None]:
    """An upload refused is audited; its files are kept in the quarantine when the fault is in them
    (``kept_for``) or in a reader (a bug: the caller gets a 500, the files are not lost)."""
    source = f"upload by {principal.username} (POST {route})"
    try:
        yield
    except TeleconsultError as exc:
        if isinstance(exc, kept_for):
            Quarantine(settings.quarantine_dir).keep(
                files, reason=exc.message, source=source, organisation=organisation
            )
        audit_request(
            request, "instance.store", AuditOutcome.FAILURE, principal=principal,
            detail=f"{what} refused ({exc.http_status}): {exc.message[:200]}",
        )  # fmt: skip
        raise
    except Exception as exc:
        Quarantine(settings.quarantine_dir).keep(
            files,
            reason=f"unexpected error {type(exc).__name__} (see the teleconsult log)",
            source=source,
            organisation=organisation,
        )
        audit_request(
            request, "instance.store", AuditOutcome.FAILURE, principal=principal,
            detail=f"{what} failed: unexpected {type(exc).__name__}",
        )  # fmt: skip
        raise


def _audit_stored(
    request: Request, principal: Principal, what: str, imported: ImportedEcg | ImportedImage
) -> None:
    stored = imported.stored
    audit_request(
        request, "instance.store", AuditOutcome.SUCCESS, principal=principal,
        study_instance_uid=stored.study_instance_uid, patient_id=imported.patient_id,
        detail=f"{what} ({imported.source_format.label}) stored {stored.sop_instance_uid} "
        f"({stored.outcome.value})",
    )  # fmt: skip


def _import(
    request: Request,
    principal: Principal,
    store: InstanceStore,
    settings: Settings,
    files: dict[str, bytes],
    organisation: str,
) -> ImportedEcg:
    what = f"ECG upload {', '.join(files)[:200]}"
    with _kept_on_failure(
        request, principal, settings, what=what, files=files, route="/api/devices/ecg",
        organisation=organisation, kept_for=(EcgImportError, InvalidInstanceError),
    ):  # fmt: skip
        imported = EcgImporter(settings, store).import_files(files, organisation=organisation)
    _audit_stored(request, principal, what, imported)
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


# -- image exports (device_adapters/images): JPEG, PNG or BMP plus demographics ---------------------


class ImageImportedPublic(BaseModel):
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str = Field(description="Secondary Capture Image Storage")
    transfer_syntax_uid: str = Field(
        description="JPEG Baseline (a JPEG kept as it came) or Explicit VR Little Endian"
    )
    organisation: str
    source_format: str = Field(description="jpeg, png or bmp")
    outcome: str = Field(
        description="stored; duplicate if the same export was imported before; replaced if its "
        "demographics changed"
    )


class ImageFields(BaseModel):
    """The sidecar's fields as form fields, for clients that cannot write a JSON file (docs/devices.md)."""

    patient_id: str | None = Field(None, description="Patient ID (required)")
    patient_name: str | None = Field(None, description="family^given, or Wang^Xiaoming=王^小明")
    sex: str | None = Field(None, description="M, F or O")
    birth_date: str | None = Field(None, description="YYYY-MM-DD")
    modality: str | None = Field(None, description="DX, CR, US, OT ... (required)")
    body_part: str | None = Field(None, description="CHEST, ABDOMEN, KNEE ...")
    laterality: str | None = Field(None, description="R or L")
    study_date: str | None = Field(None, description="YYYY-MM-DD (required)")
    study_time: str | None = Field(None, description="HH:MM[:SS]")
    accession_number: str | None = None
    study_description: str | None = None
    study_instance_uid: str | None = Field(None, description="add the image to this study")
    series_description: str | None = None
    series_number: str | None = None
    instance_number: str | None = None
    pixel_spacing_mm: str | None = Field(None, description="one number, or row,column")
    conversion_type: str | None = Field(None, description="WSD (default), DI or DF")


async def _read_one(upload: UploadFile, limit: int, what: str) -> tuple[str, bytes]:
    name = safe_file_name(upload.filename or "upload")
    content = await upload.read(limit + 1)
    if len(content) > limit:
        setting = " (TELECONSULT_ECG_MAX_FILE_BYTES)" if what == "image" else ""
        raise ImageTooLargeError(f"the {what} {name!r} is larger than the limit of {limit} bytes{setting}")
    return name, content


def _import_image(
    request: Request,
    principal: Principal,
    store: InstanceStore,
    settings: Settings,
    image: tuple[str, bytes],
    sidecar: tuple[str, bytes] | dict[str, str],
    organisation: str,
) -> ImportedImage:
    image_name, content = image
    if isinstance(sidecar, dict):  # the form fields, kept in quarantine as the sidecar they stand for
        sidecar_name = f"{image_name.rsplit('.', 1)[0]}.json"
        sidecar_bytes = json.dumps(sidecar, ensure_ascii=False, indent=2).encode()
    else:
        sidecar_name, sidecar_bytes = sidecar
    if sidecar_name == image_name:  # both kept in the quarantine under their names
        sidecar_name = f"{sidecar_name}.json"
    files = {image_name: content, sidecar_name: sidecar_bytes}
    what = f"image upload {image_name}"
    with _kept_on_failure(
        request, principal, settings, what=what, files=files, route="/api/devices/images",
        organisation=organisation, kept_for=(ImageImportError, InvalidInstanceError, ImageTooLargeError),
    ):  # fmt: skip
        demographics: bytes | ImageSidecar = (
            sidecar_from_fields(sidecar) if isinstance(sidecar, dict) else sidecar_bytes
        )
        imported = ImageImporter(settings, store).import_export(
            image_name, content, demographics, organisation=organisation, sidecar_name=sidecar_name
        )
    _audit_stored(request, principal, what, imported)
    return imported


@router.post(
    "/images",
    status_code=201,
    response_model=ImageImportedPublic,
    summary="Import an image export (JPEG, PNG, BMP) with its demographics as a DICOM Secondary Capture",
    responses={
        400: problem_response("Demographics sent both as a sidecar file and as form fields"),
        403: problem_response("Not allowed to upload for the organisation named"),
        404: problem_response("The organisation named is not one the caller may upload for"),
        413: problem_response(
            "An image larger than TELECONSULT_ECG_MAX_FILE_BYTES or with too many pixels, or a sidecar "
            "larger than 64 KiB"
        ),
        422: problem_response(
            "The export cannot be imported (not a readable JPEG, PNG or BMP, an unsupported kind, invalid "
            "demographics: `errors` names each field) and was quarantined; or invalid form fields"
        ),
        503: problem_response("The index cannot be reached; send again later"),
        507: problem_response("The store is full; send again later"),
    },
)
async def upload_image(
    request: Request,
    principal: UploaderDep,
    store: StoreDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="The exported image: JPEG, PNG or BMP")],
    fields: Annotated[ImageFields, Form()],
    sidecar: Annotated[
        UploadFile | None,
        File(
            description="The demographics sidecar (JSON, docs/devices.md); or send its fields as form fields"
        ),
    ] = None,
    organisation: Annotated[
        str | None,
        Form(
            pattern=r"^[A-Z0-9][A-Z0-9_-]{0,31}$",
            description="Organisation code the image belongs to (default: the caller's; others: admins only)",
        ),
    ] = None,
) -> ImageImportedPublic | JSONResponse:
    owner = await asyncio.to_thread(_organisation, request, principal, organisation, "image")
    image = await _read_one(file, settings.ecg_max_file_bytes, "image")
    given = fields.model_dump(exclude_none=True)
    demographics: tuple[str, bytes] | dict[str, str] = given
    if sidecar is not None:
        if given:
            raise ImageRequestError(
                "the demographics came both as a sidecar file and as form fields "
                f"({', '.join(sorted(given))}): send one or the other"
            )
        demographics = await _read_one(sidecar, MAX_SIDECAR_BYTES, "sidecar")
    try:
        imported = await asyncio.to_thread(
            _import_image, request, principal, store, settings, image, demographics, owner
        )
    except SidecarError as exc:  # problem+json with the list of fields, as for request validation
        errors = [{"field": field, "message": message} for field, message in exc.errors]
        return problem(
            request, exc.http_status, exc.code.replace("-", " "), exc.message, exc.code, errors=errors
        )
    stored = imported.stored
    return ImageImportedPublic(
        sop_instance_uid=stored.sop_instance_uid,
        study_instance_uid=stored.study_instance_uid,
        series_instance_uid=stored.series_instance_uid,
        sop_class_uid=stored.sop_class_uid,
        transfer_syntax_uid=imported.transfer_syntax_uid,
        organisation=owner,
        source_format=imported.source_format.value,
        outcome=stored.outcome.value,
    )
