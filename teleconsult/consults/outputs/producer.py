"""Making the outputs of signed reports, off the signing request's thread, once per signed version.

``report.signed`` (the reviewing signature, or a signed addendum) reaches
``handle_signed`` in the publisher's thread, the signing request's: it only
writes the request row (``ReportOutputStore.request``) and wakes the
worker. The worker thread claims due rows and, for each, makes:

1. the PDF (``pdf.py``), kept in the row;
2. where the consult has a study, a DICOM Enhanced SR (``sr.py``) and an
   Encapsulated PDF (``encapsulated.py``), each a new series of that study,
   stored through ``InstanceStore.store_instance`` like a C-STORE from the
   study's own organisation, so the index, ``instance.stored`` and the
   forwarding rules (``source-pacs``: back to the township's PACS) apply.

A failed attempt is logged, recorded on the row (``failed``, ``last_error``)
and retried after a back-off that doubles up to an hour; a row claimed by a
worker that died is taken over after ``stale_after``. Signed versions whose
request row is missing (the process died between signing and asking) are
found again by ``reconcile``, run when the worker starts and every few
minutes. UIDs and bytes depend on the signed version only, so a retry
stores duplicates rather than second copies.

The FHIR DiagnosticReport is not stored: ``diagnostic_report`` builds it on
request from the report and the PDF of its newest version.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from pydicom.dataset import Dataset
from pydicom.uid import EnhancedSRStorage, ExplicitVRLittleEndian

from teleconsult.config import Settings
from teleconsult.consults.outputs.dicom import encode_data_set, output_uids
from teleconsult.consults.outputs.document import ReportDocument, collect_document
from teleconsult.consults.outputs.encapsulated import build_encapsulated_pdf
from teleconsult.consults.outputs.fhir import patient_resource_id
from teleconsult.consults.outputs.fonts import ReportFont, load_report_font
from teleconsult.consults.outputs.pdf import build_report_pdf
from teleconsult.consults.outputs.sr import build_report_sr
from teleconsult.consults.outputs.study import StudyMaterial, ThumbnailRenderer, read_study_material
from teleconsult.consults.reporting import ReportService
from teleconsult.domain.reports import SignatureRole
from teleconsult.errors import NotFoundError
from teleconsult.events import Event, EventBus, EventType
from teleconsult.storage.outbox import backoff_seconds
from teleconsult.storage.report_outputs import MadeOutputs, OutputRecord, ReportOutputStore
from teleconsult.storage.store import InstanceStore

__all__ = ["ReportOutputs"]

logger = logging.getLogger(__name__)


class ReportOutputs:
    """The output stage of signed reports: requests, the worker thread, and what was made."""

    def __init__(
        self,
        reports: ReportService,
        store: InstanceStore,
        settings: Settings,
        *,
        render: ThumbnailRenderer | None = None,
        poll_seconds: float = 10.0,
        retry_base_seconds: float = 30.0,
        max_retry_seconds: float = 3600.0,
        stale_after: timedelta = timedelta(minutes=10),
        reconcile_seconds: float = 300.0,
    ) -> None:
        self.reports = reports
        self.store = store
        self.settings = settings
        self.records = ReportOutputStore(store.index.engine)
        self.render = render
        self.poll_seconds = poll_seconds
        self.retry_base_seconds = retry_base_seconds
        self.max_retry_seconds = max_retry_seconds
        self.stale_after = stale_after
        self.reconcile_seconds = reconcile_seconds
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"[:128]
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._cond = threading.Condition()
        self._asked = 0  # wake-ups asked for
        self._idle_through = 0  # the newest wake-up a pass that found nothing due started after

    def now(self) -> datetime:
        """The consult service's clock: signing times and attempts share one time line."""
        return self.reports.consults.now()

    # -- requests --------------------------------------------------------------

    def subscribe(self, bus: EventBus) -> Callable[[], None]:
        return bus.subscribe(self.handle_signed, EventType.REPORT_SIGNED)

    def handle_signed(self, event: Event) -> None:
        """The ``report.signed`` subscriber: ask for the outputs of the signed version, wake the worker."""
        self.request(str(event.data["consult_id"]), int(event.data["version"]), str(event.data["kind"]))

    def request(self, consult_id: str, version: int, kind: str) -> bool:
        consult = self.reports.consults.store.get(consult_id)
        if consult is None:
            logger.warning("outputs asked for consult %s, which does not exist", consult_id)
            return False
        key = patient_resource_id(consult.patient_id, consult.issuer_of_patient_id)
        added = self.records.request(consult_id, version, kind, key, self.now())
        if added:
            logger.info("outputs of version %d of the report of consult %s requested", version, consult_id)
            self.wake()
        return added

    def reconcile(self) -> int:
        """Ask for the outputs of signed versions that have no request row; returns how many."""
        found = 0
        for signed in self.records.unrequested():
            if self.request(signed.consult_id, signed.version, signed.kind):
                found += 1
        if found:
            logger.warning("%d signed report versions had no output request; requested now", found)
        return found

    # -- reading -----------------------------------------------------------------

    def of_consult(self, consult_id: str) -> list[OutputRecord]:
        return self.records.of_consult(consult_id)

    def pdf(self, consult_id: str, version: int) -> bytes | None:
        return self.records.pdf(consult_id, version)

    def consults_of_patient(self, patient_key: str) -> list[str]:
        """Consults with signed reports of the patient whose FHIR id is ``patient_key``, newest first."""
        return self.records.consults_of_patient(patient_key)

    # -- making ------------------------------------------------------------------

    def run_due(self, now: datetime | None = None) -> int:
        """Make the outputs of every due row (one claim of up to ten rows); returns how many were tried."""
        now = now or self.now()
        if not self.records.any_due(now, self.stale_after):
            return 0
        claimed = self.records.claim(self.worker, now, stale_after=self.stale_after)
        for record in claimed:
            self._attempt(record)
        return len(claimed)

    def _attempt(self, record: OutputRecord) -> None:
        started = time.perf_counter()
        try:
            made = self.produce(record.consult_id, record.version)
        except Exception as exc:
            delay = backoff_seconds(record.attempts, self.retry_base_seconds, self.max_retry_seconds)
            logger.warning(
                "outputs of version %d of the report of consult %s failed (attempt %d); "
                "next attempt in %.0f s",
                record.version,
                record.consult_id,
                record.attempts + 1,
                delay,
                exc_info=True,
            )
            error = f"{type(exc).__name__}: {exc}"
            self.records.fail(record.pk, self.worker, error, self.now() + timedelta(seconds=delay))
            return
        if not self.records.finish(record.pk, self.worker, made, self.now()):
            logger.warning(
                "outputs of version %d of consult %s were made, but the claim had been taken over",
                record.version,
                record.consult_id,
            )
            return
        logger.info(
            "outputs of version %d of the report of consult %s made in %.2f s (SR %s, PDF %s)",
            record.version,
            record.consult_id,
            time.perf_counter() - started,
            made.sr_sop_instance_uid or "-",
            made.pdf_sop_instance_uid or "-",
        )

    def font(self) -> ReportFont:
        return load_report_font(self.settings.report_font)

    def document(
        self, consult_id: str, version: int, material: StudyMaterial | None = None
    ) -> ReportDocument:
        header = material.header if material is not None else None
        return collect_document(
            self.reports,
            consult_id,
            version,
            sex=str(header.get("PatientSex", "") or "") if header is not None else "",
            birth_date=str(header.get("PatientBirthDate", "") or "") if header is not None else "",
        )

    def produce(self, consult_id: str, version: int) -> MadeOutputs:
        """Make (and store) the outputs of one signed version; raises if any of them fails."""
        consult = self.reports.consults.store.get(consult_id)
        if consult is None:
            raise NotFoundError(f"consult {consult_id} does not exist")
        material = None
        if consult.study_instance_uid is not None:
            material = read_study_material(self.store, consult.study_instance_uid, render=self.render)
            if material is None:
                raise NotFoundError(f"no instance of study {consult.study_instance_uid} is stored")
        document = self.document(consult_id, version, material)
        pdf = build_report_pdf(document, self.font(), material.key_images if material else ())
        digest = hashlib.sha256(pdf).hexdigest()
        if material is None or document.study is None:
            return MadeOutputs(pdf=pdf, pdf_sha256=digest)
        uids = output_uids(consult_id, version, self.settings.uid_root)
        source = document.study.source_organisation
        sr = build_report_sr(
            document,
            material.header,
            material.evidence,
            series_instance_uid=uids.sr_series,
            sop_instance_uid=uids.sr_instance,
            predecessor=self._predecessor(document),
        )
        self._store(sr, source)
        encapsulated = build_encapsulated_pdf(
            document,
            material.header,
            pdf,
            series_instance_uid=uids.pdf_series,
            sop_instance_uid=uids.pdf_instance,
            sources=[image.record for image in material.key_images],
        )
        self._store(encapsulated, source)
        return MadeOutputs(
            pdf=pdf,
            pdf_sha256=digest,
            study_instance_uid=document.study.study_instance_uid,
            sr_series_instance_uid=uids.sr_series,
            sr_sop_instance_uid=uids.sr_instance,
            pdf_series_instance_uid=uids.pdf_series,
            pdf_sop_instance_uid=uids.pdf_instance,
        )

    def _store(self, data_set: Dataset, source_organisation: str) -> None:
        """Store as a C-STORE from the study's organisation would: its forwarding rules apply."""
        self.store.store_instance(
            encode_data_set(data_set),
            ExplicitVRLittleEndian,
            calling_ae_title=self.settings.ae_title,
            source_organisation=source_organisation,
        )

    def _predecessor(self, document: ReportDocument) -> Dataset | None:
        """The SR this one supersedes: that of the signed version before (None for the first)."""
        earlier = [
            s.version
            for s in document.report.signatures
            if s.role is SignatureRole.REVIEWING and s.version < document.version
        ]
        if not earlier or document.study is None:
            return None
        uids = output_uids(document.consult.consult_id, max(earlier), self.settings.uid_root)
        item = Dataset()
        item.SOPClassUID = EnhancedSRStorage
        item.SOPInstanceUID = uids.sr_instance
        item.StudyInstanceUID = document.study.study_instance_uid
        item.SeriesInstanceUID = uids.sr_series
        return item

    # -- the worker thread ---------------------------------------------------------

    def wake(self) -> None:
        with self._cond:
            self._asked += 1
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="report-outputs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the row being made (if any) is finished."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        self._wake.set()
        thread.join(timeout)
        self._thread = None

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until nothing is due; True if so within ``timeout`` (tests, shutdown, the CLI)."""
        if self._thread is None:
            deadline = time.monotonic() + timeout
            while self.run_due() and time.monotonic() < deadline:
                pass
            return time.monotonic() < deadline
        with self._cond:
            self._asked += 1
            target = self._asked
        self._wake.set()
        with self._cond:
            return self._cond.wait_for(lambda: self._idle_through >= target, timeout)

    def _run(self) -> None:
        next_reconcile = 0.0
        while not self._stopping.is_set():
            self._wake.clear()
            with self._cond:
                covering = self._asked
            try:
                if time.monotonic() >= next_reconcile:
                    self.reconcile()
                    next_reconcile = time.monotonic() + self.reconcile_seconds
                worked = self.run_due()
            except Exception:
                logger.exception(
                    "the report output worker failed; it tries again in %.0f s", self.poll_seconds
                )
                worked = -1
            if worked == 0:
                with self._cond:
                    self._idle_through = max(self._idle_through, covering)
                    self._cond.notify_all()
            if worked <= 0:
                self._wake.wait(self.poll_seconds)
