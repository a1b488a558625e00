"""Modality Worklist SCP (Modality Worklist Information Model - FIND, PS3.4 K).

A township ultrasound asks for its scheduled procedure steps and receives the
patient's name, ID, birth date and sex, the accession number and the Study
Instance UID of the order, so nobody types a Chinese name on the device.
Matching is ``teleconsult.storage.worklist`` (C-FIND semantics); this module
only speaks DICOM: reading the identifier and its Scheduled Procedure Step
Sequence, and answering with the requested keys in the query's character set.

pynetdicom binds one handler to EVT_C_FIND, so ``dispatch_find`` routes
worklist queries here and Query/Retrieve ones to ``handlers/find.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

from dicom_gateway.handlers.find import handle_find

# Same package: the identifier reading and response character sets of C-FIND.
from dicom_gateway.query import RESPONSE_CHARSETS, QueryError, identifier_value_text
from teleconsult.errors import TeleconsultError
from teleconsult.storage.worklist import MATCHING_KEYWORDS, WorklistItem, query_items

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from dicom_gateway.ae import GatewayContext

__all__ = [
    "MODALITY_WORKLIST_FIND",
    "WORKLIST_STATUSES",
    "WorklistRequest",
    "dispatch_find",
    "handle_worklist",
    "parse_worklist_identifier",
    "worklist_response",
]

logger = logging.getLogger(__name__)

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"

# Every status this handler answers with (checked against pynetdicom's
# Modality Worklist status table in the tests).
WORKLIST_STATUSES = (0x0000, 0xFF00, 0xFF01, 0xFE00, 0xA700, 0xA900, 0xC000)

_SPS = "ScheduledProcedureStepSequence"
# Keys matched and returned inside the Scheduled Procedure Step Sequence item,
# in the order a universal (empty) sequence key returns them.
SPS_KEYWORDS = (
    "Modality",
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID",
    "ScheduledProcedureStepStatus",
)
TOP_LEVEL_KEYWORDS = tuple(keyword for keyword in MATCHING_KEYWORDS if keyword not in SPS_KEYWORDS)
_IGNORED = frozenset({"SpecificCharacterSet", "QueryRetrieveLevel"})
_CODECS = {"ISO_IR 192": "utf-8", "GB18030": "gb18030", "GBK": "gbk"}


@dataclass(frozen=True, slots=True)
class WorklistRequest:
    """A worklist identifier, read once: what to match and what to return."""

    keys: dict[str, str]  # keyword -> matching value, SPS sub-keys included (flat)
    requested: tuple[tuple[str, str], ...]  # top-level (keyword, VR), the SPS sequence excluded
    sps_requested: tuple[tuple[str, str], ...] | None  # None: no SPS key; (): the whole item
    charset: str | None
    unsupported_keys: tuple[str, ...]  # keys with a matching value we do not match on (FF01)


def _failure(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment.encode("ascii", "replace").decode()[:64]
    return ds


def _read_keys(
    ds: Dataset, supported: Iterable[str], keys: dict[str, str], unsupported: list[str]
) -> list[tuple[str, str]]:
    """(keyword, VR) of every element of ``ds``; supported ones' values go into ``keys``."""
    supported = set(supported)
    requested: list[tuple[str, str]] = []
    for element in ds:
        keyword = element.keyword
        if not keyword or keyword in _IGNORED or keyword == _SPS:
            continue
        requested.append((keyword, str(element.VR)))
        value = identifier_value_text(ds, keyword)
        if keyword in supported:
            keys[keyword] = value
        elif value and value != "*":
            unsupported.append(keyword)
    return requested


def parse_worklist_identifier(identifier: Dataset) -> WorklistRequest:
    """Read matching and return keys from a Modality Worklist C-FIND identifier.

    Raises
    ------
    QueryError
        0xA900 when the Scheduled Procedure Step Sequence is not a sequence of
        at most one item (PS3.4 C.2.2.2.6); 0xC000 when the identifier cannot
        be read.
    """
    keys: dict[str, str] = {}
    unsupported: list[str] = []
    sps_requested: tuple[tuple[str, str], ...] | None = None
    try:
        requested = _read_keys(identifier, TOP_LEVEL_KEYWORDS, keys, unsupported)
        if _SPS in identifier:
            element = identifier[_SPS]
            if element.VR != "SQ":
                raise QueryError(0xA900, "Scheduled Procedure Step Sequence is not a sequence")
            items = list(element.value or [])
            if len(items) > 1:
                raise QueryError(0xA900, "Scheduled Procedure Step Sequence has more than one item")
            sps_requested = tuple(_read_keys(items[0], SPS_KEYWORDS, keys, unsupported)) if items else ()
        charset = identifier.get("SpecificCharacterSet")
    except QueryError:
        raise
    except Exception as exc:  # pydicom raises many types on a malformed identifier
        raise QueryError(0xC000, "Identifier cannot be parsed") from exc
    if charset is not None and not isinstance(charset, str):
        charset = "\\".join(charset)
    return WorklistRequest(
        keys=keys,
        requested=tuple(requested),
        sps_requested=sps_requested,
        charset=charset or None,
        unsupported_keys=tuple(unsupported),
    )


