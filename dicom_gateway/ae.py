"""The gateway's application entity: contexts, association policy, server.

Association policy (who may connect) lives in one function,
``_handle_requested``: unknown calling AE titles are rejected with
A-ASSOCIATE-RJ "calling AE title not recognised" unless open mode is set, and
a called AE title other than ours is rejected too. Over DICOM TLS the calling
AE title must also be proved by the client certificate (``dicom_gateway.tls``),
and a peer configured for TLS is refused on the plain port, with the same
rejection. Over the association limit pynetdicom answers "local limit
exceeded" (transient), so a device retries.

The TLS listener (``start_gateway(..., tls=True)``) is a second server of its
own AE on ``TELECONSULT_DICOM_TLS_PORT``; its handshakes run on each
connection's own thread, so a client that never completes one holds up no one.
"""

from __future__ import annotations

import copy
import logging
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pynetdicom import _config, evt
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.exc import SQLAlchemyError

from dicom_gateway.association_metrics import association_metric_handlers
from dicom_gateway.audit import DicomAuditor
from dicom_gateway.handlers.commitment import STORAGE_COMMITMENT_PUSH_MODEL, handle_n_action
from dicom_gateway.handlers.echo import handle_echo
from dicom_gateway.handlers.get import handle_get
from dicom_gateway.handlers.move import handle_move
from dicom_gateway.handlers.store import handle_store
from dicom_gateway.handlers.worklist import MODALITY_WORKLIST_FIND, dispatch_find
from dicom_gateway.query import QUERY_RETRIEVE_SOP_CLASSES
from dicom_gateway.reactor_pacing import ReactorPacing
from dicom_gateway.silent_peers import end_unrequested
from dicom_gateway.sockets import AcceptorRequestHandler, RequestorAE, set_no_delay
from dicom_gateway.sop_classes import (
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    VERIFICATION_SOP_CLASS,
)
from dicom_gateway.tls import (
    ClientTls,
    certificate_of,
    handshake,
    identity_mismatch,
    peers_proved_by,
    server_context,
)
from teleconsult.config import Settings
from teleconsult.domain.identity import descendants
from teleconsult.errors import IndexUnavailableError
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.store import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, InstanceStore

if TYPE_CHECKING:
    from pynetdicom.events import Event

__all__ = ["GatewayContext", "build_ae", "start_gateway"]

logger = logging.getLogger(__name__)

# A-ASSOCIATE-RJ parameters (PS3.8 9.3.4)
_REJECTED_PERMANENT = 0x01
_SERVICE_USER = 0x01
_CALLING_AE_NOT_RECOGNISED = 0x03
_CALLED_AE_NOT_RECOGNISED = 0x07


@dataclass
class GatewayContext:
    """What the handlers need, passed to them explicitly (no globals)."""

    settings: Settings
    store: InstanceStore
    # How long the organisation tree is reused: a C-FIND must not reread it,
    # and a new township reaches the gateway's scopes within this time.
    scope_cache_seconds: float = 30.0
    _tree: tuple[float, dict[str, str | None]] | None = field(default=None, init=False, repr=False)
    _tree_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # Why the policy refused an association, for its audit row.
    _refusals: weakref.WeakKeyDictionary[Any, str] = field(
        default_factory=weakref.WeakKeyDictionary, init=False, repr=False
    )
    _refusals_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # TLS for associations the handlers open (C-MOVE, storage commitment reports).
    client_tls: ClientTls = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.client_tls = ClientTls(self.settings)

    def note_refusal(self, assoc: Any, reason: str) -> None:
        with self._refusals_lock:
            self._refusals[assoc] = reason

    def refusal_reason(self, assoc: Any) -> str | None:
        """Why ``_handle_requested`` refused ``assoc`` (once), if it gave a reason beyond the diagnostic."""
        with self._refusals_lock:
            return self._refusals.pop(assoc, None)

    def query_scope(self, calling_ae_title: str) -> list[str]:
        """Organisations whose studies a peer may query and retrieve.

        A configured peer sees its organisation and every organisation below
        it in the organisation tree (``teleconsult org add``): a township PACS
        its township and villages, the county PACS the whole county. An
        organisation code missing from the tree scopes to itself only. An
        unknown AE title (accepted only in open mode) sees nothing: it proved
        no identity, and every unknown device shares one organisation.

        Raises
        ------
        IndexUnavailableError
            The organisation tree cannot be read (the handlers answer A700/A701).
        """
        peer = self.settings.peer(calling_ae_title)
        if peer is None:
            return []
        return sorted(descendants(peer.organisation, self._organisation_tree()))

    def _organisation_tree(self) -> dict[str, str | None]:
        now = time.monotonic()
        with self._tree_lock:
            if self._tree is not None and now - self._tree[0] < self.scope_cache_seconds:
                return self._tree[1]
            try:
                tree = IdentityStore(self.store.index.engine).organisation_tree()
            except SQLAlchemyError as exc:
                raise IndexUnavailableError(
                    "the organisation tree cannot be read, so no query scope is known",
                    comment="Index unavailable; retry later",
                ) from exc
            self._tree = (now, tree)
            return tree

    def organisation_of(self, calling_ae_title: str) -> str:
        peer = self.settings.peer(calling_ae_title)
        if peer is not None:
            return peer.organisation
        return self.settings.dicom_unknown_organisation


