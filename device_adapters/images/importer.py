"""From an image export and its sidecar to a stored DICOM instance, through the store API.

``ImageImporter.import_export`` validates the sidecar, reads the image,
builds the Secondary Capture and hands it to ``InstanceStore.store_instance``
(which indexes it, publishes ``instance.stored`` and queues its forwarding),
recorded as sent by this installation's own AE title on behalf of the
organisation. The drop folder and the upload endpoint share it, so both
accept and refuse the same exports.

A sidecar naming a study that is already stored adds the image to it only
if that study is the same organisation's and the same patient ID's; the
image then takes the study's date, time, accession number and description
from the index, so the study's attributes stay one.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from pydantic import ValidationError
from pydicom.uid import UID

from device_adapters.images.errors import ImageImportError, ImageTooLargeError
from device_adapters.images.formats import ImageFormat
from device_adapters.images.reader import read_image
from device_adapters.images.sidecar import ImageSidecar, read_sidecar
from device_adapters.images.to_dicom import build_secondary_capture, encode
from device_adapters.images.uids import derive_uids
from teleconsult import __version__
from teleconsult.config import Settings
from teleconsult.domain.studies import StoredInstance, StudyQuery, StudyRecord
from teleconsult.storage.store import InstanceStore

__all__ = ["ImageImporter", "ImportedImage"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ImportedImage:
    stored: StoredInstance
    source_format: ImageFormat
    patient_id: str
    transfer_syntax_uid: str


def _with_study(sidecar: ImageSidecar, study: StudyRecord) -> ImageSidecar:
    """The sidecar with the stored study's own study-level attributes, where the index has them."""
    values = sidecar.model_dump(exclude_none=True)
    for field, value in (
        ("accession_number", study.accession_number),
        ("study_description", study.study_description),
        ("study_date", study.study_date),
        ("study_time", study.study_time.split(".")[0]),
    ):
        if value:
            values[field] = value
    try:
        return ImageSidecar.model_validate(values)
    except ValidationError:  # a stored value the sidecar would not take (no date): keep the sidecar's
        return sidecar


class ImageImporter:
    def __init__(self, settings: Settings, store: InstanceStore) -> None:
        self.settings = settings
        self.store = store

    def check_size(self, size: int) -> None:
        limit = self.settings.ecg_max_file_bytes
        if size > limit:
            raise ImageTooLargeError(
                f"the image export of {size} bytes is larger than the limit of {limit} bytes "
                "(TELECONSULT_ECG_MAX_FILE_BYTES, which the drop folder and device uploads share)"
            )

    def _in_study(self, sidecar: ImageSidecar, organisation: str) -> ImageSidecar:
        uid = sidecar.study_instance_uid
        if uid is None:
            return sidecar
        found = self.store.index.find_studies(StudyQuery(study_instance_uids=(uid,), limit=1))
        if not found:
            return sidecar  # a study not stored yet (e.g. from the worklist): the image starts it
        study = found[0]
        if study.source_organisation != organisation or study.patient_id != sidecar.patient_id:
            raise ImageImportError(
                f"the sidecar names study {uid}, which is stored, but not as a study of {organisation} "
                "for the sidecar's patient ID: correct study_instance_uid (or patient_id), or leave "
                "study_instance_uid out"
            )
        return _with_study(sidecar, study)

    def import_export(
        self,
        image_name: str,
        image: bytes,
        sidecar: bytes | ImageSidecar,
        *,
        organisation: str,
        sidecar_name: str = "",
    ) -> ImportedImage:
        """Store the export ``image`` (its file name, its bytes) with ``sidecar`` as ``organisation``'s.

        ``sidecar`` is the sidecar file's bytes (``sidecar_name`` names it in errors), or already
        validated (the upload's form fields).

        Raises
        ------
        ImageImportError, ImageTooLargeError
            The export cannot become a DICOM image; nothing was stored.
        InvalidInstanceError
            The built instance was refused by the store; nothing was stored.
        StorageFullError, IndexUnavailableError
            A resource failed; a retry may succeed.
        """
        raw_sidecar = sidecar if isinstance(sidecar, bytes) else b""
        self.check_size(len(image) + len(raw_sidecar))
        demographics = sidecar if isinstance(sidecar, ImageSidecar) else read_sidecar(sidecar, sidecar_name)
        exported = read_image(image_name, image)
        demographics = self._in_study(demographics, organisation)
        uids = derive_uids(
            demographics,
            organisation=organisation,
            image_sha256=hashlib.sha256(image).hexdigest(),
            uid_root=self.settings.uid_root,
        )
        data_set = build_secondary_capture(exported, demographics, uids, software_versions=__version__)
        transfer_syntax = UID(data_set.file_meta.TransferSyntaxUID)
        stored = self.store.store_instance(
            encode(data_set),
            transfer_syntax,
            calling_ae_title=self.settings.ae_title,
            source_organisation=organisation,
        )
        logger.info(
            "imported an image export (%s) as %s (%s) for %s: %s %s",
            exported.how,
            stored.sop_instance_uid,
            stored.outcome.value,
            organisation,
            demographics.modality.value,
            transfer_syntax.name,
        )
        return ImportedImage(stored, exported.source_format, demographics.patient_id, str(transfer_syntax))
