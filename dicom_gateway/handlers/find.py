"""C-FIND SCP: Patient Root and Study Root query."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from dicom_gateway.query import QueryError, encoded_response, parse_identifier
from teleconsult.errors import TeleconsultError

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from dicom_gateway.ae import GatewayContext

__all__ = ["FIND_STATUSES", "handle_find"]

logger = logging.getLogger(__name__)

FIND_STATUSES = (0x0000, 0xFF00, 0xFE00, 0xA700, 0xA900, 0xC000)


def _failure(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment.encode("ascii", "replace").decode()[:64]
    return ds


def handle_find(event: Event, context: GatewayContext) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """Answer a C-FIND with one pending response per match.

    Statuses
    --------
    0xFF00 Pending: one per match.
    0x0000 Success: sent by pynetdicom after the last match.
    0xFE00 Cancel: the peer sent C-CANCEL.
    0xA700 Refused, out of resources: the index cannot be read.
    0xA900 Identifier does not match SOP class: no or a wrong Query/Retrieve Level.
    0xC000 Unable to process: the identifier cannot be parsed.
    """
    calling = event.assoc.requestor.ae_title
    try:
        request = parse_identifier(event.identifier, str(event.request.AffectedSOPClassUID))
    except QueryError as exc:
        logger.warning("C-FIND from %s refused with 0x%04X: %s", calling, exc.status, exc.comment)
        yield _failure(exc.status, exc.comment), None
        return
    if context.settings.log_dicom_identifiers:
        logger.info("C-FIND from %s at %s level: %s", calling, request.level, request.keys)
    try:
        rows = context.store.index.query(
            request.level,
            request.keys,
            return_keys=[keyword for keyword, _ in request.requested],
            organisations=context.query_scope(calling),
        )
    except TeleconsultError as exc:
        logger.error("C-FIND from %s failed: %s", calling, exc.message)
        yield _failure(0xA700, exc.comment), None
        return
    logger.info("C-FIND from %s at %s level: %d matches", calling, request.level, len(rows))
    # Each match is encoded here for the association's transfer syntax, so
    # pynetdicom's writer only copies its bytes (see encoded_response).
    transfer_syntax = event.context.transfer_syntax
    for row in rows:
        if event.is_cancelled:
            yield 0xFE00, None
            return
        yield 0xFF00, encoded_response(request, row, context.settings.ae_title, transfer_syntax)