def _reject(assoc: Any, diagnostic: int) -> None:
    assoc.acse.send_reject(_REJECTED_PERMANENT, _SERVICE_USER, diagnostic)
    # As pynetdicom does for its own rejections: stopping the association
    # waits for the DUL to send the A-ASSOCIATE-RJ before the socket closes.
    assoc.kill()


def _tls_refusal(event: Event, context: GatewayContext, calling: str) -> str | None:
    """Why the transport does not let ``calling`` in, or None.

    Over TLS a configured peer's AE title is taken only with that peer's
    certificate; without TLS a peer configured for TLS is not taken at all.
    """
    settings = context.settings
    peer = settings.peer(calling)
    if peer is None:
        return None  # unknown AE titles: the open-mode rule decides, as on the plain port
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if not isinstance(sock, ssl.SSLSocket):
        if peer.tls:
            return (
                f'peer {calling} is configured for DICOM TLS ("tls": true) and must connect to the TLS '
                "port, not the plain one"
            )
        return None
    certificate = certificate_of(sock)
    if certificate is None:
        return "no client certificate on the TLS connection"
    mismatch = identity_mismatch(peer, certificate)
    if mismatch is None:
        return None
    reason = (
        f"TLS certificate ({certificate.describe()}) does not prove calling AE title {calling}: {mismatch}"
    )
    owners = [p for p in peers_proved_by(settings.dicom_peers, certificate) if p.ae_title != calling]
    if owners:
        reason += "; it is the certificate of " + ", ".join(
            f"peer {p.ae_title} (organisation {p.organisation})" for p in owners
        )
    return reason


def _handle_requested(event: Event, context: GatewayContext) -> None:
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    calling = str(primitive.calling_ae_title).strip()
    called = str(primitive.called_ae_title).strip()
    address = assoc.requestor.address
    if called != context.settings.ae_title:
        logger.warning(
            "rejected association from %s (%s): called AE %r is not ours", calling, address, called
        )
        _reject(assoc, _CALLED_AE_NOT_RECOGNISED)
        return
    if context.settings.peer(calling) is None and not context.settings.dicom_accept_unknown:
        logger.warning(
            "rejected association from %s (%s): calling AE title is not a configured peer "
            "(add it to TELECONSULT_DICOM_PEERS)",
            calling,
            address,
        )
        _reject(assoc, _CALLING_AE_NOT_RECOGNISED)
        return
    refusal = _tls_refusal(event, context, calling)
    if refusal is not None:
        logger.warning("rejected association from %s (%s): %s", calling, address, refusal)
        context.note_refusal(assoc, refusal)
        _reject(assoc, _CALLING_AE_NOT_RECOGNISED)
        return
    sock = getattr(assoc.dul.socket, "socket", None)
    certificate = certificate_of(sock)
    over_tls = ""
    if isinstance(sock, ssl.SSLSocket) and certificate is not None:
        cipher = sock.cipher()
        over_tls = (
            f" over {sock.version()} {cipher[0] if cipher else ''}, certificate {certificate.describe()}"
        )
    logger.info("association requested by %s (%s)%s", calling, address, over_tls)


