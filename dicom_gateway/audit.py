"""The audit trail of DICOM access: queries, retrieves, refused associations, stores.

Everything here is a pynetdicom *notification* handler (EVT_REQUESTED,
EVT_REJECTED, EVT_DIMSE_RECV, EVT_DIMSE_SENT, EVT_RELEASED, EVT_ABORTED,
EVT_CONN_CLOSE): the DIMSE handlers stay as they are, and an audit write that
fails is logged loudly but never changes the status a peer receives.

What is written, one row each (``teleconsult.audit``):

- a refused association (``association``, DENIED; FAILURE when over the
  association limit), with the policy's reason (a TLS certificate that is
  not the calling peer's, a TLS peer on the plain port), and a TLS
  connection refused in its handshake (an untrusted or missing client
  certificate), before any DICOM (actor ``anonymous``, resource ``TLS``);
- a C-FIND, with its last response (``query``; level, number of matches
  and the matching keys);
- a C-MOVE or C-GET, with its last response (``retrieve``; the studies in
  scope the identifier names, the sub-operation counts; DENIED when the
  named studies exist only outside the peer's scope);
- C-STORE, per study and association, when the association ends
  (``instance.store``; the number of instances). Per instance only the SOP
  Instance UID is kept in memory: ingest never waits for an audit
  transaction, and an association of any size costs one transaction.

pynetdicom reports a response as sent just *before* it writes it, so the
record of a query or retrieve goes to a writer thread (``_AuditWriter``)
instead of holding the final response back by an audit transaction; the
matches themselves went out with the pending responses already. When an
association ends, its records are waited for (and the end of the
association is written after them), so a stopped gateway leaves none
unwritten.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.dimse_messages import (
    C_FIND_RQ,
    C_FIND_RSP,
    C_GET_RQ,
    C_GET_RSP,
    C_MOVE_RQ,
    C_MOVE_RSP,
    C_STORE_RSP,
)
from pynetdicom.dsutils import decode

from dicom_gateway.query import QueryError, parse_identifier
from teleconsult.audit import AuditEvent, AuditLog, AuditOutcome, Interface

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from dicom_gateway.ae import GatewayContext

__all__ = ["DicomAuditor"]

logger = logging.getLogger(__name__)

_PENDING = (0xFF00, 0xFF01)
_CANCEL = 0xFE00
_UID_CHUNK = 500  # SOP Instance UIDs per index query when a store is summed up
_MAX_DETAIL_STUDIES = 12  # about what fits the 1024-character detail
_DIAGNOSTICS = {
    0x01: "no reason given",
    0x02: "application context name not supported",
    0x03: "calling AE title not recognised (not a configured peer)",
    0x07: "called AE title not recognised",
}
_WRITE_WAIT_SECONDS = 30
_SERVICES = {C_FIND_RQ: "C-FIND", C_MOVE_RQ: "C-MOVE", C_GET_RQ: "C-GET"}


@dataclass
class _Request:
    """A C-FIND/C-MOVE/C-GET between its request and its final response."""

    service: str
    sop_class_uid: str
    identifier: Dataset | None
    move_destination: str = ""
    matches: int = 0


class _AuditWriter:
    """Writes audit events on its own thread, in order, a batch per transaction."""

    _BATCH = 200

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self._queue: queue.SimpleQueue[tuple[list[AuditEvent], threading.Event]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, events: list[AuditEvent]) -> threading.Event:
        """Queue ``events``; the returned event is set once they are written (or failed, logged)."""
        done = threading.Event()
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="dicom-audit-writer", daemon=True)
                self._thread.start()
        self._queue.put((events, done))
        return done

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            # A failure is logged by AuditLog; the peers' statuses stand.
            with contextlib.suppress(Exception):
                self.audit.record_many([event for events, _done in batch for event in events])
            for _events, done in batch:
                done.set()


@dataclass
class _Association:
    """What one association did that is summed up when it ends."""

    calling_ae_title: str
    address: str | None
    organisation: str | None
    stored: list[str] = field(default_factory=list)
    refused: Counter[int] = field(default_factory=Counter)
    requests: dict[int, _Request] = field(default_factory=dict)
    unwritten: list[threading.Event] = field(default_factory=list)


def _single(value: str) -> str | None:
    """A UID or ID that names exactly one thing: no wildcard and no list."""
    if not value or any(c in value for c in "*?\\"):
        return None
    return value


def _value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value).strip()


def _text(ds: Dataset, keyword: str) -> str:
    return _value_text(ds.get(keyword))


def _key_parts(identifier: Dataset) -> list[str]:
    """The non-empty matching keys, one level into sequences (worklist steps)."""
    parts: list[str] = []
    for element in identifier:
        keyword = element.keyword or str(element.tag)
        if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        if element.VR == "SQ":
            for item in element.value or ():
                parts += [f"{keyword}.{part}" for part in _key_parts(item)]
        elif (text := _value_text(element.value)) != "":
            parts.append(f"{keyword}={text}")
    return parts


class DicomAuditor:
    """Notification handlers writing the DICOM side of the audit trail.

    Bind with ``evt_handlers=[..., *DicomAuditor(context).handlers()]`` after
    the association policy handler: a refusal is read from the association
    once that handler has run.
    """

    def __init__(self, context: GatewayContext, audit: AuditLog | None = None) -> None:
        self.context = context
        self.audit = audit or AuditLog(context.store.index.engine)
        self._writer = _AuditWriter(self.audit)
        self._associations: dict[Any, _Association] = {}
        self._lock = threading.Lock()

    def handlers(self) -> list[tuple[Any, ...]]:
        return [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_DIMSE_RECV, self._on_received),
            (evt.EVT_DIMSE_SENT, self._on_sent),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            # Neither of the two above fires when the peer just drops the
            # connection: what it stored is summed up all the same.
            (evt.EVT_CONN_CLOSE, self._on_connection_closed),
        ]

    # -- associations ----------------------------------------------------------

    def _state(self, assoc: Any) -> _Association:
        state = self._associations.get(assoc)
        if state is None:
            calling = str(assoc.requestor.ae_title).strip()
            peer = self.context.settings.peer(calling)
            state = _Association(
                calling_ae_title=calling,
                address=assoc.requestor.address,
                organisation=self.context.organisation_of(calling)
                if peer is not None or self.context.settings.dicom_accept_unknown
                else None,
            )
            with self._lock:
                state = self._associations.setdefault(assoc, state)
        return state

    def _event(
        self, state: _Association, action: str, outcome: AuditOutcome, resource: str, **extra: Any
    ) -> AuditEvent:
        return AuditEvent(
            action=action,
            outcome=outcome,
            interface=Interface.DICOM,
            actor=state.calling_ae_title,
            actor_organisation=state.organisation,
            source_address=state.address,
            resource=resource,
            **extra,
        )

    def _write(self, events: Iterable[AuditEvent]) -> None:
        try:
            self.audit.record_many(events)
        except Exception:
            # AuditLog has logged the failure; the peer's status stands.
            return

    def _on_requested(self, event: Event) -> None:
        assoc = event.assoc
        if not assoc.is_rejected:
            return
        primitive = assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip()
        peer = self.context.settings.peer(calling)
        diagnostic = getattr(assoc.acceptor.primitive, "diagnostic", None)
        reason = _DIAGNOSTICS.get(diagnostic, f"diagnostic {diagnostic}")
        if diagnostic == 0x07:
            reason = f"called AE title {str(primitive.called_ae_title).strip()!r} not recognised"
        reason = self.context.refusal_reason(assoc) or reason
        state = _Association(calling, assoc.requestor.address, peer.organisation if peer else None)
        self._write([self._event(state, "association", AuditOutcome.DENIED, "A-ASSOCIATE", detail=reason)])

    def record_tls_refusal(self, address: str, reason: str) -> None:
        """A TLS connection refused in its handshake: no AE title was ever sent."""
        state = _Association("anonymous", address, None)
        self._write([self._event(state, "association", AuditOutcome.DENIED, "TLS", detail=reason)])

    def _on_rejected(self, event: Event) -> None:
        """pynetdicom's own refusals, e.g. over the association limit."""
        assoc = event.assoc
        primitive = getattr(assoc.acceptor, "primitive", None)
        transient = getattr(primitive, "result", None) == 0x02
        state = self._state(assoc)
        with self._lock:
            self._associations.pop(assoc, None)
        detail = "association limit exceeded (transient)" if transient else "association rejected"
        outcome = AuditOutcome.FAILURE if transient else AuditOutcome.DENIED
        self._write([self._event(state, "association", outcome, "A-ASSOCIATE", detail=detail)])

    def _on_released(self, event: Event) -> None:
        self._close(event.assoc, "association released")

    def _on_aborted(self, event: Event) -> None:
        self._close(event.assoc, "association aborted")

    def _on_connection_closed(self, event: Event) -> None:
        # The DUL may close the connection before the association's own
        # thread reports the release or abort: tell them apart here too.
        assoc = event.assoc
        aborted = assoc.is_aborted or assoc.acse.is_aborted()
        self._close(assoc, "association aborted" if aborted else "association released")

    def _close(self, assoc: Any, how: str) -> None:
        with self._lock:
            state = self._associations.pop(assoc, None)
        if state is None:
            return
        for done in state.unwritten:
            if not done.wait(_WRITE_WAIT_SECONDS):
                logger.error(
                    "audit records of %s still unwritten after %d s",
                    state.calling_ae_title,
                    _WRITE_WAIT_SECONDS,
                )
                break
        if not (state.stored or state.refused):
            return
        try:
            events = self._store_events(state, how)
        except Exception:
            logger.exception(
                "could not sum up the %d instances stored by %s for the audit trail",
                len(state.stored),
                state.calling_ae_title,
            )
            events = [
                self._event(
                    state,
                    "instance.store",
                    AuditOutcome.SUCCESS,
                    "C-STORE",
                    detail=f"{len(state.stored)} instances received, studies unknown; {how}",
                )
            ]
        self._write(events)

    def _store_events(self, state: _Association, how: str) -> list[AuditEvent]:
        """One event per study the association stored into, one for what was refused."""
        per_study: Counter[tuple[str, str]] = Counter()
        uids = list(dict.fromkeys(state.stored))
        found = 0
        for start in range(0, len(uids), _UID_CHUNK):
            chunk = uids[start : start + _UID_CHUNK]
            rows = self.context.store.index.query("IMAGE", {"SOPInstanceUID": "\\".join(chunk)})
            for row in rows:
                per_study[(row["StudyInstanceUID"], row["PatientID"] or "")] += 1
            found += len(rows)
        events = [
            self._event(
                state,
                "instance.store",
                AuditOutcome.SUCCESS,
                "C-STORE",
                study_instance_uid=study_uid,
                patient_id=patient_id or None,
                detail=f"{count} instances received; {how}",
            )
            for (study_uid, patient_id), count in per_study.items()
        ]
        if found < len(uids):
            events.append(
                self._event(
                    state,
                    "instance.store",
                    AuditOutcome.SUCCESS,
                    "C-STORE",
                    detail=f"{len(uids) - found} instances received but no longer indexed; {how}",
                )
            )
        if state.refused:
            statuses = ", ".join(
                f"0x{status:04X} x{count}" for status, count in sorted(state.refused.items())
            )
            events.append(
                self._event(
                    state,
                    "instance.store",
                    AuditOutcome.FAILURE,
                    "C-STORE",
                    detail=f"{sum(state.refused.values())} instances refused: {statuses}; {how}",
                )
            )
        return events

    # -- DIMSE messages ------------------------------------------------------------

    def _on_received(self, event: Event) -> None:
        message = event.message
        service = _SERVICES.get(type(message))
        if service is None:
            return  # C-STORE and the rest: nothing to read on the way in
        command = message.command_set
        try:
            identifier = self._identifier(event.assoc, message)
        except Exception:
            identifier = None  # the handler answers C000; the audit says so
        self._state(event.assoc).requests[int(command.MessageID)] = _Request(
            service=service,
            sop_class_uid=str(command.AffectedSOPClassUID),
            identifier=identifier,
            move_destination=str(command.get("MoveDestination", "") or "").strip(),
        )

    @staticmethod
    def _identifier(assoc: Any, message: Any) -> Dataset:
        context = next(cx for cx in assoc.accepted_contexts if cx.context_id == message.context_id)
        syntax = UID(context.transfer_syntax[0])
        # A copy: the handler decodes the same bytes afterwards.
        data = BytesIO(message.data_set.getvalue())
        return decode(data, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)

    def _on_sent(self, event: Event) -> None:
        message = event.message
        if isinstance(message, C_STORE_RSP):
            command = message.command_set
            status = int(command.Status)
            state = self._state(event.assoc)
            if status == 0x0000 or status & 0xF000 == 0xB000:
                state.stored.append(str(command.AffectedSOPInstanceUID))
            else:
                state.refused[status] += 1
            return
        if not isinstance(message, C_FIND_RSP | C_MOVE_RSP | C_GET_RSP):
            return
        command = message.command_set
        status = int(command.Status)
        state = self._state(event.assoc)
        message_id = int(command.MessageIDBeingRespondedTo)
        request = state.requests.get(message_id)
        if request is None:
            return
        if status in _PENDING:
            request.matches += 1
            return
        del state.requests[message_id]
        try:
            if request.service == "C-FIND":
                audit_event = self._find_event(state, request, status)
            else:
                audit_event = self._retrieve_event(state, request, status, command)
        except Exception:
            logger.exception(
                "could not describe the %s of %s for the audit trail", request.service, state.calling_ae_title
            )
            audit_event = self._event(
                state,
                "query" if request.service == "C-FIND" else "retrieve",
                AuditOutcome.FAILURE if status not in (0x0000, _CANCEL) else AuditOutcome.SUCCESS,
                f"{request.service} {request.sop_class_uid}",
                detail=f"final status 0x{status:04X}; details unknown (index unreadable)",
            )
        state.unwritten = [done for done in state.unwritten if not done.is_set()]
        state.unwritten.append(self._writer.submit([audit_event]))

    def _find_event(self, state: _Association, request: _Request, status: int) -> AuditEvent:
        identifier = request.identifier
        if identifier is None:
            return self._event(
                state,
                "query",
                AuditOutcome.FAILURE,
                f"C-FIND {request.sop_class_uid}",
                detail=f"identifier cannot be decoded; final status 0x{status:04X}",
            )
        level = _text(identifier, "QueryRetrieveLevel") or "WORKLIST"
        study_uid = _single(_text(identifier, "StudyInstanceUID"))
        outcome = AuditOutcome.SUCCESS if status in (0x0000, _CANCEL) else AuditOutcome.FAILURE
        detail = f"{level} level, {request.matches} matches"
        if status == _CANCEL:
            detail += ", cancelled"
        elif status != 0x0000:
            detail += f", final status 0x{status:04X}"
        elif (
            request.matches == 0 and study_uid and self._outside_scope(state, {"StudyInstanceUID": study_uid})
        ):
            outcome = AuditOutcome.DENIED
            detail += "; the study exists outside the peer's scope"
        return self._event(
            state,
            "query",
            outcome,
            f"C-FIND {level} {request.sop_class_uid}",
            study_instance_uid=study_uid,
            patient_id=_single(_text(identifier, "PatientID")),
            detail=f"{detail}; keys: {', '.join(_key_parts(identifier)) or 'none'}",
        )

    def _retrieve_event(
        self, state: _Association, request: _Request, status: int, command: Dataset
    ) -> AuditEvent:
        counts = {
            name: int(command.get(f"NumberOf{name.capitalize()}Suboperations", 0) or 0)
            for name in ("completed", "failed", "warning")
        }
        destination = f" to {request.move_destination}" if request.service == "C-MOVE" else ""
        summary = (
            f"final status 0x{status:04X}{destination}: {counts['completed']} sent, "
            f"{counts['failed']} failed, {counts['warning']} with warnings"
        )
        try:
            if request.identifier is None:
                raise QueryError(0xC000, "Identifier cannot be decoded")
            query = parse_identifier(request.identifier, request.sop_class_uid, retrieve=True)
        except QueryError as exc:
            return self._event(
                state,
                "retrieve",
                AuditOutcome.FAILURE,
                f"{request.service} {request.sop_class_uid}",
                detail=f"{summary}; {exc.comment}",
            )
        keys = query.retrieve_keys()
        resource = f"{request.service} {query.level.value} {request.sop_class_uid}"
        rows = self.context.store.index.query(
            "STUDY", keys, organisations=self.context.query_scope(state.calling_ae_title)
        )
        outcome = AuditOutcome.SUCCESS
        if status not in (0x0000, _CANCEL, 0xB000):
            outcome = AuditOutcome.FAILURE
        if not rows:
            named = _single(keys.get("StudyInstanceUID", ""))
            detail = f"{summary}; no study in scope"
            if self._outside_scope(state, keys):
                outcome = AuditOutcome.DENIED
                detail = f"{summary}; the studies named exist only outside the peer's scope"
            # Only what the peer named itself: nothing of the other
            # organisation's patient reaches this organisation's admins.
            return self._event(state, "retrieve", outcome, resource, study_instance_uid=named, detail=detail)
        studies = list(dict.fromkeys(str(row["StudyInstanceUID"]) for row in rows))
        patients = {str(row["PatientID"]) for row in rows if row["PatientID"]}
        listed = ",".join(studies[:_MAX_DETAIL_STUDIES])
        more = f" (+{len(studies) - _MAX_DETAIL_STUDIES} more)" if len(studies) > _MAX_DETAIL_STUDIES else ""
        return self._event(
            state,
            "retrieve",
            outcome,
            resource,
            study_instance_uid=studies[0] if len(studies) == 1 else None,
            patient_id=patients.pop() if len(patients) == 1 else None,
            detail=f"{summary}; studies={listed}{more}",
        )

    def _outside_scope(self, state: _Association, keys: dict[str, str]) -> bool:
        """Whether the keys match studies that exist, though not in the peer's scope.

        Asked only when nothing matched in scope, so ordinary traffic pays
        nothing for it.
        """
        return bool(self.context.store.index.query("STUDY", keys, limit=1))
