"""C-STORE SCU: the forwarder working the durable forwarding queue.

The C-STORE handler never forwards: it stores, and the index transaction
queues one row per destination (``teleconsult/storage/outbox.py``). Here
worker threads claim the due rows of one stable study for one destination,
send them over one association, then acknowledge each row (Orthanc's
claim-then-acknowledge queue and forward-on-stable-study samples). A failed
row goes back to pending with its reason and an exponential backoff; a
process that dies leaves its claims to be reclaimed; nothing is held only in
memory, so a restart loses nothing.

The stored files are sent as they are: each file is proposed in its own
transfer syntax (plus Explicit and Implicit VR Little Endian) and, when the
peer accepts it, its data set bytes go out untouched, streamed from disk.
Only when the peer takes the other uncompressed syntax is a file re-encoded
(values unchanged); compressed pixel data is never transcoded.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import split_dataset
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from dicom_gateway.sockets import RequestorAE, set_no_delay
from dicom_gateway.tls import ClientTls
from teleconsult import metrics
from teleconsult.config import DicomPeer, Settings
from teleconsult.errors import TeleconsultError
from teleconsult.storage.outbox import ForwardEntry
from teleconsult.storage.store import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, InstanceStore

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.events import Event

__all__ = ["Forwarder"]

logger = logging.getLogger(__name__)

_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: context IDs are odd numbers 1-255
_PRIORITY_MEDIUM = 0
# Acknowledge sent rows in small batches: one commit per instance would cost
# an fsync each, one per association would resend a whole study after a crash.
_ACK_EVERY = 32
_ACK_SECONDS = 10.0


def _poll_seconds(settings: Settings) -> float:
    """How often an idle worker looks for due rows: well inside the shortest configured delay."""
    candidates = [1.0, settings.dicom_forward_retry_base_seconds / 4]
    if settings.dicom_forward_stable_seconds > 0:
        candidates.append(settings.dicom_forward_stable_seconds / 4)
    return max(0.05, min(candidates))


def _build_scu_ae(settings: Settings) -> AE:
    ae = RequestorAE(ae_title=settings.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.acse_timeout = settings.dicom_acse_timeout
    ae.dimse_timeout = settings.dicom_dimse_timeout
    ae.network_timeout = settings.dicom_network_timeout
    # A peer that is switched off must fail fast, not hang a worker.
    ae.connection_timeout = settings.dicom_acse_timeout
    return ae


def _presentation_contexts(
    entries: list[ForwardEntry],
) -> tuple[list[PresentationContext], list[ForwardEntry]]:
    """Contexts for one association, and the entries that did not fit in 128 contexts.

    Each transfer syntax a file is stored in gets a context of its own, so an
    accepted context means exactly that syntax and the file can go out
    unchanged; one more context per SOP class offers both uncompressed
    syntaxes as a fallback.
    """
    syntaxes: dict[str, list[str]] = {}
    for entry in entries:
        listed = syntaxes.setdefault(entry.sop_class_uid, [])
        if entry.transfer_syntax_uid not in listed:
            listed.append(entry.transfer_syntax_uid)
    contexts: list[PresentationContext] = []
    deferred_classes: set[str] = set()
    for sop_class_uid, own in syntaxes.items():
        wanted = [build_context(sop_class_uid, transfer_syntax) for transfer_syntax in own]
        if not set(_UNCOMPRESSED) <= set(own):
            wanted.append(build_context(sop_class_uid, list(_UNCOMPRESSED)))
        if len(contexts) + len(wanted) > _MAX_CONTEXTS:
            deferred_classes.add(sop_class_uid)
            continue
        contexts.extend(wanted)
    deferred = [entry for entry in entries if entry.sop_class_uid in deferred_classes]
    return contexts, deferred


def _exact_context(assoc: Association, entry: ForwardEntry) -> PresentationContext | None:
    for context in assoc.accepted_contexts:
        if context.abstract_syntax == entry.sop_class_uid and context.transfer_syntax[0] == (
            entry.transfer_syntax_uid
        ):
            return context
    return None


def _send_stored_file(
    assoc: Association, context_id: int, entry: ForwardEntry, path: Path, message_id: int
) -> Dataset:
    """C-STORE the data set of a stored Part 10 file byte for byte, streamed from disk.

    pynetdicom's ``send_c_store`` streams a file untouched only while its
    process-wide ``_config.STORE_SEND_CHUNKED_DATASET`` is on, which would
    also change how the gateway's C-MOVE/C-GET sub-operations behave. This
    builds the same request for one call, with the steps ``send_c_store``
    takes in pynetdicom 3.0.4 (pinned in pyproject.toml): pause the reactor,
    send, wait for the response, resume. The Orthanc integration test checks
    the bytes that arrive.
    """
    _meta, offset = split_dataset(path)
    request = C_STORE()
    request.MessageID = message_id
    request.Priority = _PRIORITY_MEDIUM
    request.AffectedSOPClassUID = entry.sop_class_uid
    request.AffectedSOPInstanceUID = entry.sop_instance_uid
    request._dataset_path = (path, offset)
    assoc._reactor_checkpoint.clear()
    try:
        while not assoc._is_paused:  # kill() sets it too, so a dead association cannot hang us
            time.sleep(0.0001)
        assoc.dimse.send_msg(request, context_id)
        _context_id, response = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    if response is None:
        assoc._handle_no_response()
        return Dataset()
    return assoc._check_received_status(response)


def _status_error(status: Dataset, destination: str, entry: ForwardEntry) -> str | None:
    """None if the peer stored the instance (Success, or Warning such as 0xB000), else why not."""
    if "Status" not in status:
        return f"no C-STORE response from {destination} (DIMSE timeout or association aborted)"
    code = int(status.Status)
    category = code_to_category(code)
    if category == STATUS_SUCCESS:
        return None
    comment = str(status.get("ErrorComment", "") or "").strip()
    if category == STATUS_WARNING:
        logger.warning(
            "%s stored %s with warning 0x%04X%s",
            destination,
            entry.sop_instance_uid,
            code,
            f": {comment}" if comment else "",
        )
        return None
    reason = f"C-STORE status 0x{code:04X} ({category}) from {destination}"
    return f"{reason}: {comment}" if comment else reason


def _association_failure(assoc: Association, peer: DicomPeer, connected: bool) -> str:
    where = f"{peer.ae_title} at {peer.host}:{peer.port}"
    if not connected:
        error = getattr(assoc.dul.socket, "connect_error", None)
        if isinstance(error, ssl.SSLError):
            return f"cannot connect to {where} over DICOM TLS: {error}"
        if error is not None:
            return f"cannot connect to {where}: {error}"
        return f"cannot connect to {where} (connection refused or timed out)"
    if assoc.is_rejected and assoc.acceptor.primitive is not None:
        primitive = assoc.acceptor.primitive
        return (
            f"association rejected by {where}: {primitive.result_str}, "
            f"{primitive.source_str}, {primitive.reason_str}"
        )
    if assoc.is_aborted:
        return f"association aborted by {where} during negotiation"
    return f"association with {where} not established (no answer within the ACSE timeout)"


def _mark_connected(_event: Event, connected: threading.Event) -> None:
    connected.set()


class _Acknowledgements:
    """Outcomes of one association, written to the queue in small batches."""

    def __init__(self, forwarder: Forwarder, worker: str) -> None:
        self._forwarder = forwarder
        self._worker = worker
        self._sent: list[int] = []
        self._failed: list[tuple[int, str]] = []
        self._last_flush = time.monotonic()

    def sent(self, entry: ForwardEntry) -> None:
        self._sent.append(entry.pk)
        self._maybe_flush()

    def failed(self, entries: list[ForwardEntry], error: str) -> None:
        self._failed.extend((entry.pk, error) for entry in entries)
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        pending = len(self._sent) + len(self._failed)
        if pending >= _ACK_EVERY or time.monotonic() - self._last_flush >= _ACK_SECONDS:
            self.flush()

    def flush(self) -> None:
        outbox = self._forwarder.outbox
        sent, failed = self._sent, self._failed
        self._sent, self._failed = [], []
        outbox.acknowledge(self._worker, sent)
        _rescheduled, gave_up = outbox.retry_later(self._worker, failed)
        # Renew the claims still being sent, so they are not reclaimed as stale.
        outbox.touch(self._worker)
        self._last_flush = time.monotonic()
        self._forwarder._count(sent=len(sent), failures=len(failed), gave_up=gave_up)
        if sent:
            metrics.FORWARDS.labels("sent").inc(len(sent))
        if failed:
            metrics.FORWARDS.labels("failed").inc(len(failed))
        if gave_up:
            logger.error("%d forward rows failed for good after their last attempt", gave_up)


class Forwarder:
    """Worker threads sending queued instances to their peers (C-STORE SCU).

    ``start()`` first reclaims rows a stopped process left in ``sending``,
    then runs ``dicom_forward_workers`` threads; ``stop()`` lets each finish
    the instance it is sending, gives the rest of its claim back unsent and
    joins the threads. Our calling AE title is the gateway's.
    """

    def __init__(
        self,
        settings: Settings,
        store: InstanceStore,
        *,
        reclaim_after_seconds: float = 300.0,
        batch_size: int = 500,
        poll_seconds: float | None = None,
    ) -> None:
        if reclaim_after_seconds <= 0:
            raise ValueError(f"reclaim_after_seconds must be positive, not {reclaim_after_seconds}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.settings = settings
        self.store = store
        self.outbox = store.outbox
        self.reclaim_after_seconds = reclaim_after_seconds
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds if poll_seconds is not None else _poll_seconds(settings)
        # Unique per Forwarder, not just per process: a restarted forwarder in
        # the same process must not acknowledge its predecessor's claims.
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._ae = _build_scu_ae(settings)
        # TLS peers: our certificate as client certificate, theirs checked against our CAs.
        self._tls = ClientTls(settings)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("the forwarder is already running")
        self._tls.check()  # a TLS peer with unusable certificate files stops start-up
        self._stop.clear()
        try:
            self.outbox.reclaim_stale(self.reclaim_after_seconds)
        except TeleconsultError as exc:
            logger.warning("could not reclaim stale forward rows yet: %s", exc.message)
        for number in range(self.settings.dicom_forward_workers):
            worker = f"{self.name}/{number}"
            thread = threading.Thread(
                target=self._run, args=(worker,), name=f"forwarder-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        logger.info(
            "forwarder %s started: %d rules, %d workers",
            self.name,
            len(self.settings.dicom_forward_rules),
            len(self._threads),
        )

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("forwarder thread %s did not stop within %.0f s", thread.name, timeout)
        self._threads = []

    @property
    def stats(self) -> dict[str, int]:
        """Counts since start: associations, sent, failures (attempts), gave_up."""
        with self._stats_lock:
            return dict(self._stats)

    def _count(self, **counts: int) -> None:
        with self._stats_lock:
            self._stats.update(counts)

    def _run(self, worker: str) -> None:
        next_reclaim = time.monotonic() + self.reclaim_after_seconds / 2
        while not self._stop.is_set():
            handled = 0
            try:
                if time.monotonic() >= next_reclaim:
                    # Another replica may have died while this one keeps running.
                    self.outbox.reclaim_stale(self.reclaim_after_seconds)
                    next_reclaim = time.monotonic() + self.reclaim_after_seconds / 2
                handled = self.run_once(worker)
            except TeleconsultError as exc:
                logger.warning("forwarder %s: %s", worker, exc.message)
            except Exception:
                # A bug must not end forwarding for good: log, wait, go on.
                logger.exception("forwarder %s failed; continuing", worker)
            if not handled:
                self._stop.wait(self.poll_seconds)

    # -- one claim -----------------------------------------------------------

    def run_once(self, worker: str | None = None) -> int:
        """Claim and send one (destination, study) group; returns the rows handled (0: nothing due)."""
        worker = worker or f"{self.name}/once"
        entries = self.outbox.claim(worker, limit=self.batch_size)
        if entries:
            self._send_group(worker, entries)
        return len(entries)

    def _send_group(self, worker: str, entries: list[ForwardEntry]) -> None:
        destination = entries[0].destination_ae_title
        study = entries[0].study_instance_uid
        acks = _Acknowledgements(self, worker)
        peer = self.settings.peer(destination)
        if peer is None:
            acks.failed(entries, f"{destination} is not a configured peer (TELECONSULT_DICOM_PEERS)")
            acks.flush()
            return
        contexts, deferred = _presentation_contexts(entries)
        if deferred:
            self.outbox.release(worker, [entry.pk for entry in deferred])
            entries = [entry for entry in entries if entry not in deferred]
        try:
            tls_args = self._tls.tls_args(peer)
        except TeleconsultError as exc:
            acks.failed(entries, exc.message)
            acks.flush()
            return
        connected = threading.Event()
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, set_no_delay),
            (evt.EVT_CONN_OPEN, _mark_connected, [connected]),
        ]
        assoc = self._ae.associate(
            peer.host,
            peer.port,
            contexts=contexts,
            ae_title=destination,
            max_pdu=self.settings.dicom_max_pdu,
            evt_handlers=handlers,
            tls_args=tls_args,
        )
        self._count(associations=1)
        if not assoc.is_established:
            reason = _association_failure(assoc, peer, connected.is_set())
            logger.warning("forwarding study %s: %s; will retry", study, reason)
            acks.failed(entries, reason)
            acks.flush()
            return
        done = 0
        try:
            for entry in entries:
                if self._stop.is_set():
                    break
                if not assoc.is_established:
                    acks.failed(
                        entries[done:], f"association with {destination} ended before the instance was sent"
                    )
                    done = len(entries)
                    break
                error = self._send_one(assoc, entry, message_id=done % 65535 + 1)
                if error is None:
                    acks.sent(entry)
                else:
                    acks.failed([entry], error)
                done += 1
        except Exception as exc:
            logger.exception("forwarding study %s to %s failed", study, destination)
            acks.failed(entries[done:], f"forwarder error: {type(exc).__name__}: {exc}")
            done = len(entries)
        finally:
            if assoc.is_established:
                assoc.release()
            acks.flush()
            if done < len(entries):
                # Stopping: the rest goes back unsent, with no attempt counted.
                self.outbox.release(worker, [entry.pk for entry in entries[done:]])
        logger.info("forwarded %d of %d instances of study %s to %s", done, len(entries), study, destination)

    def _send_one(self, assoc: Association, entry: ForwardEntry, *, message_id: int) -> str | None:
        """Send one instance; None when the peer stored it, else the reason it did not."""
        destination = entry.destination_ae_title
        try:
            path = self.store.files.local_path(entry.file_key)  # a cached copy when the files are in S3
            context = _exact_context(assoc, entry)
            if context is not None:
                assert context.context_id is not None
                status = _send_stored_file(assoc, context.context_id, entry, path, message_id)
            elif entry.transfer_syntax_uid in _UNCOMPRESSED:
                # The peer took only the other uncompressed syntax: pynetdicom
                # re-encodes the data set (same values, other VR encoding).
                status = assoc.send_c_store(dcmread(path), msg_id=message_id, priority=_PRIORITY_MEDIUM)
            else:
                return (
                    f"{destination} accepted no presentation context for SOP class {entry.sop_class_uid} "
                    f"in {entry.transfer_syntax_uid} (compressed data is never transcoded)"
                )
        except (OSError, TeleconsultError) as exc:
            return f"cannot read the stored file {entry.file_key}: {exc}"
        except (ValueError, AttributeError) as exc:
            return f"cannot send {entry.sop_instance_uid} to {destination}: {exc}"
        return _status_error(status, destination, entry)
