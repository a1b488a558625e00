"""Clips off the capture card, stored in a study over DICOMweb: ``python -m device_adapters.video clip``.

The township PC records a few seconds straight from the ultrasound
machine's video output (``CaptureSource``: no WebRTC in between, so the only
loss is the JPEG of each frame), makes them an **Ultrasound Multi-frame
Image** (or, on request or for a study that is not ultrasound, a
Multi-frame True Color Secondary Capture) with the one builder
(``to_dicom.build_video_clip``), and sends it to teleconsult like any
DICOMweb client:

1. ``POST /api/auth/token`` (the same account as the live sender);
2. with ``--consult``, ``GET /api/consults/{id}`` for the consult's study;
3. ``GET /dicomweb/studies/{study}/metadata``: the patient and study
   attributes the clip copies, so it joins the study (an instance of the
   study's ultrasound series if there is one);
4. ``POST /dicomweb/studies/{study}`` (STOW-RS, ``multipart/related;
   type="application/dicom"``), one Part 10 file.

Like ``sender.py`` it needs no HTTP client package: ``urllib`` in a worker
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc.mediastreams import MediaStreamTrack
from pydicom import dcmwrite
from pydicom.dataset import Dataset

from device_adapters.video.clip import collect_clip
from device_adapters.video.sender import LiveServer
from device_adapters.video.to_dicom import CLIP_SERIES_NUMBER, ClipKind, build_video_clip
from teleconsult import __version__
from teleconsult.domain.uids import generate_uid

__all__ = ["MANUFACTURER", "StoredClip", "StowError", "record_clip", "store_dataset", "study_header"]

logger = logging.getLogger(__name__)

MANUFACTURER = "teleconsult video adapter"
_DICOM_JSON = "application/dicom+json"
_FAILED_SOP_SEQUENCE = "00081198"
_FAILURE_REASON = "00081197"


class StowError(RuntimeError):
    """The server did not store the clip (or the study cannot be read)."""


@dataclass(frozen=True, slots=True)
class StoredClip:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    frames: int
    frame_time_ms: float


def _call(
    server: LiveServer,
    method: str,
    path: str,
    token: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str],
) -> tuple[int, bytes]:
    request = urllib.request.Request(  # noqa: S310 - the URL is the configured server's
        server.base_url.rstrip("/") + path, data=body, method=method, headers=headers
    )
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=server.timeout) as response:  # noqa: S310
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:2000].decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError):  # a problem+json body, or not
            detail = str(json.loads(detail).get("detail", detail))
        raise StowError(f"{method} {path} answered HTTP {exc.code}: {detail}") from None


def consult_study(server: LiveServer, token: str, consult_id: str) -> str:
    """The Study Instance UID of a consult."""
    accept = {"Accept": "application/json"}
    _, body = _call(server, "GET", f"/api/consults/{consult_id}", token, headers=accept)
    study = json.loads(body).get("study_instance_uid")
    if not study:
        raise StowError(f"consult {consult_id} has no study; a clip is stored in the consult's study")
    return str(study)


def _without_bulk_data(value: Any) -> Any:
    """A DICOM JSON object without values held elsewhere (pixel data): only attributes are copied."""
    if isinstance(value, list):
        return [_without_bulk_data(item) for item in value]
    if not isinstance(value, dict):
        return value
    kept = {}
    for tag, element in value.items():
        if not isinstance(element, dict) or "BulkDataURI" in element or "InlineBinary" in element:
            continue
        if element.get("vr") == "SQ" and "Value" in element:
            element = {**element, "Value": _without_bulk_data(element["Value"])}
        kept[tag] = element
    return kept


def study_header(server: LiveServer, token: str, study_instance_uid: str) -> Dataset:
    """An instance's attributes of the study (WADO-RS metadata), an ultrasound one if there is one."""
    _, body = _call(
        server,
        "GET",
        f"/dicomweb/studies/{study_instance_uid}/metadata",
        token,
        headers={"Accept": _DICOM_JSON},
    )
    instances = json.loads(body) if body else []
    if not instances:
        raise StowError(f"study {study_instance_uid} has no instance to copy the patient and study from")
    modality = "00080060"
    ultrasound = [i for i in instances if i.get(modality, {}).get("Value") == ["US"]]
    return Dataset.from_json(_without_bulk_data((ultrasound or instances)[0]))


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def store_dataset(server: LiveServer, token: str, ds: Dataset) -> None:
    """STOW-RS of one data set into its study; ``StowError`` unless the server stored it."""
    boundary = f"teleconsult-{uuid.uuid4().hex}"
    body = b"".join(
        [
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
            _part10(ds),
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    status, answer = _call(
        server,
        "POST",
        f"/dicomweb/studies/{ds.StudyInstanceUID}",
        token,
        body=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": _DICOM_JSON,
        },
    )
    response = json.loads(answer) if answer else {}
    failed = response.get(_FAILED_SOP_SEQUENCE, {}).get("Value") or []
    if status != 200 or failed:
        reasons = [str(item.get(_FAILURE_REASON, {}).get("Value", ["?"])[0]) for item in failed]
        raise StowError(f"STOW-RS answered {status}; failure reasons: {', '.join(reasons) or 'none given'}")


def _kind(kind: ClipKind | str | None, header: Dataset) -> ClipKind:
    """The IOD: as asked, else Ultrasound for an ultrasound study, else Secondary Capture."""
    if kind is not None and str(kind) != "auto":
        return ClipKind(kind)
    return ClipKind.ULTRASOUND if str(header.get("Modality", "")) == "US" else ClipKind.SECONDARY_CAPTURE


async def record_clip(
    server: LiveServer,
    video: Callable[[], MediaStreamTrack],
    *,
    seconds: float,
    study_instance_uid: str | None = None,
    consult_id: str | None = None,
    kind: ClipKind | str | None = None,
    series_description: str = "Capture card clip",
) -> StoredClip:
    """Record the next ``seconds`` of ``video()`` and store them in the study (or the consult's study)."""
    if (study_instance_uid is None) == (consult_id is None):
        raise ValueError("give exactly one of study_instance_uid and consult_id")
    token = await server.token()
    if consult_id is not None:
        study_instance_uid = await asyncio.to_thread(consult_study, server, token, consult_id)
    assert study_instance_uid is not None
    header = await asyncio.to_thread(study_header, server, token, study_instance_uid)
    chosen = _kind(kind, header)
    track = video()
    try:
        clip = await collect_clip(track, seconds)
    finally:
        track.stop()
    ds = build_video_clip(
        header,
        clip.frames,
        frame_time_ms=clip.frame_time_ms,
        kind=chosen,
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        instance_number=1,
        captured_at=clip.started_at,
        manufacturer=MANUFACTURER,
        software_versions=__version__,
        series_number=CLIP_SERIES_NUMBER,
        series_description=series_description,
        operator=server.username,
        crossed_network=False,
    )
    await asyncio.to_thread(store_dataset, server, token, ds)
    logger.info(
        "clip of %d frames (%.1f s) stored as %s in study %s",
        len(clip.frames),
        clip.duration,
        ds.SOPInstanceUID,
        study_instance_uid,
    )
    return StoredClip(
        study_instance_uid=study_instance_uid,
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        frames=len(clip.frames),
        frame_time_ms=clip.frame_time_ms,
    )
