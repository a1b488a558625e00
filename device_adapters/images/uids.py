"""The UIDs of an imported export, derived so that one exam's images meet in one study.

An export carries no UIDs, and each of an exam's images comes as its own
file (often at different times, by different routes), so they are derived
from what the sidecars of one exam share (UUID version 5, in the ``2.25``
form or under ``TELECONSULT_UID_ROOT``):

- **Study**: the sidecar's ``study_instance_uid`` if it names one; else the
  organisation, patient ID and accession number; without an accession
  number, the organisation, patient ID, modality, study date and study time.
  The organisation is part of the key because patient IDs and accession
  numbers are each organisation's own.
- **Series**: the study, modality, body part, laterality, series number and
  series description (the General Series attributes the sidecar sets).
- **Instance**: the series and the image file's SHA-256, so the same file
  imported again is the same instance (a duplicate), and the same file with a
  corrected name is a new version of it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from device_adapters.images.sidecar import ImageSidecar

__all__ = ["ExportUids", "derive_uids"]

_NAMESPACE = uuid.UUID("0b8c5c62-2f4e-5d7e-8f0a-6c1b9a3e4d27")


@dataclass(frozen=True, slots=True)
class ExportUids:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str


def _uid(key: str, root: str | None) -> str:
    number = uuid.uuid5(_NAMESPACE, key).int
    return f"2.25.{number}" if root is None else f"{root}.{number}"[:64].rstrip(".")


def derive_uids(
    sidecar: ImageSidecar, *, organisation: str, image_sha256: str, uid_root: str | None
) -> ExportUids:
    patient = f"{organisation}/{sidecar.patient_id}"
    if sidecar.study_instance_uid:
        study = sidecar.study_instance_uid
    elif sidecar.accession_number:
        study = _uid(f"study/{patient}/accession/{sidecar.accession_number}", uid_root)
    else:
        when = sidecar.study_date.isoformat()
        if sidecar.study_time:
            when += f"T{sidecar.study_time.isoformat()}"
        study = _uid(f"study/{patient}/{sidecar.modality.value}/{when}", uid_root)
    laterality = sidecar.laterality.value if sidecar.laterality else ""
    series = _uid(
        f"series/{study}/{sidecar.modality.value}/{sidecar.body_part}/{laterality}/"
        f"{sidecar.series_number}/{sidecar.series_description}",
        uid_root,
    )
    instance = _uid(f"instance/{series}/{image_sha256}", uid_root)
    return ExportUids(study, series, instance)
