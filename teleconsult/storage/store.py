"""The one write path for DICOM instances: gateway, STOW-RS and adapters use it.

``store_instance`` checks the data set, writes the file durably, commits the
index row and only then publishes ``instance.stored`` and returns: a caller
that gets a result back may acknowledge the instance to its sender.
"""

from __future__ import annotations

import hashlib
import logging
import time

from teleconsult import metrics
from teleconsult.config import Settings
from teleconsult.domain.instances import read_instance_attributes
from teleconsult.domain.studies import StoredInstance, StoreOutcome
from teleconsult.domain.uids import check_uid
from teleconsult.errors import NotFoundError, TeleconsultError
from teleconsult.events import Event, EventBus, EventType
from teleconsult.storage.files import content_key
from teleconsult.storage.index import Index, IndexedFile
from teleconsult.storage.migrate import upgrade
from teleconsult.storage.outbox import Outbox
from teleconsult.storage.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, file_meta
from teleconsult.storage.protocol import FileStorage, create_file_storage

__all__ = ["IMPLEMENTATION_CLASS_UID", "IMPLEMENTATION_VERSION_NAME", "InstanceStore"]

logger = logging.getLogger(__name__)


class InstanceStore:
    def __init__(self, settings: Settings, bus: EventBus | None = None) -> None:
        self.settings = settings
        self.bus = bus or EventBus()
        # Events of other replicas (TELECONSULT_BROKER_URL): only notifications and ECG triage listen.
        self.remote_bus = EventBus()
        # Local files under <data_dir>/dicom, or objects in S3 (TELECONSULT_STORAGE_URL).
        self.files: FileStorage = create_file_storage(settings)
        self.index = Index(settings.index_url)
        # The forwarding queue: filled by the index transaction, worked by dicom_gateway.forwarder.
        self.outbox = Outbox(self.index, settings)

    def open(self, *, joining: bool = False, sweep: bool = True) -> None:
        """Create directories, sweep unfinished temp files, migrate the index.

        ``joining``: another process of this installation opened the store
        first and may be writing: neither sweep its temporary files nor migrate.
        ``sweep=False``: migrate if need be, but leave temporary files alone (a
        command run beside a serve that may be writing them).
        """
        self.files.open(sweep=sweep and not joining)
        if self.settings.database_auto_migrate and not joining:
            upgrade(self.index.engine)

    def close(self) -> None:
        self.index.close()
        self.files.close()

    def store_instance(
        self,
        data_set: bytes,
        transfer_syntax_uid: str,
        *,
        calling_ae_title: str,
        source_organisation: str,
        expected_sop_class_uid: str | None = None,
        expected_sop_instance_uid: str | None = None,
    ) -> StoredInstance:
        """Store one encoded data set (without File Meta) durably.

        Raises
        ------
        InvalidInstanceError, InvalidUIDError, SOPClassMismatchError
            The data set cannot be stored as sent; nothing was written.
        StorageFullError, StorageUnavailableError, IndexUnavailableError
            A resource failed; nothing was indexed, a retry may succeed.
        """
        started = time.perf_counter()
        try:
            stored = self._store_instance(
                data_set,
                transfer_syntax_uid,
                calling_ae_title=calling_ae_title,
                source_organisation=source_organisation,
                expected_sop_class_uid=expected_sop_class_uid,
                expected_sop_instance_uid=expected_sop_instance_uid,
            )
        except TeleconsultError as exc:
            metrics.STORE_REFUSED.labels(exc.code).inc()
            raise
        metrics.STORE_SECONDS.observe(time.perf_counter() - started)
        metrics.INSTANCES_STORED.labels(stored.outcome.value).inc()
        if stored.outcome is not StoreOutcome.DUPLICATE:
            metrics.BYTES_STORED.inc(stored.size)
        return stored

    def _store_instance(
        self,
        data_set: bytes,
        transfer_syntax_uid: str,
        *,
        calling_ae_title: str,
        source_organisation: str,
        expected_sop_class_uid: str | None,
        expected_sop_instance_uid: str | None,
    ) -> StoredInstance:
        transfer_syntax_uid = check_uid(transfer_syntax_uid, "Transfer Syntax UID")
        attrs = read_instance_attributes(
            data_set,
            transfer_syntax_uid,
            expected_sop_class_uid=expected_sop_class_uid,
            expected_sop_instance_uid=expected_sop_instance_uid,
        )
        sha256 = hashlib.sha256(data_set).hexdigest()
        key = content_key(sha256)
        meta = file_meta(attrs.sop_class_uid, attrs.sop_instance_uid, attrs.transfer_syntax_uid)
        size = self.files.write(key, (meta, data_set))
        result = self.index.put_instance(
            attrs,
            IndexedFile(
                sha256=sha256,
                file_key=key,
                size=size,
                calling_ae_title=calling_ae_title.strip()[:16],
                source_organisation=source_organisation,
            ),
            on_indexed=self.outbox.enqueue,
        )
        stored = StoredInstance(
            sop_instance_uid=attrs.sop_instance_uid,
            sop_class_uid=attrs.sop_class_uid,
            study_instance_uid=attrs.study_instance_uid,
            series_instance_uid=attrs.series_instance_uid,
            sha256=sha256,
            size=size,
            version=result.version,
            outcome=result.outcome,
            source_organisation=source_organisation,
        )
        if result.outcome is not StoreOutcome.DUPLICATE:
            self.bus.publish(
                Event(
                    type=EventType.INSTANCE_STORED,
                    data={
                        "study_instance_uid": stored.study_instance_uid,
                        "series_instance_uid": stored.series_instance_uid,
                        "sop_instance_uid": stored.sop_instance_uid,
                        "sop_class_uid": stored.sop_class_uid,
                        "version": stored.version,
                        "source_organisation": source_organisation,
                        "calling_ae_title": calling_ae_title.strip(),
                    },
                )
            )
        return stored

    def read_instance(self, sop_instance_uid: str) -> bytes:
        """The current Part 10 file of an instance."""
        record = self.index.instance(sop_instance_uid)
        if record is None:
            raise NotFoundError(f"SOP instance {sop_instance_uid} is not stored")
        return self.files.read(record.file_key)
