"""Storage commitment checks and statuses that a real peer exercises only partly."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.status import STORAGE_COMMITMENT_SERVICE_CLASS_STATUS

from dicom_gateway.handlers.commitment import (
    FAILURE_REASONS,
    N_ACTION_STATUSES,
    STORAGE_COMMITMENT_PUSH_MODEL,
    CommitmentError,
    CommitmentRequest,
    check_commitment,
    parse_action_information,
)
from teleconsult.errors import IndexUnavailableError
from teleconsult.storage.store import InstanceStore
from tests.factories import CT_IMAGE, US_IMAGE, encode, make_image

DOC = Path(__file__).resolve().parents[3] / "docs" / "conformance.md"


def _information(transaction_uid: str | None, references: list[tuple[str, str]] | None) -> Dataset:
    ds = Dataset()
    if transaction_uid is not None:
        ds.TransactionUID = transaction_uid
    if references is not None:
        ds.ReferencedSOPSequence = []
        for sop_class_uid, sop_instance_uid in references:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class_uid
            item.ReferencedSOPInstanceUID = sop_instance_uid
            ds.ReferencedSOPSequence.append(item)
    return ds


def test_parse_reads_transaction_and_references() -> None:
    transaction = generate_uid()
    references = [(US_IMAGE, generate_uid()), (CT_IMAGE, generate_uid())]
    request = parse_action_information(_information(transaction, references))
    assert request == CommitmentRequest(transaction, tuple(references))


@pytest.mark.parametrize(
    "information",
    [
        None,
        _information(None, [(US_IMAGE, "1.2.3")]),
        _information("1.2.3", None),
        _information("1.2.3", []),
        _information("1.2.3", [(US_IMAGE, "")]),
        _information("1.2.3", [("", "1.2.3.4")]),
    ],
)
def test_parse_refuses_with_invalid_argument_value(information: Dataset | None) -> None:
    with pytest.raises(CommitmentError) as refused:
        parse_action_information(information)
    assert refused.value.status == 0x0115


def test_parse_refuses_a_malformed_uid() -> None:
    information = _information("1.2.3", [(US_IMAGE, "1.2.3")])
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        information.ReferencedSOPSequence[0].ReferencedSOPInstanceUID = "1.2.03"
    with pytest.raises(CommitmentError, match="not a valid UID"):
        parse_action_information(information)


def _stored(store: InstanceStore, seed: int) -> tuple[str, str]:
    ds = make_image(seed=seed)
    store.store_instance(encode(ds), ExplicitVRLittleEndian, calling_ae_title="T", source_organisation="T")
    return US_IMAGE, str(ds.SOPInstanceUID)


def test_check_commitment_failure_reasons(store: InstanceStore) -> None:
    intact, corrupted, missing, wrong_class = (_stored(store, seed) for seed in range(4))
    unknown = (US_IMAGE, generate_uid())
    for reference, damage in ((corrupted, "flip"), (missing, "delete")):
        record = store.index.instance(reference[1])
        assert record is not None
        path = store.files.path(record.file_key)
        if damage == "delete":
            path.unlink()
        else:
            data = bytearray(path.read_bytes())
            data[-1] ^= 0x01  # in the data set, past the File Meta
            path.write_bytes(bytes(data))
    references = (intact, corrupted, missing, (CT_IMAGE, wrong_class[1]), unknown)

    result = check_commitment(store, CommitmentRequest("1.2.3", references))

    assert result.committed == (intact,)
    assert {uid: reason for _, uid, reason in result.failed} == {
        corrupted[1]: 0x0110,
        missing[1]: 0x0110,
        wrong_class[1]: 0x0119,
        unknown[1]: 0x0112,
    }
    assert result.event_type == 2
    info = result.event_information("TELECONSULT")
    assert info.TransactionUID == "1.2.3"
    assert [item.ReferencedSOPInstanceUID for item in info.ReferencedSOPSequence] == [intact[1]]
    assert [item.FailureReason for item in info.FailedSOPSequence] == [0x0110, 0x0110, 0x0119, 0x0112]
    assert info.FailedSOPSequence[2].ReferencedSOPClassUID == CT_IMAGE  # as the device asked


def test_all_committed_is_event_type_1_without_failed_sequence(store: InstanceStore) -> None:
    references = tuple(_stored(store, seed) for seed in range(2))
    result = check_commitment(store, CommitmentRequest("1.2.3", references))
    assert result.event_type == 1
    info = result.event_information("TELECONSULT")
    assert "FailedSOPSequence" not in info
    assert info.RetrieveAETitle == "TELECONSULT"


def test_instances_outside_the_scope_are_not_stored_for_the_requester(store: InstanceStore) -> None:
    mine = _stored(store, 0)  # stored with source organisation "T"
    result = check_commitment(store, CommitmentRequest("1.2.3", (mine,)), organisations=["TOWN01"])
    assert result.failed == ((*mine, 0x0112),)
    assert check_commitment(store, CommitmentRequest("1.2.3", (mine,)), organisations=["T"]).committed == (
        mine,
    )


def test_index_unavailable_is_processing_failure() -> None:
    def unavailable(_uid: str) -> Any:
        raise IndexUnavailableError("the index cannot be reached; retry later")

    store: Any = SimpleNamespace(index=SimpleNamespace(instance=unavailable))
    result = check_commitment(store, CommitmentRequest("1.2.3", ((US_IMAGE, "1.2.3.4"),)))
    assert result.failed == ((US_IMAGE, "1.2.3.4", 0x0110),)


def _section(text: str, title: str) -> str:
    """The conformance statement's "## N. <title> ..." section, up to the next one."""
    match = re.search(rf"^## \d+\. {re.escape(title)}.*?(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match is not None, f"no section {title!r} in {DOC}"
    return match.group(0)


def test_statuses_are_storage_commitment_statuses_and_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = _section(text, "Storage Commitment")
    for code in N_ACTION_STATUSES:
        assert code in STORAGE_COMMITMENT_SERVICE_CLASS_STATUS, hex(code)
        assert f"0x{code:04X}" in section, hex(code)
    for reason in FAILURE_REASONS:
        assert f"0x{reason:04X}" in section, hex(reason)
    assert f"`{STORAGE_COMMITMENT_PUSH_MODEL}`" in text
