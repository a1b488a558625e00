"""C-STORE SCP: check, store durably, answer.

The handler never forwards or notifies itself: it hands the data set to the
store, which commits the file and index row before returning, and it answers
Success only after that. Forwarding and notifications follow from the
``instance.stored`` event.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from teleconsult.domain.studies import StoreOutcome
from teleconsult.errors import TeleconsultError

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from dicom_gateway.ae import GatewayContext

__all__ = ["STORE_STATUSES", "handle_store"]

logger = logging.getLogger(__name__)

# Every status this handler can answer with (checked against pynetdicom's
# storage status table in the tests).
STORE_STATUSES = (0x0000, 0xA700, 0xA701, 0xA702, 0xA900, 0xC000, 0xC001)


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    # ErrorComment is LO: at most 64 characters of the default repertoire.
    status.ErrorComment = comment.encode("ascii", "replace").decode()[:64]
    return status


def handle_store(event: Event, context: GatewayContext) -> int | Dataset:
    """Store one instance.

    Statuses
    --------
    0x0000 Success: stored (or already stored with the same content).
    0xA700 Refused, out of resources: disk full or instance too large.
    0xA701 Refused, out of resources: the index cannot be written.
    0xA702 Refused, out of resources: the object storage cannot be reached or refused the file.
    0xA900 Error, data set does not match SOP class.
    0xC000 Error, cannot understand: unparsable data set or mismatched UIDs.
    0xC001 Error, cannot understand: missing or invalid UID.
    """
    request = event.request
    assoc = event.assoc
    calling_ae_title = assoc.requestor.ae_title
    peer_address = assoc.requestor.address
    dataset_stream = request.DataSet
    if dataset_stream is None:
        return _status(0xC000, "C-STORE request carries no data set")
    data_set = dataset_stream.getvalue()
    if len(data_set) > context.settings.dicom_max_instance_bytes:
        logger.warning(
            "refused %d-byte instance from %s (%s): over the configured limit",
            len(data_set),
            calling_ae_title,
            peer_address,
        )
        return _status(0xA700, "Instance larger than the configured maximum")
    try:
        stored = context.store.store_instance(
            data_set,
            str(event.context.transfer_syntax),
            calling_ae_title=calling_ae_title,
            source_organisation=context.organisation_of(calling_ae_title),
            expected_sop_class_uid=str(event.context.abstract_syntax),
            expected_sop_instance_uid=str(request.AffectedSOPInstanceUID or "").rstrip("\x00") or None,
        )
    except TeleconsultError as exc:
        logger.warning(
            "C-STORE from %s (%s) refused with 0x%04X: %s",
            calling_ae_title,
            peer_address,
            exc.dimse_status,
            exc.message,
        )
        return _status(exc.dimse_status, exc.comment)
    if stored.outcome is StoreOutcome.DUPLICATE:
        logger.debug("instance %s from %s already stored", stored.sop_instance_uid, calling_ae_title)
    return 0x0000
