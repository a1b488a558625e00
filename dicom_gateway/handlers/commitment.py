"""Storage Commitment Push Model SCP (PS3.4 J): tell a device when it may delete its copy.

A township device stores its images, then sends an N-ACTION (Action Type 1)
listing them. The gateway answers Success at once (the request is accepted,
nothing is promised yet), then, off the association's thread, checks each
referenced instance against the index and its file, and sends the result as
an N-EVENT-REPORT: Event Type 1 when every instance is committed, 2 when some
failed, each failure with its Failure Reason.

Committed means: the SOP instance is indexed with the same SOP class, its
file is present, and the file's data set still hashes to the SHA-256 it was
stored under (``FileStore.data_set_sha256``). Files are written durably
(fsync, rename, index commit) before a C-STORE is acknowledged, so what is
reported committed survives a crash.

Delivery (PS3.4 J.3.3.1.2): on the same association when the device keeps it
open, else on a new association to the device's configured host and port
(``TELECONSULT_DICOM_PEERS``), proposing the SCP role for the Storage
Commitment SOP class. An unreachable device is retried with backoff
(``RETRY_DELAYS``); the last failure is logged as an error and the device,
never having received its report, keeps its copy and may ask again.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_role, evt
from pynetdicom.pdu_primitives import A_RELEASE

from dicom_gateway.sockets import RequestorAE, set_no_delay
from teleconsult.domain.uids import check_uid
from teleconsult.errors import TeleconsultError
from teleconsult.storage.store import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.events import Event

    from dicom_gateway.ae import GatewayContext
    from teleconsult.config import DicomPeer
    from teleconsult.storage.store import InstanceStore

__all__ = [
    "FAILURE_REASONS",
    "N_ACTION_STATUSES",
    "RETRY_DELAYS",
    "STORAGE_COMMITMENT_PUSH_MODEL",
    "STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE",
    "CommitmentError",
    "CommitmentRequest",
    "CommitmentResult",
    "check_commitment",
    "handle_n_action",
    "parse_action_information",
]

logger = logging.getLogger(__name__)

STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
# The well-known SOP instance every request names (PS3.4 J.3.5).
STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"

_REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID
_ALL_COMMITTED = 1  # Event Type IDs
_SOME_FAILED = 2

# Every status the N-ACTION handler answers with (checked against
# pynetdicom's Storage Commitment status table in the tests).
N_ACTION_STATUSES = (0x0000, 0x0110, 0x0115, 0x0117, 0x0123, 0x0124)

PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
# Failure Reason (0008,1197) values the N-EVENT-REPORT can carry (PS3.4 J.3.3.1.1).
FAILURE_REASONS = (PROCESSING_FAILURE, NO_SUCH_OBJECT_INSTANCE, CLASS_INSTANCE_CONFLICT)

# Seconds to wait before each new-association attempt after the first one
# failed: about a minute in all, enough for a device that is restarting or
# briefly off the network. Read at delivery time so tests can shorten it.
RETRY_DELAYS: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0, 32.0)

# Most devices release the association as soon as the N-ACTION is answered
# and wait for the report on their own SCP; a report sent on the requesting
# association at that moment is ignored and costs a DIMSE timeout and an
# abort. So the requesting association is used only if the device still
# holds it open this long after the N-ACTION was answered.
SAME_ASSOCIATION_GRACE_SECONDS = 1.0

_message_ids = itertools.count(1)

# One report at a time per requesting association: a device that commits
# series by series on one association must not get two reports interleaved
# (each send pauses the association's reactor and waits for its answer).
_association_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_association_locks_guard = threading.Lock()


class CommitmentError(Exception):
    """An N-ACTION that cannot be accepted; ``status`` is the N-ACTION status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CommitmentRequest:
    """A Storage Commitment Request: the transaction and the instances it names."""

    transaction_uid: str
    references: tuple[tuple[str, str], ...]  # (SOP Class UID, SOP Instance UID), as sent


@dataclass(frozen=True, slots=True)
class CommitmentResult:
    """What the N-EVENT-REPORT tells the device."""

    transaction_uid: str
    committed: tuple[tuple[str, str], ...]
    failed: tuple[tuple[str, str, int], ...]  # (class, instance, Failure Reason)

    @property
    def event_type(self) -> int:
        return _SOME_FAILED if self.failed else _ALL_COMMITTED

    def event_information(self, retrieve_ae_title: str) -> Dataset:
        """The Storage Commitment Result (PS3.4 Table J.3-2)."""
        ds = Dataset()
        ds.TransactionUID = self.transaction_uid
        ds.RetrieveAETitle = retrieve_ae_title  # where the committed instances can be retrieved
        if self.committed:
            ds.ReferencedSOPSequence = [_reference(cls, inst) for cls, inst in self.committed]
        if self.failed:
            failed = []
            for cls, inst, reason in self.failed:
                item = _reference(cls, inst)
                item.FailureReason = reason
                failed.append(item)
            ds.FailedSOPSequence = failed
        return ds


