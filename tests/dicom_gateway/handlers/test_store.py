"""C-STORE SCP edge cases, driven by a pynetdicom SCU."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_context
from pynetdicom import _config as pynetdicom_config
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

from dicom_gateway.handlers.store import STORE_STATUSES
from teleconsult.domain.studies import StudyQuery
from tests.conftest import RunningGateway
from tests.factories import CT_IMAGE, TWELVE_LEAD_ECG, US_IMAGE, make_ecg, make_image, part10


def _associate(gateway: RunningGateway, calling: str = "TOWNUS", contexts=None):  # type: ignore[no-untyped-def]
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    for context in contexts or [build_context(US_IMAGE, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]:
        ae.add_requested_context(context.abstract_syntax, context.transfer_syntax)
    return ae.associate("127.0.0.1", gateway.port, ae_title=gateway.settings.ae_title)


def test_every_status_the_handler_returns_is_a_storage_status() -> None:
    for code in STORE_STATUSES:
        if code == 0x0000:
            continue
        listed = code in STORAGE_SERVICE_CLASS_STATUS or any(
            (code & 0xFF00) == (known & 0xFF00) for known in STORAGE_SERVICE_CLASS_STATUS if known >= 0xA000
        )
        assert listed, f"0x{code:04X} is not a C-STORE status"
    assert all(0xA000 <= code <= 0xCFFF for code in STORE_STATUSES if code)


def test_store_and_echo_over_one_association(gateway: RunningGateway, bus) -> None:  # type: ignore[no-untyped-def]
    contexts = [
        build_context(US_IMAGE, ExplicitVRLittleEndian),
        build_context(TWELVE_LEAD_ECG, ExplicitVRLittleEndian),
        build_context("1.2.840.10008.1.1"),
    ]
    assoc = _associate(gateway, contexts=contexts)
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        image, ecg = make_image(), make_ecg()
        assert assoc.send_c_store(image).Status == 0x0000
        assert assoc.send_c_store(ecg).Status == 0x0000
    finally:
        assoc.release()
    assert gateway.store.index.instance(image.SOPInstanceUID).calling_ae_title == "TOWNUS"
    assert gateway.store.index.instance(ecg.SOPInstanceUID).source_organisation == "TOWN01"
    assert len(bus.events) == 2
    (study,) = gateway.store.index.find_studies(StudyQuery(patient_name="李*"))
    assert study.study_instance_uid == ecg.StudyInstanceUID
    assert study.patient_name == "Li^Hua=李^华"


def test_unknown_calling_ae_is_rejected(gateway: RunningGateway) -> None:
    assoc = _associate(gateway, calling="STRANGER")
    assert assoc.is_rejected
    assert gateway.store.index.counts()["instances"] == 0


def test_wrong_called_ae_is_rejected(gateway: RunningGateway) -> None:
    ae = AE(ae_title="TOWNUS")
    ae.add_requested_context(US_IMAGE)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title="NOTUS")
    assert assoc.is_rejected


def test_open_mode_accepts_unknown_calling_ae(start) -> None:  # type: ignore[no-untyped-def]
    gateway = start(dicom_accept_unknown=True, dicom_unknown_organisation="OPEN")
    assoc = _associate(gateway, calling="STRANGER")
    assert assoc.is_established
    ds = make_image()
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    assert gateway.store.index.instance(ds.SOPInstanceUID).source_organisation == "OPEN"


def test_association_limit_rejects_transiently(start) -> None:  # type: ignore[no-untyped-def]
    gateway = start(dicom_max_associations=1)
    first = _associate(gateway)
    try:
        assert first.is_established
        second = _associate(gateway)
        assert second.is_rejected
        assert second.acceptor.primitive.result == 0x02  # rejected-transient
    finally:
        first.release()


def test_data_set_of_another_sop_class_gets_a900(
    gateway: RunningGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A confused device sends a CT data set on the Ultrasound context; in
    # chunked mode pynetdicom takes the SOP class from the File Meta only.
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    path = tmp_path / "claims-us.dcm"
    path.write_bytes(part10(make_image(CT_IMAGE), claimed_sop_class_uid=US_IMAGE))
    assoc = _associate(gateway)
    try:
        status = assoc.send_c_store(path)
    finally:
        assoc.release()
    assert status.Status == 0xA900
    assert status.ErrorComment == "Data set SOP Class differs from the negotiated one"
    assert gateway.store.index.counts()["instances"] == 0


def test_invalid_uid_gets_c001_with_comment_and_association_goes_on(gateway: RunningGateway) -> None:
    assoc = _associate(gateway)
    try:
        bad = make_image()
        del bad.SeriesInstanceUID
        status = assoc.send_c_store(bad)
        assert status.Status == 0xC001
        assert "Series Instance UID is missing" in status.ErrorComment
        assert len(status.ErrorComment) <= 64
        good = make_image()
        assert assoc.send_c_store(good).Status == 0x0000
    finally:
        assoc.release()
    assert gateway.store.index.counts()["instances"] == 1


def test_aborted_transfer_indexes_nothing_and_others_carry_on(gateway: RunningGateway) -> None:
    """A peer that drops mid data set leaves no file, no row, no stuck thread."""
    port = gateway.port
    big = make_image(rows=512, columns=512)
    assoc = _associate(gateway)
    assert assoc.is_established
    # send only the A-ASSOCIATE-RQ and the first P-DATA fragment, then reset
    raw = socket.create_connection(("127.0.0.1", port))
    raw.sendall(_associate_rq(gateway.settings.ae_title, "TOWNUS"))
    reply = raw.recv(4096)
    assert reply[:1] == b"\x02", "A-ASSOCIATE-AC"
    raw.sendall(b"\x04\x00" + struct.pack(">I", 1000) + b"\x00" * 100)  # a P-DATA-TF cut short
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
    try:
        assert assoc.send_c_store(big).Status == 0x0000
    finally:
        assoc.release()
    assert gateway.store.index.counts()["instances"] == 1
    assert not any((gateway.store.files.root / "tmp").iterdir())


def _associate_rq(called: str, calling: str) -> bytes:
    """A minimal A-ASSOCIATE-RQ proposing US Image Storage, Explicit VR LE."""

    def item(item_type: int, body: bytes) -> bytes:
        return struct.pack(">BxH", item_type, len(body)) + body

    app_context = item(0x10, b"1.2.840.10008.3.1.1.1")
    presentation = item(
        0x20,
        struct.pack(">BxBx", 1, 0)
        + item(0x30, US_IMAGE.encode())
        + item(0x40, ExplicitVRLittleEndian.encode()),
    )
    user = item(0x50, item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.3.4"))
    body = (
        struct.pack(">H2x", 1)
        + called.ljust(16).encode()
        + calling.ljust(16).encode()
        + b"\x00" * 32
        + app_context
        + presentation
        + user
    )
    return struct.pack(">BxI", 0x01, len(body)) + body


def test_parallel_associations_store_one_study(gateway: RunningGateway) -> None:
    study, series = generate_uid(), generate_uid()
    failures: list[str] = []

    def send(seed: int) -> None:
        assoc = _associate(gateway)
        try:
            for i in range(10):
                ds = make_image(study_instance_uid=study, series_instance_uid=series, seed=seed * 100 + i)
                status = assoc.send_c_store(ds)
                if status.Status != 0x0000:
                    failures.append(f"0x{status.Status:04X}")
        finally:
            assoc.release()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert gateway.store.index.counts() == {"patients": 1, "studies": 1, "series": 1, "instances": 40}


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_stored_as_received_in_negotiated_transfer_syntax(gateway: RunningGateway, transfer_syntax) -> None:  # type: ignore[no-untyped-def]
    assoc = _associate(gateway, contexts=[build_context(US_IMAGE, transfer_syntax)])
    ds = make_image()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    assert gateway.store.index.instance(ds.SOPInstanceUID).transfer_syntax_uid == transfer_syntax
