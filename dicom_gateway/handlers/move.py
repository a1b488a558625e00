"""C-MOVE SCP: send matching instances to a configured peer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pynetdicom import build_context, evt

from dicom_gateway.handlers.retrieve import RetrieveError, select_instances, stored_datasets
from dicom_gateway.sockets import set_no_delay
from dicom_gateway.sop_classes import UNCOMPRESSED_TRANSFER_SYNTAXES

if TYPE_CHECKING:
    from pynetdicom.events import Event
    from pynetdicom.presentation import PresentationContext

    from dicom_gateway.ae import GatewayContext

__all__ = ["MOVE_STATUSES", "handle_move", "storage_contexts"]

logger = logging.getLogger(__name__)

# Statuses pynetdicom sends from what the handler yields (PS3.4 C.4.2.1.5).
MOVE_STATUSES = (0x0000, 0xFF00, 0xFE00, 0xB000, 0xA701, 0xA801, 0xA900, 0xC000)

_MAX_CONTEXTS = 128


def storage_contexts(rows: list[dict[str, Any]]) -> list[PresentationContext]:
    """One context per SOP class, proposing each stored transfer syntax as is."""
    by_class: dict[str, list[str]] = {}
    for row in rows:
        syntaxes = by_class.setdefault(row["SOPClassUID"], [])
        stored = row["AvailableTransferSyntaxUID"]
        if stored not in syntaxes:
            syntaxes.insert(0, stored)
        for syntax in UNCOMPRESSED_TRANSFER_SYNTAXES[:2]:
            if syntax not in syntaxes:
                syntaxes.append(syntax)
    contexts = []
    for sop_class_uid, syntaxes in by_class.items():
        # A context per compressed syntax, so each file can go as stored.
        compressed = [s for s in syntaxes if s not in UNCOMPRESSED_TRANSFER_SYNTAXES]
        for syntax in compressed:
            contexts.append(build_context(sop_class_uid, [syntax]))
        contexts.append(
            build_context(sop_class_uid, [s for s in syntaxes if s in UNCOMPRESSED_TRANSFER_SYNTAXES])
        )
    if len(contexts) > _MAX_CONTEXTS:
        logger.warning("%d presentation contexts needed, %d proposed", len(contexts), _MAX_CONTEXTS)
    return contexts[:_MAX_CONTEXTS]


def handle_move(event: Event, context: GatewayContext) -> Iterator[Any]:
    """Send the instances the identifier names to the Move Destination.

    Statuses
    --------
    0xFF00 Pending, then 0x0000 Success or 0xB000 Warning (some sub-operations
    failed) or 0xFE00 Cancel, counted by pynetdicom from the sub-operations.
    0xA801 Move Destination unknown: not a configured peer, or unreachable.
    0xA900 Identifier does not match SOP class: no level or no unique key.
    0xA701 Out of resources: the index cannot be read.
    0xC000 Unable to process: the identifier cannot be parsed.
    """
    destination = str(event.move_destination).strip()
    calling = event.assoc.requestor.ae_title
    peer = context.settings.peer(destination)
    if peer is None:
        logger.warning("C-MOVE from %s to unknown destination %r refused", calling, destination)
        yield None, None
        return
    # A TLS peer gets its sub-association over TLS (our certificate, its certificate checked).
    options: dict[str, Any] = {
        "evt_handlers": [(evt.EVT_CONN_OPEN, set_no_delay)],
        "tls_args": context.client_tls.tls_args(peer),
    }
    try:
        rows = select_instances(event, context)
    except RetrieveError as exc:
        logger.warning("C-MOVE from %s refused with 0x%04X: %s", calling, exc.status, exc.comment)
        # pynetdicom wants the destination and a count before any status.
        yield peer.host, peer.port, options
        yield 1
        yield exc.status, None
        return
    logger.info(
        "C-MOVE from %s: %d instances to %s (%s:%d)", calling, len(rows), destination, peer.host, peer.port
    )
    yield peer.host, peer.port, {**options, "contexts": storage_contexts(rows)}
    yield len(rows)
    yield from stored_datasets(event, context, rows)