def _reference(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def parse_action_information(action_information: Dataset | None) -> CommitmentRequest:
    """Read the Transaction UID and the Referenced SOP Sequence.

    Raises
    ------
    CommitmentError
        0x0115 Invalid argument value: Transaction UID missing or invalid,
        Referenced SOP Sequence missing or empty, or an item without valid
        Referenced SOP Class and Instance UIDs (checking nothing would be
        worse than refusing: the device could not tell what was committed).
    """
    if action_information is None:
        raise CommitmentError(0x0115, "no Action Information")
    try:
        transaction_uid = check_uid(action_information.get("TransactionUID"), "Transaction UID")
        items = action_information.get("ReferencedSOPSequence")
        if not items:
            raise CommitmentError(0x0115, "Referenced SOP Sequence missing or empty")
        references = tuple(
            (
                check_uid(item.get("ReferencedSOPClassUID"), "Referenced SOP Class UID"),
                check_uid(item.get("ReferencedSOPInstanceUID"), "Referenced SOP Instance UID"),
            )
            for item in items
        )
    except TeleconsultError as exc:
        raise CommitmentError(0x0115, exc.message) from exc
    return CommitmentRequest(transaction_uid=transaction_uid, references=references)


def check_commitment(
    store: InstanceStore, request: CommitmentRequest, organisations: Sequence[str] | None = None
) -> CommitmentResult:
    """Check every referenced instance: indexed, same SOP class, file intact.

    ``organisations`` is the requesting peer's query scope (``None``: no
    limit): an instance from outside it is reported as not stored, so a
    request cannot reveal another organisation's data.

    Failure reasons: 0x0112 no such object instance (not stored, or outside
    the scope), 0x0119
    class/instance conflict (stored under another SOP class), 0x0110
    processing failure (file missing, unreadable or corrupted, or the index
    cannot be read).
    """
    committed: list[tuple[str, str]] = []
    failed: list[tuple[str, str, int]] = []
    for sop_class_uid, sop_instance_uid in request.references:
        reason = _check_instance(store, sop_class_uid, sop_instance_uid, organisations)
        if reason is None:
            committed.append((sop_class_uid, sop_instance_uid))
        else:
            failed.append((sop_class_uid, sop_instance_uid, reason))
    return CommitmentResult(request.transaction_uid, tuple(committed), tuple(failed))


def _check_instance(
    store: InstanceStore, sop_class_uid: str, sop_instance_uid: str, organisations: Sequence[str] | None
) -> int | None:
    try:
        record = store.index.instance(sop_instance_uid)
    except TeleconsultError as exc:
        logger.error("storage commitment: instance %s not checked: %s", sop_instance_uid, exc.message)
        return PROCESSING_FAILURE
    if record is None:
        return NO_SUCH_OBJECT_INSTANCE
    if organisations is not None and record.source_organisation not in organisations:
        logger.warning(
            "storage commitment: instance %s belongs to %s, outside the requester's scope; "
            "reported as not stored",
            sop_instance_uid,
            record.source_organisation,
        )
        return NO_SUCH_OBJECT_INSTANCE
    if record.sop_class_uid != sop_class_uid:
        logger.warning(
            "storage commitment: instance %s is stored as SOP class %s, not %s",
            sop_instance_uid,
            record.sop_class_uid,
            sop_class_uid,
        )
        return CLASS_INSTANCE_CONFLICT
    try:
        actual = store.files.data_set_sha256(record.file_key)
    except (OSError, TeleconsultError) as exc:
        logger.error(
            "storage commitment: file %s of %s unreadable: %s", record.file_key, sop_instance_uid, exc
        )
        return PROCESSING_FAILURE
    if actual != record.sha256:
        logger.error(
            "storage commitment: file %s of %s is corrupted (SHA-256 %s, stored as %s); "
            "not committed, `teleconsult store check` lists every such file",
            record.file_key,
            sop_instance_uid,
            actual,
            record.sha256,
        )
        return PROCESSING_FAILURE
    return None


def handle_n_action(event: Event, context: GatewayContext) -> tuple[int, Dataset | None]:
    """Accept a Storage Commitment Request, then report on it from a background thread.

    Statuses
    --------
    0x0000 Success: the request is accepted; the result follows as an
    N-EVENT-REPORT (Event Type 1 all committed, 2 some failed).
    0x0110 Processing failure: sent by pynetdicom if this handler raises.
    0x0115 Invalid argument value: no or invalid Transaction UID, empty
    Referenced SOP Sequence, an item without valid UIDs, or Action
    Information that cannot be decoded.
    0x0117 Invalid object instance: Requested SOP Instance UID is not the
    well-known 1.2.840.10008.1.20.1.1.
    0x0123 No such action: Action Type ID is not 1.
    0x0124 Refused, not authorised: the calling AE title is not a configured
    peer (open mode), so there is no address to send the report to.
    """
    assoc = event.assoc
    calling = assoc.requestor.ae_title
    address = assoc.requestor.address
    request = event.request
    if event.action_type != _REQUEST_STORAGE_COMMITMENT:
        logger.warning("N-ACTION from %s (%s): action type %s refused", calling, address, event.action_type)
        return 0x0123, None
    if str(request.RequestedSOPInstanceUID or "").rstrip("\x00") != STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE:
        logger.warning("storage commitment from %s (%s): wrong Requested SOP Instance UID", calling, address)
        return 0x0117, None
    peer = context.settings.peer(calling)
    if peer is None:
        logger.warning(
            "storage commitment from %s (%s) refused: not a configured peer, so no address to report to "
            "(add it to TELECONSULT_DICOM_PEERS)",
            calling,
            address,
        )
        return 0x0124, None
    try:
        commitment = parse_action_information(event.action_information)
    except CommitmentError as exc:
        logger.warning("storage commitment from %s (%s) refused: %s", calling, address, exc.reason)
        return exc.status, None
    except Exception:
        logger.warning(
            "storage commitment from %s (%s): undecodable request", calling, address, exc_info=True
        )
        return 0x0115, None
    logger.info(
        "storage commitment from %s (%s): transaction %s, %d instances",
        calling,
        address,
        commitment.transaction_uid,
        len(commitment.references),
    )
    # pynetdicom marks its reactor paused while a handler runs; clearing the
    # mark makes _pause_reactor wait until the N-ACTION response has been
    # sent, so the report can never overtake it on this association.
    assoc._is_paused = False
    threading.Thread(
        target=_report,
        args=(context, assoc, peer, commitment),
        name=f"commitment-{calling.strip()}",
        daemon=True,
    ).start()
    return 0x0000, None


class _Delivery(Enum):
    SENT = "sent"
    REFUSED = "refused"  # the device answered with a failure: sending again would not help
    FAILED = "failed"  # no association or no answer: worth another attempt


def _report(context: GatewayContext, assoc: Association, peer: DicomPeer, request: CommitmentRequest) -> None:
    """Check the instances and deliver the report: same association first, then new ones."""
    grace_ends = time.monotonic() + SAME_ASSOCIATION_GRACE_SECONDS
    try:
        result = check_commitment(context.store, request, context.query_scope(peer.ae_title))
    except Exception:
        logger.exception(
            "storage commitment %s: check failed; every instance reported failed", request.transaction_uid
        )
        result = CommitmentResult(
            request.transaction_uid, (), tuple((c, i, PROCESSING_FAILURE) for c, i in request.references)
        )
    information = result.event_information(context.settings.ae_title)
    summary = f"{len(result.committed)} committed, {len(result.failed)} failed"
    where = "on the requesting association"
    outcome = _send_on_association(
        assoc, result.event_type, information, grace_ends, context.settings.dicom_dimse_timeout
    )
    attempts = 0
    if outcome is _Delivery.FAILED:
        where = f"on a new association to {peer.host}:{peer.port}"
        for delay in (0.0, *RETRY_DELAYS):
            if delay:
                logger.warning(
                    "storage commitment report %s to %s (%s:%d) not delivered (attempt %d); next in %g s",
                    request.transaction_uid,
                    peer.ae_title,
                    peer.host,
                    peer.port,
                    attempts,
                    delay,
                )
                time.sleep(delay)
            attempts += 1
            outcome = _send_on_new_association(context, peer, result.event_type, information)
            if outcome is not _Delivery.FAILED:
                break
    if outcome is _Delivery.SENT:
        logger.info(
            "storage commitment report %s sent to %s %s: %s",
            request.transaction_uid,
            peer.ae_title,
            where,
            summary,
        )
    elif outcome is _Delivery.FAILED:
        logger.error(
            "storage commitment report %s (%s) could not be delivered to %s at %s:%d in %d attempts; "
            "the device keeps its copies and may send the request again",
            request.transaction_uid,
            summary,
            peer.ae_title,
            peer.host,
            peer.port,
            attempts,
        )


def _next_message_id() -> int:
    return next(_message_ids) % 0xFFFF + 1


def _delivery(status: Dataset, transaction_uid: str, peer: str) -> _Delivery:
    code = status.get("Status")
    if code is None:
        return _Delivery.FAILED  # no response within the DIMSE timeout, or aborted
    if code == 0x0000:
        return _Delivery.SENT
    logger.error(
        "storage commitment report %s: %s answered the N-EVENT-REPORT with status 0x%04X",
        transaction_uid,
        peer,
        code,
    )
    return _Delivery.REFUSED


def _pause_reactor(assoc: Association, timeout: float) -> bool:
    """Stop the acceptor's reactor from taking the next message off the queue.

    pynetdicom's own ``send_*()`` methods do this (its "reactor checkpoint")
    so the answer to our request is not read as a new request; here the wait
    is bounded, because the reactor never pauses again once the association
    has ended. Returns False (reactor left running) if it did not pause.
    """
    assoc._reactor_checkpoint.clear()
    deadline = time.monotonic() + timeout
    while not assoc._is_paused:
        if not assoc.is_established or time.monotonic() > deadline:
            assoc._reactor_checkpoint.set()
            return False
        time.sleep(0.0005)
    return True


def _release_requested(assoc: Association) -> bool:
    """Whether the device has asked to release, without taking the request off the queue.

    (``acse.is_release_requested()`` would consume it, and the reactor would
    then never answer the release.)
    """
    primitive = assoc.dul.peek_next_pdu()
    return isinstance(primitive, A_RELEASE) and primitive.result is None


def _released_by(assoc: Association, deadline: float) -> bool:
    """Whether the device ends, or asks to end, the association before ``deadline``."""
    while True:
        if not assoc.is_established or _release_requested(assoc):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _send_on_association(
    assoc: Association, event_type: int, information: Dataset, grace_ends: float, timeout: float
) -> _Delivery:
    """Report on the requesting association if the device has kept it open for the report."""
    if _released_by(assoc, grace_ends):
        return _Delivery.FAILED
    with _association_locks_guard:
        lock = _association_locks.setdefault(assoc, threading.Lock())
    with lock:
        return _send_paused(assoc, event_type, information, timeout)


def _send_paused(assoc: Association, event_type: int, information: Dataset, timeout: float) -> _Delivery:
    if not assoc.is_established or not _pause_reactor(assoc, timeout):
        return _Delivery.FAILED
    try:
        if not assoc.is_established or _release_requested(assoc):
            return _Delivery.FAILED
        status, _ = assoc.send_n_event_report(
            information,
            event_type,
            STORAGE_COMMITMENT_PUSH_MODEL,
            STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
            msg_id=_next_message_id(),
        )
    except Exception:
        logger.warning("storage commitment report on the requesting association failed", exc_info=True)
        return _Delivery.FAILED
    finally:
        assoc._reactor_checkpoint.set()
    return _delivery(status, str(information.TransactionUID), assoc.requestor.ae_title)


def _send_on_new_association(
    context: GatewayContext, peer: DicomPeer, event_type: int, information: Dataset
) -> _Delivery:
    """Report on an association we open, proposing the SCP role (PS3.4 J.3.3.1.3)."""
    settings = context.settings
    ae = RequestorAE(ae_title=settings.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.connection_timeout = settings.dicom_acse_timeout  # a switched-off device must fail fast
    ae.acse_timeout = settings.dicom_acse_timeout
    ae.dimse_timeout = settings.dicom_dimse_timeout
    ae.network_timeout = settings.dicom_network_timeout
    ae.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, set_no_delay)]
    try:
        assoc = ae.associate(
            peer.host,
            peer.port,
            ae_title=peer.ae_title,
            ext_neg=[build_role(STORAGE_COMMITMENT_PUSH_MODEL, scp_role=True)],
            evt_handlers=handlers,
            tls_args=context.client_tls.tls_args(peer),
        )
    except Exception:
        logger.warning("storage commitment: cannot associate with %s", peer.ae_title, exc_info=True)
        return _Delivery.FAILED
    if not assoc.is_established:
        return _Delivery.FAILED
    try:
        status, _ = assoc.send_n_event_report(
            information,
            event_type,
            STORAGE_COMMITMENT_PUSH_MODEL,
            STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
            msg_id=_next_message_id(),
        )
    except Exception:
        logger.warning("storage commitment report to %s failed", peer.ae_title, exc_info=True)
        return _Delivery.FAILED
    finally:
        if assoc.is_established:
            assoc.release()
    return _delivery(status, str(information.TransactionUID), peer.ae_title)
