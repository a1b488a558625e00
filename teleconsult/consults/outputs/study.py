"""What the outputs take from the stored study: patient and study attributes, evidence, key images.

The DICOM outputs copy the Patient and General Study modules from an
instance of the study itself (so a PACS files them with the images), list
the study's instances as the evidence the report was made from, and the
PDF shows a few of its images. Reports already in the study (SR documents,
encapsulated documents) are neither evidence nor key images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from teleconsult.domain.studies import InstanceRecord
from teleconsult.storage.store import InstanceStore

__all__ = ["KeyImage", "StudyMaterial", "ThumbnailRenderer", "read_study_material"]

logger = logging.getLogger(__name__)

# Structured reports, key object selections (…88.x) and encapsulated documents (…104.x).
_REPORT_SOP_CLASS_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.104.")
# A study of hundreds of frames is not read whole for a few thumbnails.
_MAX_RENDER_ATTEMPTS = 12

ThumbnailRenderer = Callable[[Path], bytes]  # first frame as a small JPEG; raises if it cannot


@dataclass(frozen=True, slots=True)
class KeyImage:
    record: InstanceRecord
    jpeg: bytes


@dataclass(frozen=True, slots=True)
class StudyMaterial:
    header: Dataset  # the first acquired instance, without pixel data
    evidence: tuple[InstanceRecord, ...]  # the study's instances the report is about
    key_images: tuple[KeyImage, ...]


def _is_report(record: InstanceRecord) -> bool:
    return record.sop_class_uid.startswith(_REPORT_SOP_CLASS_PREFIXES)


def _key_images(
    store: InstanceStore, evidence: Sequence[InstanceRecord], render: ThumbnailRenderer, count: int
) -> tuple[KeyImage, ...]:
    images: list[KeyImage] = []
    for record in evidence[:_MAX_RENDER_ATTEMPTS]:
        if len(images) >= count:
            break
        try:
            images.append(KeyImage(record, render(store.files.local_path(record.file_key))))
        except Exception as exc:  # no pixel data (ECG), or a codec not installed: no thumbnail
            logger.debug("no thumbnail of %s: %s", record.sop_instance_uid, exc)
    return tuple(images)


def read_study_material(
    store: InstanceStore,
    study_instance_uid: str,
    *,
    render: ThumbnailRenderer | None = None,
    key_images: int = 4,
) -> StudyMaterial | None:
    """The study's header, evidence and key images; None if no instance of it is stored."""
    records = store.index.instances_of_study(study_instance_uid)
    evidence = [record for record in records if not _is_report(record)]
    source = evidence[0] if evidence else (records[0] if records else None)
    if source is None:
        return None
    header = dcmread(store.files.local_path(source.file_key), stop_before_pixels=True)
    images = _key_images(store, evidence, render, key_images) if render is not None else ()
    return StudyMaterial(header=header, evidence=tuple(evidence), key_images=images)
