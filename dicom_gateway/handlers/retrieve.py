"""What C-MOVE and C-GET share: selecting instances and reading them for sending."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_gateway.query import QueryError, parse_identifier
from teleconsult.errors import TeleconsultError
from teleconsult.storage import deflated

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from dicom_gateway.ae import GatewayContext

__all__ = ["RetrieveError", "select_instances", "stored_datasets"]

logger = logging.getLogger(__name__)


class RetrieveError(Exception):
    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment[:64]


def select_instances(event: Event, context: GatewayContext) -> list[dict[str, Any]]:
    """The IMAGE-level rows the retrieve identifier names, within the caller's scope."""
    try:
        request = parse_identifier(event.identifier, str(event.request.AffectedSOPClassUID), retrieve=True)
    except QueryError as exc:
        raise RetrieveError(exc.status, exc.comment) from exc
    try:
        return context.store.index.query(
            "IMAGE",
            request.retrieve_keys(),
            organisations=context.query_scope(event.assoc.requestor.ae_title),
        )
    except TeleconsultError as exc:
        raise RetrieveError(0xA701, exc.comment) from exc


def stored_datasets(
    event: Event, context: GatewayContext, rows: list[dict[str, Any]]
) -> Iterator[tuple[int, Dataset | None]]:
    """(0xFF00, dataset) per instance, read from the store one at a time.

    A file that cannot be read is a failed sub-operation, with a logged
    error; so is a deflated data set that would inflate past
    ``deflated.MAX_INFLATED_BYTES``: pydicom inflates a file whole to send
    it, and one 2 MB deflate bomb would take gigabytes.
    """
    for row in rows:
        if event.is_cancelled:
            yield 0xFE00, None
            return
        try:
            # the file itself, or a cached copy of the object when the files are in S3
            path = context.store.files.local_path(row["_file_key"])
            if deflated.inflates_past(path, deflated.MAX_INFLATED_BYTES):
                logger.error(
                    "stored file of %s not sent: its deflated data set inflates to more than %d MiB",
                    row["SOPInstanceUID"],
                    deflated.MAX_INFLATED_BYTES >> 20,
                )
                yield 0xFF00, _not_sendable(row)
                continue
            ds = dcmread(path)
        except Exception:
            logger.exception("stored file of %s cannot be read", row["SOPInstanceUID"])
            yield 0xFF00, _not_sendable(row)
            continue
        yield 0xFF00, ds


def _not_sendable(row: dict[str, Any]) -> Dataset:
    """What stands for an instance that is not sent: a failed sub-operation, listed by its UID.

    pynetdicom cannot choose a presentation context for a data set without
    File Meta, so it fails the C-STORE before sending anything, counts the
    failure and puts the SOP Instance UID in the final Failed SOP Instance
    UID List. (An empty data set is false, and pynetdicom then drops the
    sub-operation without a word: a final Success with one remaining.)
    """
    ds = Dataset()
    ds.SOPClassUID = row.get("SOPClassUID") or ""
    ds.SOPInstanceUID = row["SOPInstanceUID"]
    return ds
