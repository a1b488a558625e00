"""The conformance statement lists exactly what the gateway accepts."""

from __future__ import annotations

import re
from pathlib import Path

from dicom_gateway.handlers.find import FIND_STATUSES
from dicom_gateway.handlers.get import GET_STATUSES
from dicom_gateway.handlers.move import MOVE_STATUSES
from dicom_gateway.handlers.store import STORE_STATUSES
from dicom_gateway.query import QUERY_RETRIEVE_SOP_CLASSES
from dicom_gateway.sop_classes import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"


def test_every_accepted_sop_class_and_transfer_syntax_is_documented() -> None:
    listed = set(re.findall(r"`([0-9.]+)`", DOC.read_text(encoding="utf-8")))
    assert set(STORAGE_SOP_CLASSES) <= listed
    assert set(TRANSFER_SYNTAXES) <= listed
    assert set(QUERY_RETRIEVE_SOP_CLASSES) <= listed


def test_every_store_status_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for status in (*STORE_STATUSES, *FIND_STATUSES, *MOVE_STATUSES, *GET_STATUSES):
        assert f"0x{status:04X}" in text
