"""WADO-RS (PS3.18 10.4): instances, metadata, bulk data, frames, rendered images and thumbnails.

Every route is a plain ``def``: FastAPI runs it in its threadpool, and the
streamed bodies (sync generators) are iterated there too, so file reads,
pydicom and Pillow never block the event loop. Files are sent as stored
unless the client asks for another transfer syntax (see
``dicomweb/transcode.py``). A study outside the caller's scope is a 404,
audited as denied.

Files are read through ``store.files`` (``storage/protocol.py``): whole
instances are streamed from it (from S3 object storage too, never loaded
whole); metadata, bulk data, frames and rendering parse a local file
(``local_path``: the file itself, or a cached copy of the object).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian

from teleconsult.api.auditing import audit_request
from teleconsult.api.deps import CallerDep, StoreDep
from teleconsult.api.dicomweb.access import InstancePath, Located, SeriesPath, StudyPath, locate
from teleconsult.api.dicomweb.bulkdata import BulkDataPath, bulk_value, parse_bulk_path
from teleconsult.api.dicomweb.dicomjson import DicomJSONResponse, dataset_to_json
from teleconsult.api.dicomweb.errors import InvalidRequestError, NotAcceptableError
from teleconsult.api.dicomweb.inflation import check_inflated_size
from teleconsult.api.dicomweb.media import (
    DICOM,
    DICOM_JSON,
    EXPLICIT_VR_LITTLE_ENDIAN,
    MULTIPART_RELATED,
    OCTET_STREAM,
    BulkForm,
    negotiate_dicom,
    negotiate_image,
    negotiate_json,
    negotiate_octet_stream,
)
from teleconsult.api.dicomweb.multipart import (
    FILE_BLOCK_SIZE,
    OutgoingPart,
    multipart_length,
    new_boundary,
    read_ahead,
    write_multipart,
)
from teleconsult.api.dicomweb.pixels import FrameSource, FramesPath, parse_frame_list
from teleconsult.api.dicomweb.rendering import THUMBNAIL, RenderOptions, parse_render_options, render_frame
from teleconsult.api.dicomweb.transcode import choose_transfer_syntax, convert_file
from teleconsult.api.dicomweb.uris import PREFIX, DicomwebURLs
from teleconsult.audit import AuditOutcome, Interface
from teleconsult.domain.identity import Principal
from teleconsult.storage.protocol import FileStorage
from teleconsult.storage.store import InstanceStore

__all__ = ["router"]

router = APIRouter(prefix=PREFIX, tags=["DICOMweb WADO-RS"])

_READ = "study.read"
# Values up to this size are read with the header; larger ones stay on disk until asked for.
_DEFER_SIZE = 64 * 1024
# Answers of known length up to this size are read whole before they are sent
# (an ultrasound frame, an SR, an ECG); larger ones are streamed.
_INLINE_BODY_BYTES = 1 << 20
_COMMON: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid UID in the path, or a bad parameter"},
    401: {"description": "No valid bearer token"},
    404: {"description": "Not stored, or outside the caller's organisations (indistinguishable)"},
    406: {"description": "None of the accepted media types or transfer syntaxes can be produced"},
    422: {
        "description": "A deflated data set that inflates past 256 MiB: retrieved only as stored, "
        "never parsed (unprocessable-instance)"
    },
}


def _responses(description: str, *media_types: str) -> dict[int | str, dict[str, Any]]:
    content = {media_type: {"schema": {"type": "string", "format": "binary"}} for media_type in media_types}
    return {200: {"description": description, "content": content}, **_COMMON}


_MULTIPART_DICOM = f'{MULTIPART_RELATED}; type="{DICOM}"'
_MULTIPART_OCTETS = f'{MULTIPART_RELATED}; type="{OCTET_STREAM}"'
_RETRIEVE = {
    "response_class": StreamingResponse,
    "responses": _responses(
        "Part 10 instances, as stored unless another transfer-syntax is asked for", _MULTIPART_DICOM
    ),
}
_METADATA = {
    "response_class": DicomJSONResponse,
    "responses": {
        200: {
            "description": "Every attribute of each instance; large binary values as BulkDataURI",
            "content": {DICOM_JSON: {"schema": {"type": "array", "items": {"type": "object"}}}},
        },
        **_COMMON,
    },
}


def _audit(request: Request, principal: Principal, located: Located, detail: str) -> None:
    audit_request(
        request,
        _READ,
        AuditOutcome.SUCCESS,
        principal=principal,
        interface=Interface.DICOMWEB,
        study_instance_uid=located.study_instance_uid,
        patient_id=located.patient_id,
        detail=detail,
    )


def _multipart_response(parts: list[OutgoingPart], part_type: str) -> Response:
    boundary = new_boundary()
    media_type = f'{MULTIPART_RELATED}; type="{part_type}"; boundary={boundary}'
    length = multipart_length(parts, boundary)
    if length is not None and length <= _INLINE_BODY_BYTES:
        # Read here, on the endpoint's worker thread: streamed, the body would
        # cost a thread hop per piece (part header, file, closing delimiter),
        # more than reading a small instance does.
        return Response(b"".join(write_multipart(parts, boundary)), media_type=media_type)
    headers = {"Content-Length": str(length)} if length is not None else {}
    return StreamingResponse(
        read_ahead(write_multipart(parts, boundary)), media_type=media_type, headers=headers
    )


def _converted(files: FileStorage, key: str, syntax: str) -> Iterator[bytes]:
    yield convert_file(files.local_path(key), syntax)


def _retrieve(
    request: Request,
    principal: Principal,
    store: InstanceStore,
    *,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> Response:
    preferences = negotiate_dicom(request.headers.get("accept"))
    located = locate(request, store, principal, _READ, study=study, series=series, instance=instance)
    urls = DicomwebURLs(request)
    parts = []
    for ref in located.instances:
        syntax = choose_transfer_syntax(ref.transfer_syntax_uid, preferences)
        if syntax is None:
            raise NotAcceptableError(
                f"instance {ref.sop_instance_uid} is stored in {ref.transfer_syntax_uid} and cannot be sent "
                f"in {', '.join(preferences)}; ask for transfer-syntax=* (as stored) or "
                f"{EXPLICIT_VR_LITTLE_ENDIAN}"
            )
        location = urls.instance(ref.study_instance_uid, ref.series_instance_uid, ref.sop_instance_uid)
        content_type = f"{DICOM}; transfer-syntax={syntax}"
        if syntax == ref.transfer_syntax_uid:
            # The stored Part 10 file (File Meta included, as PS3.18 wants) goes out as it is,
            # read in large blocks, never parsed; its size is the one the index recorded.
            body = partial(store.files.iter_chunks, ref.file_key, block_size=FILE_BLOCK_SIZE)
            if not parts:
                # The first file is opened (its GET sent, for S3) before the response starts, so a
                # missing file or unreachable storage is a 404 or 503, not a body cut short.
                body = partial(iter, body())
            parts.append(OutgoingPart(content_type, body, ref.size, location))
        else:
            converted = partial(_converted, store.files, ref.file_key, syntax)
            parts.append(OutgoingPart(content_type, converted, None, location))
    _audit(request, principal, located, f"WADO-RS retrieve of {len(parts)} instance(s)")
    return _multipart_response(parts, DICOM)


@router.get("/studies/{study}", summary="Retrieve a study (multipart Part 10)", **_RETRIEVE)
def retrieve_study(study: StudyPath, request: Request, caller: CallerDep, store: StoreDep) -> Response:
    principal = caller.principal()
    return _retrieve(request, principal, store, study=study)


@router.get("/studies/{study}/series/{series}", summary="Retrieve a series (multipart Part 10)", **_RETRIEVE)
def retrieve_series(
    study: StudyPath, series: SeriesPath, request: Request, caller: CallerDep, store: StoreDep
) -> Response:
    principal = caller.principal()
    return _retrieve(request, principal, store, study=study, series=series)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}",
    summary="Retrieve an instance (multipart Part 10)",
    **_RETRIEVE,
)
def retrieve_instance(
    study: StudyPath,
    series: SeriesPath,
    instance: InstancePath,
    request: Request,
    caller: CallerDep,
    store: StoreDep,
) -> Response:
    principal = caller.principal()
    return _retrieve(request, principal, store, study=study, series=series, instance=instance)


def _read_header(path: Path, transfer_syntax_uid: str) -> Any:
    check_inflated_size(path)
    # A deflated data set is inflated in memory: deferred values could not be re-read by offset.
    defer = None if transfer_syntax_uid == DeflatedExplicitVRLittleEndian else _DEFER_SIZE
    return dcmread(path, defer_size=defer)


def _metadata(
    request: Request,
    principal: Principal,
    store: InstanceStore,
    *,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> DicomJSONResponse:
    negotiate_json(request.headers.get("accept"))
    located = locate(request, store, principal, _READ, study=study, series=series, instance=instance)
    urls = DicomwebURLs(request)
    body = []
    for ref in located.instances:
        ds = _read_header(store.files.local_path(ref.file_key), ref.transfer_syntax_uid)
        bulk = partial(urls.bulkdata, ref.study_instance_uid, ref.series_instance_uid, ref.sop_instance_uid)
        body.append(dataset_to_json(ds, bulk))
    _audit(request, principal, located, f"WADO-RS metadata of {len(body)} instance(s)")
    return DicomJSONResponse(body)


@router.get("/studies/{study}/metadata", summary="Metadata of a study's instances", **_METADATA)
def study_metadata(
    study: StudyPath, request: Request, caller: CallerDep, store: StoreDep
) -> DicomJSONResponse:
    principal = caller.principal()
    return _metadata(request, principal, store, study=study)


@router.get(
    "/studies/{study}/series/{series}/metadata", summary="Metadata of a series' instances", **_METADATA
)
def series_metadata(
    study: StudyPath, series: SeriesPath, request: Request, caller: CallerDep, store: StoreDep
) -> DicomJSONResponse:
    principal = caller.principal()
    return _metadata(request, principal, store, study=study, series=series)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    summary="Metadata of an instance",
    **_METADATA,
)
def instance_metadata(
    study: StudyPath,
    series: SeriesPath,
    instance: InstancePath,
    request: Request,
    caller: CallerDep,
    store: StoreDep,
) -> DicomJSONResponse:
    principal = caller.principal()
    return _metadata(request, principal, store, study=study, series=series, instance=instance)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{path:path}",
    summary="Bulk data of an instance (a BulkDataURI of its metadata)",
    response_class=StreamingResponse,
    responses=_responses("The value's bytes; Pixel Data uncompressed", _MULTIPART_OCTETS, OCTET_STREAM),
)
def retrieve_bulkdata(
    study: StudyPath,
    series: SeriesPath,
    instance: InstancePath,
    path: BulkDataPath,
    request: Request,
    caller: CallerDep,
    store: StoreDep,
) -> Response:
    principal = caller.principal()
    form = negotiate_octet_stream(request.headers.get("accept"), single_allowed=True)
    steps = parse_bulk_path(path)
    located = locate(request, store, principal, _READ, study=study, series=series, instance=instance)
    ref = located.instances[0]
    chunks, length = bulk_value(store.files.local_path(ref.file_key), ref.transfer_syntax_uid, steps)
    _audit(request, principal, located, f"WADO-RS bulk data {path}")
    if form is BulkForm.SINGLE:
        headers = {"Content-Length": str(length)} if length is not None else {}
        return StreamingResponse(chunks, media_type=OCTET_STREAM, headers=headers)
    part = OutgoingPart(
        f"{OCTET_STREAM}; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}", lambda: chunks, length
    )
    return _multipart_response([part], OCTET_STREAM)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
    summary="Frames of an image, uncompressed (1-based frame numbers, comma-separated)",
    response_class=StreamingResponse,
    responses=_responses("One part per frame, Explicit VR Little Endian pixel bytes", _MULTIPART_OCTETS),
)
def retrieve_frames(
    study: StudyPath,
    series: SeriesPath,
    instance: InstancePath,
    frames: FramesPath,
    request: Request,
    caller: CallerDep,
    store: StoreDep,
) -> Response:
    principal = caller.principal()
    negotiate_octet_stream(request.headers.get("accept"), single_allowed=False)
    numbers = parse_frame_list(frames)
    located = locate(request, store, principal, _READ, study=study, series=series, instance=instance)
    ref = located.instances[0]
    source = FrameSource(store.files.local_path(ref.file_key), ref.transfer_syntax_uid)
    source.check(numbers)
    content_type = f"{OCTET_STREAM}; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
    parts = [OutgoingPart(content_type, partial(source.frame, n), source.frame_length()) for n in numbers]
    _audit(request, principal, located, f"WADO-RS frames {frames}")
    return _multipart_response(parts, OCTET_STREAM)


_NUMBER = r"-?[0-9]{1,9}(\.[0-9]{1,6})?"
_WINDOW_PATTERN = (
    rf"^{_NUMBER},([1-9][0-9]{{0,8}}(\.[0-9]{{1,6}})?|0\.[0-9]{{0,5}}[1-9])(,(linear|linear-exact|sigmoid))?$"
)
_VIEWPORT_PATTERN = (
    r"^[1-9][0-9]{0,3},[1-9][0-9]{0,3}(,[0-9]{1,5},[0-9]{1,5},[1-9][0-9]{0,4},[1-9][0-9]{0,4})?$"
)
_RENDERED = {
    "response_class": Response,
    "responses": _responses("The frame rendered for display", "image/jpeg", "image/png"),
    "openapi_extra": {
        "parameters": [
            {
                "name": "window",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "pattern": _WINDOW_PATTERN},
                "description": "center,width[,linear|linear-exact|sigmoid] with width > 0; "
                "default: the data set's window",
            },
            {
                "name": "viewport",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "pattern": _VIEWPORT_PATTERN},
                "description": "vw,vh[,sx,sy,sw,sh]: fit in vw x vh (1-8192, aspect kept), optionally "
                "from a source region",
            },
            {
                "name": "quality",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                "description": "JPEG quality (default 90)",
            },
            {
                "name": "accept",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["image/jpeg", "image/png"]},
                "description": "The media type (default image/jpeg); overrides the Accept header",
            },
        ]
    },
}


def _render_response(
    request: Request,
    principal: Principal,
    store: InstanceStore,
    located: Located,
    defaults: RenderOptions,
    frame_index: int,
    what: str,
) -> Response:
    media_type = negotiate_image(request.headers.get("accept"), request.query_params.get("accept"))
    options = parse_render_options(request.query_params, media_type, defaults=defaults)
    errors: list[NotAcceptableError] = []
    for ref in located.instances:
        try:
            data = render_frame(store.files.local_path(ref.file_key), frame_index, options)
        except NotAcceptableError as exc:
            errors.append(exc)
            continue
        _audit(request, principal, located, f"WADO-RS {what} of {ref.sop_instance_uid}")
        return Response(data, media_type=media_type)
    raise errors[0]


def _one_frame(frames: str, located: Located) -> int:
    numbers = parse_frame_list(frames)
    if len(numbers) != 1:
        raise InvalidRequestError("rendered frames are one frame at a time: ask for frames/{n}/rendered")
    count = located.instances[0].number_of_frames or 1
    if numbers[0] > count:
        raise InvalidRequestError(f"frame {numbers[0]} is out of range: the instance has {count} frame(s)")
    return numbers[0] - 1


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/rendered",
    summary="An instance rendered as JPEG or PNG (its first frame)",
    **_RENDERED,
)
def rendered_instance(
    study: StudyPath,
    series: SeriesPath,
    instance: InstancePath,
    request: Request,
    caller: CallerDep,
    store: StoreDep,
) -> Response:
    principal = caller.principal()
    located = locate(request, store, principal, _READ, study=study, series=series, instance=instance)
    return _render_response(request, principal, store, located, RenderOptions(), 0, "rendered")


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
    summary="A frame rendered as JPEG or PNG",
    **_RENDERED,
)
def rendered_frame(
    study: StudyPath,
    series: SeriesPath,
    instance: InstancePath,
    frames: FramesPath,
    request: Request,
    caller: CallerDep,
    store: StoreDep,
) -> Response:
    principal = caller.principal()
    located = locate(request, store, principal, _READ, study=study, series=series, instance=instance)
    index = _one_frame(frames, located)
    return _render_response(request, principal, store, located, RenderOptions(), index, "rendered frame")


def _thumbnail(
    request: Request,
    principal: Principal,
    store: InstanceStore,
    *,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> Response:
    located = locate(request, store, principal, _READ, study=study, series=series, instance=instance)
    return _render_response(request, principal, store, located, THUMBNAIL, 0, "thumbnail")


_THUMBNAIL = {
    **_RENDERED,
    "responses": _responses("A small JPEG (128 px) of the first image", "image/jpeg", "image/png"),
}


@router.get("/studies/{study}/thumbnail", summary="Thumbnail of a study (its first image)", **_THUMBNAIL)
def study_thumbnail(study: StudyPath, request: Request, caller: CallerDep, store: StoreDep) -> Response:
    principal = caller.principal()
    return _thumbnail(request, principal, store, study=study)


@router.get("/studies/{study}/series/{series}/thumbnail", summary="Thumbnail of a series", **_THUMBNAIL)
def series_thumbnail(
    study: StudyPath, series: SeriesPath, request: Request, caller: CallerDep, store: StoreDep
) -> Response:
    principal = caller.principal()
    return _thumbnail(request, principal, store, study=study, series=series)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/thumbnail",
    summary="Thumbnail of an instance",
    **_THUMBNAIL,
)
def instance_thumbnail(
    study: StudyPath,
    series: SeriesPath,
    instance: InstancePath,
    request: Request,
    caller: CallerDep,
    store: StoreDep,
) -> Response:
    principal = caller.principal()
    return _thumbnail(request, principal, store, study=study, series=series, instance=instance)