def _response_charset(request_charset: str | None, texts: list[str]) -> str | None:
    """The query's own character set if it can carry every value, else UTF-8 when needed.

    As C-FIND does (``dicom_gateway.query``): ISO_IR 192, GB18030 and GBK
    queries are answered in kind; any other query gets ISO_IR 192 as soon as a
    value is not plain ASCII (a GBK query with a name outside GBK too).
    """
    if request_charset in RESPONSE_CHARSETS:
        codec = _CODECS[request_charset]
        try:
            for text in texts:
                text.encode(codec)
        except UnicodeEncodeError:
            return "ISO_IR 192"
        return request_charset
    if all(text.isascii() for text in texts):
        return None
    return "ISO_IR 192"


def _set(ds: Dataset, keyword: str, vr: str, value: str) -> None:
    if not value:
        ds.add_new(keyword, vr, None)  # returned as a zero-length element
    elif keyword == "PatientName":
        ds.PatientName = PersonName(value)
    else:
        setattr(ds, keyword, value)


def worklist_response(request: WorklistRequest, item: WorklistItem) -> Dataset:
    """One match: each requested key with the item's value, zero-length when we have none.

    A requested Scheduled Procedure Step Sequence comes back as one item with
    the requested sub-keys, or every sub-key we keep when the sequence key was
    empty (universal matching).
    """
    top = [(keyword, vr, item.dicom_value(keyword)) for keyword, vr in request.requested]
    sps: list[tuple[str, str, str]] = []
    if request.sps_requested is not None:
        wanted = request.sps_requested or tuple((k, dictionary_VR(k)) for k in SPS_KEYWORDS)
        sps = [(keyword, vr, item.dicom_value(keyword)) for keyword, vr in wanted]
    ds = Dataset()
    charset = _response_charset(request.charset, [value for _, _, value in top + sps])
    if charset is not None:
        ds.SpecificCharacterSet = charset
    for keyword, vr, value in top:
        _set(ds, keyword, vr, value)
    if request.sps_requested is not None:
        step = Dataset()
        for keyword, vr, value in sps:
            _set(step, keyword, vr, value)
        ds.ScheduledProcedureStepSequence = [step]
    return ds


def handle_worklist(event: Event, context: GatewayContext) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """Answer a Modality Worklist C-FIND with one pending response per scheduled item.

    Only items with status SCHEDULED are returned; cancelled ones never are.

    Statuses
    --------
    0xFF00 Pending: one per match.
    0xFF01 Pending, warning: one per match when the identifier gave a matching
    value for an optional key we do not match on (that key is ignored).
    0x0000 Success: sent by pynetdicom after the last match.
    0xFE00 Cancel: the peer sent C-CANCEL.
    0xA700 Refused, out of resources: the index cannot be read.
    0xA900 Identifier does not match SOP class: the Scheduled Procedure Step
    Sequence is not a sequence of one item.
    0xC000 Unable to process: the identifier cannot be parsed.
    """
    calling = event.assoc.requestor.ae_title
    try:
        request = parse_worklist_identifier(event.identifier)
    except QueryError as exc:
        logger.warning("worklist C-FIND from %s refused with 0x%04X: %s", calling, exc.status, exc.comment)
        yield _failure(exc.status, exc.comment), None
        return
    except Exception:
        logger.warning("worklist C-FIND from %s: identifier cannot be decoded", calling, exc_info=True)
        yield _failure(0xC000, "Identifier cannot be parsed"), None
        return
    if context.settings.log_dicom_identifiers:
        logger.info("worklist C-FIND from %s: %s", calling, request.keys)
    try:
        items = query_items(context.store.index, request.keys, organisations=context.query_scope(calling))
    except TeleconsultError as exc:
        logger.error("worklist C-FIND from %s failed: %s", calling, exc.message)
        yield _failure(0xA700, exc.comment), None
        return
    status = 0xFF00
    if request.unsupported_keys:
        status = 0xFF01
        logger.info(
            "worklist C-FIND from %s: matching values ignored for %s",
            calling,
            ", ".join(request.unsupported_keys),
        )
    logger.info("worklist C-FIND from %s: %d scheduled items", calling, len(items))
    for item in items:
        if event.is_cancelled:
            logger.info("worklist C-FIND from %s cancelled", calling)
            yield 0xFE00, None
            return
        yield status, worklist_response(request, item)


def dispatch_find(event: Event, context: GatewayContext) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """The EVT_C_FIND handler: worklist queries here, Patient/Study Root to ``handle_find``.

    pynetdicom keeps one handler per intervention event, so the two C-FIND
    services share this entry point and split on the presentation context's
    SOP class. Statuses are those of ``handle_worklist`` and ``handle_find``.
    """
    if str(event.context.abstract_syntax) == MODALITY_WORKLIST_FIND:
        return handle_worklist(event, context)
    return handle_find(event, context)
