"""Snapshots: the sender's latest frame stored as DICOM in the consult's study.

``store_snapshot`` is synchronous and slow (colour conversion, building the
data set, hashing and writing it, an index transaction): callers run it in
a worker thread. It stores through ``InstanceStore.store_instance`` as if
the study's own organisation had sent it, like the report outputs
(``teleconsult.consults.outputs.producer``), so the index, ``instance.stored``
notifications and forwarding rules apply to it as to any image.

Each session's captures are one series, whose UID is derived from the
session id (UUID version 5, in the ``2.25`` form or under
``TELECONSULT_UID_ROOT``); each capture is a new instance in it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from av import VideoFrame
from pydicom.uid import ExplicitVRLittleEndian

from device_adapters.video.to_dicom import build_video_capture
from teleconsult import __version__
from teleconsult.consults.outputs.dicom import encode_data_set
from teleconsult.consults.outputs.study import read_study_material
from teleconsult.domain.uids import generate_uid
from teleconsult.errors import ConflictError
from teleconsult.storage.store import InstanceStore

__all__ = ["Snapshot", "SnapshotTarget", "series_uid", "store_snapshot"]

MANUFACTURER = "teleconsult"


@dataclass(frozen=True, slots=True)
class SnapshotTarget:
    """Where a capture goes and who asked for it."""

    session_id: str
    consult_id: str
    study_instance_uid: str | None
    source_organisation: str
    instance_number: int
    operator: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    rows: int
    columns: int


def series_uid(session_id: str, root: str | None) -> str:
    """The UID of a session's capture series (the same for every capture of the session)."""
    number = uuid.uuid5(uuid.UUID(session_id), "live-capture-series").int
    return f"2.25.{number}" if root is None else f"{root}.{number}"[:64].rstrip(".")


def store_snapshot(
    store: InstanceStore, frame: VideoFrame, target: SnapshotTarget, *, calling_ae_title: str
) -> Snapshot:
    """Build and store the capture of ``frame``; ``ConflictError`` (409) if the study is not stored."""
    if target.study_instance_uid is None:
        raise ConflictError(
            f"consult {target.consult_id} has no study yet; a capture is stored in the consult's study, "
            "so link the study to the consult first"
        )
    material = read_study_material(store, target.study_instance_uid)
    if material is None:
        raise ConflictError(
            f"no instance of study {target.study_instance_uid} is stored; a capture copies the study's "
            "patient and study attributes from one"
        )
    captured_at = datetime.now(UTC)
    root = store.settings.uid_root
    ds = build_video_capture(
        material.header,
        frame.to_ndarray(format="rgb24"),
        series_instance_uid=series_uid(target.session_id, root),
        sop_instance_uid=generate_uid(root),
        instance_number=target.instance_number,
        captured_at=captured_at,
        manufacturer=MANUFACTURER,
        software_versions=__version__,
        operator=target.operator,
    )
    store.store_instance(
        encode_data_set(ds),
        ExplicitVRLittleEndian,
        calling_ae_title=calling_ae_title,
        source_organisation=target.source_organisation,
    )
    return Snapshot(
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
    )
