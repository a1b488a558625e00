"""C-GET SCP: send matching instances back over the requesting association."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dicom_gateway.handlers.retrieve import RetrieveError, select_instances, stored_datasets

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from dicom_gateway.ae import GatewayContext

__all__ = ["GET_STATUSES", "handle_get"]

logger = logging.getLogger(__name__)

GET_STATUSES = (0x0000, 0xFF00, 0xFE00, 0xB000, 0xA701, 0xA900, 0xC000)


def handle_get(event: Event, context: GatewayContext) -> Iterator[Any]:
    """Send the instances the identifier names as C-STORE sub-operations.

    The requestor must have proposed the storage SOP classes with the SCP role
    (SCP/SCU Role Selection); instances without an accepted context fail
    as sub-operations and are listed in the final Failed SOP Instance UID List.

    Statuses
    --------
    0xFF00 Pending, then 0x0000 Success, 0xB000 Warning (some sub-operations
    failed) or 0xFE00 Cancel, counted by pynetdicom.
    0xA900 Identifier does not match SOP class: no level or no unique key.
    0xA701 Out of resources: the index cannot be read.
    0xC000 Unable to process: the identifier cannot be parsed.
    """
    calling = event.assoc.requestor.ae_title
    try:
        rows = select_instances(event, context)
    except RetrieveError as exc:
        logger.warning("C-GET from %s refused with 0x%04X: %s", calling, exc.status, exc.comment)
        yield 1
        yield exc.status, None
        return
    logger.info("C-GET from %s: %d instances", calling, len(rows))
    yield len(rows)
    yield from stored_datasets(event, context, rows)
