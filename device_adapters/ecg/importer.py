"""From ECG files to a stored DICOM instance, through the store API like every other way in.

``EcgImporter.import_files`` reads the files, builds the DICOM waveform and
hands it to ``InstanceStore.store_instance`` (which indexes it, publishes
``instance.stored`` and queues its forwarding), recorded as sent by this
installation's own AE title on behalf of the organisation. The drop folder
and the upload endpoint share it, so both accept and refuse the same files.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from device_adapters.ecg.errors import EcgTooLargeError
from device_adapters.ecg.formats import read_ecg
from device_adapters.ecg.record import EcgFormat
from device_adapters.ecg.to_dicom import TRANSFER_SYNTAX_UID, build_ecg_waveform, encode
from teleconsult.config import Settings
from teleconsult.domain.studies import StoredInstance
from teleconsult.storage.store import InstanceStore

__all__ = ["EcgImporter", "ImportedEcg"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ImportedEcg:
    stored: StoredInstance
    source_format: EcgFormat
    patient_id: str


def source_sha256(files: Mapping[str, bytes]) -> str:
    """One digest of the files, whatever order they came in."""
    digest = hashlib.sha256()
    for name in sorted(files):
        content = files[name]
        digest.update(hashlib.sha256(content).digest())
    return digest.hexdigest()


class EcgImporter:
    def __init__(self, settings: Settings, store: InstanceStore) -> None:
        self.settings = settings
        self.store = store

    def check_size(self, size: int) -> None:
        if size > self.settings.ecg_max_file_bytes:
            raise EcgTooLargeError(
                f"the ECG of {size} bytes is larger than the limit of {self.settings.ecg_max_file_bytes} "
                "bytes (TELECONSULT_ECG_MAX_FILE_BYTES)"
            )

    def import_files(self, files: Mapping[str, bytes], *, organisation: str) -> ImportedEcg:
        """Store the ECG in ``files`` (name -> content) as ``organisation``'s.

        Raises
        ------
        EcgImportError, EcgTooLargeError
            The files cannot become an ECG; nothing was stored.
        InvalidInstanceError
            The built instance was refused by the store; nothing was stored.
        StorageFullError, IndexUnavailableError
            A resource failed; a retry may succeed.
        """
        self.check_size(sum(len(content) for content in files.values()))
        record = read_ecg(files, scp_text_encoding=self.settings.ecg_scp_text_encoding)
        data_set = build_ecg_waveform(
            record,
            source_sha256=source_sha256(files),
            organisation=organisation,
            uid_root=self.settings.uid_root,
            imported_at=datetime.now().astimezone(),
        )
        stored = self.store.store_instance(
            encode(data_set),
            TRANSFER_SYNTAX_UID,
            calling_ae_title=self.settings.ae_title,
            source_organisation=organisation,
        )
        logger.info(
            "imported a %s file as %s (%s) for %s: %s",
            record.source_format.label,
            stored.sop_instance_uid,
            stored.outcome.value,
            organisation,
            data_set.SeriesDescription,
        )
        return ImportedEcg(stored, record.source_format, record.patient.patient_id)
