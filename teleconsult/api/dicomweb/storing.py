"""One STOW-RS part into the store: the same write path, checks and atomicity as a C-STORE.

Each part is a Part 10 file. Its File Meta gives the transfer syntax and
the SOP class and instance it claims; the data set after it goes to
``InstanceStore.store_instance`` untouched, which writes it completely or
not at all. A part that cannot be stored becomes a failure with the DIMSE
status the gateway would answer (``TeleconsultError.dimse_status``), so a
device gets the same reasons over DICOM and over HTTP.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from teleconsult.api.dicomweb.media import DICOM, parse_content_type
from teleconsult.api.dicomweb.multipart import ReceivedPart
from teleconsult.api.dicomweb.part10 import split_part10
from teleconsult.domain.instances import read_instance_attributes
from teleconsult.domain.studies import StoredInstance
from teleconsult.errors import OutOfResourcesError, TeleconsultError
from teleconsult.storage.store import InstanceStore

__all__ = [
    "CANNOT_UNDERSTAND",
    "PROCESSING_FAILURE",
    "STUDY_MISMATCH",
    "PartResult",
    "store_part",
]

logger = logging.getLogger(__name__)

CANNOT_UNDERSTAND = 0xC000
# dcm4chee's "Different Study Instance UID" (its STOW-RS conformance statement);
# PS3.18 names no code for a part outside the study of the request URL.
STUDY_MISMATCH = 0xC409
PROCESSING_FAILURE = 0x0110


@dataclass(frozen=True, slots=True)
class PartResult:
    """What became of one part: stored (``stored`` set) or failed (``failure_reason`` set)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str | None = None
    patient_id: str | None = None
    stored: StoredInstance | None = None
    failure_reason: int | None = None
    message: str = ""


def store_part(
    part: ReceivedPart, store: InstanceStore, *, organisation: str, study: str | None
) -> PartResult:
    """Store one part as ``organisation``'s; never raises for a bad part.

    Raises ``OutOfResourcesError`` when the disk is full (507), or the index
    or the object storage cannot take it (503): no later part could be stored
    either, so the request fails as a whole.
    """
    content_type = parse_content_type(part.headers.get("content-type"))
    if content_type is not None and content_type.type != DICOM:
        return PartResult(
            "",
            "",
            failure_reason=CANNOT_UNDERSTAND,
            message=f"part of type {content_type.type} is not {DICOM}",
        )
    sop_class_uid = sop_instance_uid = ""
    attrs = None
    try:
        meta, data_set = split_part10(part.read())
        sop_class_uid, sop_instance_uid = meta.sop_class_uid, meta.sop_instance_uid
        attrs = read_instance_attributes(
            data_set,
            meta.transfer_syntax_uid,
            expected_sop_class_uid=meta.sop_class_uid or None,
            expected_sop_instance_uid=meta.sop_instance_uid or None,
        )
        sop_class_uid, sop_instance_uid = attrs.sop_class_uid, attrs.sop_instance_uid
        if study is not None and attrs.study_instance_uid != study:
            return PartResult(
                sop_class_uid,
                sop_instance_uid,
                attrs.study_instance_uid,
                attrs.patient_id,
                failure_reason=STUDY_MISMATCH,
                message=f"instance belongs to study {attrs.study_instance_uid}, not {study}",
            )
        stored = store.store_instance(
            data_set,
            meta.transfer_syntax_uid,
            calling_ae_title="",
            source_organisation=organisation,
            expected_sop_class_uid=meta.sop_class_uid or None,
            expected_sop_instance_uid=meta.sop_instance_uid or None,
        )
    except OutOfResourcesError:
        raise
    except TeleconsultError as exc:
        return PartResult(
            sop_class_uid,
            sop_instance_uid,
            attrs.study_instance_uid if attrs else None,
            attrs.patient_id if attrs else None,
            failure_reason=exc.dimse_status,
            message=exc.message,
        )
    except Exception:
        # One broken part must not hide what happened to the others.
        logger.exception("STOW-RS part %s could not be processed", sop_instance_uid or "(unknown)")
        return PartResult(
            sop_class_uid, sop_instance_uid, failure_reason=PROCESSING_FAILURE, message="processing failure"
        )
    return PartResult(
        stored.sop_class_uid,
        stored.sop_instance_uid,
        stored.study_instance_uid,
        attrs.patient_id if attrs is not None else None,
        stored=stored,
    )