class _PresentationContexts(list):  # type: ignore[type-arg]
    """The server's presentation contexts, copied for each association without ``deepcopy``.

    pynetdicom deep-copies them for every association, since negotiation
    marks its copies. Ours hold about 4,300 transfer syntax UIDs, which
    ``deepcopy`` re-validates one by one: 25 ms of CPU per association, as
    long as a tenth of a 200-ECG association takes. A context's only
    mutable parts are its containers (UIDs are strings), so a shallow copy
    of the context with copies of those is an independent one.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        copies = []
        for context in self:
            duplicate = copy.copy(context)
            for name, value in vars(context).items():
                if isinstance(value, list | dict | set):
                    setattr(duplicate, name, copy.copy(value))
            copies.append(duplicate)
        return copies


class _GatewayServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with TLS handshakes off the accepting thread.

    Its connections are handled by ``AcceptorRequestHandler``: a read never
    blocks past the network timeout, and a PDU longer than the PDU limit is
    not buffered (a peer sending half a PDU, or one announcing 4 GiB, holds
    neither a thread forever nor the memory it announced).

    pynetdicom completes each handshake inside ``accept``: one client that
    connects and stays silent would stop every other connection. Here the
    accepting thread only wraps the socket; the handshake runs on the
    connection's own thread, within the ACSE timeout, and a failed one is
    logged and audited (``GatewayAE.tls_refused``) before the socket closes.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("request_handler", AcceptorRequestHandler)
        super().__init__(*args, **kwargs)
        self.contexts = _PresentationContexts(self.contexts)

    def get_request(self) -> tuple[socket.socket, Any]:
        if self.ssl_context is None:
            return super().get_request()
        assert self.socket is not None
        client_socket, address = self.socket.accept()
        wrapped = self.ssl_context.wrap_socket(client_socket, server_side=True, do_handshake_on_connect=False)
        return wrapped, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            address = str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)
            timeout = self.ae.acse_timeout or 30.0
            if not handshake(request, timeout, address, getattr(self.ae, "tls_refused", None)):
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)


class _SharedPortServer(_GatewayServer):
    """A server whose port other gateway processes bind too (SO_REUSEPORT).

    The kernel spreads new connections over every process listening on the
    port, so several processes, each with its own GIL, accept associations.
    """

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class GatewayAE(RequestorAE):
    """pynetdicom's AE, optionally listening on a port shared with other processes.

    A ``RequestorAE``: the C-MOVE sub-associations it opens never leak sockets.
    """

    share_port = False
    # Called with (address, reason) for a TLS connection refused before any DICOM.
    tls_refused: Callable[[str, str], None] | None = None

    def make_server(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["server_class"] = _SharedPortServer if self.share_port else _GatewayServer
        return super().make_server(*args, **kwargs)


def build_ae(settings: Settings) -> GatewayAE:
    # pynetdicom's "standard" logging handlers format every PDU and DIMSE
    # message (and copy each C-STORE data set to see whether it is empty)
    # even when its logger is silenced, which it is unless identifiers may be
    # logged. Process-wide; read when an association binds its handlers.
    _config.LOG_HANDLER_LEVEL = "standard" if settings.log_dicom_identifiers else "none"
    # Likewise every C-FIND request and response identifier is decoded and
    # formatted for a debug line; about half the gateway's CPU per match.
    _config.LOG_REQUEST_IDENTIFIERS = settings.log_dicom_identifiers
    _config.LOG_RESPONSE_IDENTIFIERS = settings.log_dicom_identifiers
    ae = GatewayAE(ae_title=settings.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.maximum_associations = settings.dicom_max_associations
    ae.maximum_pdu_size = settings.dicom_max_pdu
    ae.acse_timeout = settings.dicom_acse_timeout
    ae.dimse_timeout = settings.dicom_dimse_timeout
    ae.network_timeout = settings.dicom_network_timeout
    ae.add_supported_context(VERIFICATION_SOP_CLASS, list(UNCOMPRESSED_TRANSFER_SYNTAXES))
    for sop_class_uid in QUERY_RETRIEVE_SOP_CLASSES:
        ae.add_supported_context(sop_class_uid, list(UNCOMPRESSED_TRANSFER_SYNTAXES))
    ae.add_supported_context(MODALITY_WORKLIST_FIND, list(UNCOMPRESSED_TRANSFER_SYNTAXES))
    # Both roles: PS3.4 J.2.1 makes role selection mandatory for Storage
    # Commitment, and the report may come back on the requesting association.
    ae.add_supported_context(
        STORAGE_COMMITMENT_PUSH_MODEL, list(UNCOMPRESSED_TRANSFER_SYNTAXES), scu_role=True, scp_role=True
    )
    for sop_class_uid in STORAGE_SOP_CLASSES:
        # Roles: a requestor may be the SCU (C-STORE to us) or, with role
        # selection, the SCP (it receives C-GET sub-operations from us).
        ae.add_supported_context(sop_class_uid, list(TRANSFER_SYNTAXES), scu_role=True, scp_role=True)
    return ae


# How long stopping waits for an aborted association to finish the request it is handling.
_STOP_JOIN_SECONDS = 10.0


def stop_gateway(server: ThreadedAssociationServer) -> None:
    """Stop listening, then abort the associations still open and wait for their handlers.

    pynetdicom's ``shutdown`` only closes the listening socket. An open
    association's threads are not daemon threads, so the process would live
    on for as long as a peer keeps one open, and once the store is closed it
    would answer every further C-STORE with a failure. Aborted, the peer
    knows at once that what it had not been acknowledged must be sent again;
    a request being handled finishes first (a stored instance whose response
    is lost is a duplicate when resent, never a loss).
    """
    server.shutdown()
    associations = server.active_associations
    for assoc in associations:
        assoc.abort()
    deadline = time.monotonic() + _STOP_JOIN_SECONDS
    for assoc in associations:
        assoc.join(max(0.0, deadline - time.monotonic()))
        if assoc.is_alive():
            logger.warning("association with %s still running after abort", assoc.requestor.ae_title)


def start_gateway(
    settings: Settings,
    store: InstanceStore,
    *,
    host: str | None = None,
    port: int | None = None,
    share_port: bool = False,
    tls: bool = False,
) -> ThreadedAssociationServer:
    """Start the DICOM server in its own threads; stop it with ``.shutdown()``.

    ``share_port`` lets other gateway processes listen on the same port
    (``dicom_gateway.workers``). ``tls`` starts the DICOM TLS listener
    instead (port ``dicom_tls_port`` unless ``port`` is given).

    Raises
    ------
    TeleconsultError
        A certificate, key or CA file cannot be used.
    """
    if port is None:
        port = settings.dicom_tls_port if tls else settings.dicom_port
        if port is None:
            raise ValueError("start_gateway(tls=True) needs a port: TELECONSULT_DICOM_TLS_PORT is unset")
    context = GatewayContext(settings=settings, store=store)
    context.client_tls.check()  # TLS peers: unusable certificate files stop start-up
    ssl_context = server_context(settings) if tls else None
    ae = build_ae(settings)
    ae.share_port = share_port
    auditor = DicomAuditor(context)
    ae.tls_refused = auditor.record_tls_refusal
    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, set_no_delay),
        (evt.EVT_CONN_CLOSE, end_unrequested),
        (evt.EVT_REQUESTED, _handle_requested, [context]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [context]),
        (evt.EVT_C_FIND, dispatch_find, [context]),  # Query/Retrieve and Modality Worklist
        (evt.EVT_C_MOVE, handle_move, [context]),
        (evt.EVT_C_GET, handle_get, [context]),
        (evt.EVT_N_ACTION, handle_n_action, [context]),
        *auditor.handlers(),  # notification handlers only: who asked for what
        *association_metric_handlers(),
        *ReactorPacing().handlers(),
    ]
    address = (host if host is not None else settings.dicom_host, port)
    server = ae.start_server(address, block=False, evt_handlers=handlers, ssl_context=ssl_context)
    assert isinstance(server, ThreadedAssociationServer)
    logger.info(
        "DICOM gateway %s listening on %s:%d%s (%d peers, %s)",
        settings.ae_title,
        server.server_address[0],
        server.server_address[1],
        " with DICOM TLS (client certificates required)" if tls else "",
        len(settings.dicom_peers),
        "open mode: unknown AE titles accepted"
        if settings.dicom_accept_unknown
        else "unknown AE titles rejected",
    )
    return server
