"""Storage Commitment Push Model with a real requester: may the device delete its copy?

The device is pynetdicom: DCMTK 3.6.7 has no storage commitment SCU. It stores
with DCMTK storescu, requests commitment as SCU and runs a small SCP of its
own, so the report can come on the requesting association or on a new one.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import N_EVENT_REPORT_RSP
from pynetdicom.transport import ThreadedAssociationServer

from dicom_gateway.handlers import commitment
from dicom_gateway.handlers.commitment import STORAGE_COMMITMENT_PUSH_MODEL as PUSH_MODEL
from dicom_gateway.handlers.commitment import STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE as PUSH_INSTANCE
from dicom_gateway.sockets import set_no_delay
from tests.conftest import RunningGateway, require_tool
from tests.factories import CT_IMAGE, US_IMAGE, make_image, write_part10

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
DEVICE = "MODALITY"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Report:
    where: str  # "association" (the requesting one) or "server" (a new one)
    event_type: int | None
    information: Dataset
    calling_ae_title: str


class Device:
    """A township device: Storage Commitment SCU that also accepts the report on its own SCP."""

    def __init__(self) -> None:
        self.reports: queue.Queue[Report] = queue.Queue()
        self._answering: dict[int, list[Report]] = {}
        self._lock = threading.Lock()
        self.ae = AE(ae_title=DEVICE)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 30
        self.ae.add_requested_context(PUSH_MODEL, [ExplicitVRLittleEndian])
        # The gateway proposes the SCP role when it connects to report.
        self.ae.add_supported_context(
            PUSH_MODEL, [ExplicitVRLittleEndian, ImplicitVRLittleEndian], scu_role=True, scp_role=True
        )
        self.server: ThreadedAssociationServer | None = None

    def _on_report(self, event: Any, where: str) -> tuple[int, None]:
        # Handed to the test once the response has gone (_on_sent): a test that releases as soon as
        # it has its report would otherwise race pynetdicom's sending of that response (Evt9 in Sta7).
        with self._lock:
            self._answering.setdefault(id(event.assoc), []).append(
                Report(where, event.event_type, event.event_information, event.assoc.requestor.ae_title)
            )
        return 0x0000, None

    def _on_sent(self, event: Any) -> None:
        if isinstance(event.message, N_EVENT_REPORT_RSP):
            with self._lock:
                self.reports.put(self._answering[id(event.assoc)].pop(0))

    def serve(self, port: int = 0) -> int:
        handlers = [
            (evt.EVT_N_EVENT_REPORT, self._on_report, ["server"]),
            (evt.EVT_DIMSE_SENT, self._on_sent),
            (evt.EVT_CONN_OPEN, set_no_delay),
        ]
        server = self.ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
        assert isinstance(server, ThreadedAssociationServer)
        self.server = server
        return int(server.server_address[1])

    def associate(self, port: int) -> Association:
        handlers = [
            (evt.EVT_N_EVENT_REPORT, self._on_report, ["association"]),
            (evt.EVT_DIMSE_SENT, self._on_sent),
            (evt.EVT_CONN_OPEN, set_no_delay),
        ]
        assoc = self.ae.associate("127.0.0.1", port, ae_title="TELECONSULT", evt_handlers=handlers)
        assert assoc.is_established
        return assoc

    def request(
        self,
        assoc: Association,
        references: list[tuple[str, str]],
        transaction_uid: str,
        *,
        action_type: int = 1,
        instance_uid: str = PUSH_INSTANCE,
    ) -> int:
        ds = Dataset()
        ds.TransactionUID = transaction_uid
        ds.ReferencedSOPSequence = []
        for sop_class_uid, sop_instance_uid in references:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class_uid
            item.ReferencedSOPInstanceUID = sop_instance_uid
            ds.ReferencedSOPSequence.append(item)
        status, _ = assoc.send_n_action(ds, action_type, PUSH_MODEL, instance_uid)
        return int(status.Status)

    def report(self, timeout: float = 30) -> Report:
        return self.reports.get(timeout=timeout)

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.shutdown()
        self.ae.shutdown()


@pytest.fixture
def device() -> Iterator[Device]:
    instance = Device()
    yield instance
    instance.shutdown()


def _gateway(start: Any, device_port: int, **overrides: Any) -> RunningGateway:
    peers = [{"ae_title": DEVICE, "host": "127.0.0.1", "port": device_port, "organisation": "TOWN01"}]
    return start(dicom_peers=peers, **overrides)  # type: ignore[no-any-return]


def _store_with_storescu(gateway: RunningGateway, folder: Path, count: int) -> list[tuple[str, str]]:
    """Store ``count`` ultrasound images as the device does; return their (class, instance) UIDs."""
    folder.mkdir()
    study = generate_uid()
    references = []
    paths = []
    for number in range(count):
        ds = make_image(US_IMAGE, study_instance_uid=study, seed=number)
        paths.append(str(write_part10(ds, folder / f"{number}.dcm")))
        references.append((US_IMAGE, str(ds.SOPInstanceUID)))
    result = subprocess.run(
        [
            require_tool("storescu"),
            "-aet",
            DEVICE,
            "-aec",
            "TELECONSULT",
            "127.0.0.1",
            str(gateway.port),
            *paths,
        ],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for _, sop_instance_uid in references:
        assert gateway.store.index.instance(sop_instance_uid) is not None
    return references


def _wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in caplog.text:
        assert time.monotonic() < deadline, f"no log line {text!r} in:\n{caplog.text}"
        time.sleep(0.05)


def _uids(sequence: Any) -> list[tuple[str, str]]:
    return [(str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID)) for item in sequence]


def test_report_on_the_requesting_association(
    start: Any, device: Device, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dicom_gateway")
    gateway = _gateway(start, device.serve())
    stored = _store_with_storescu(gateway, tmp_path / "study", 3)
    unknown = (US_IMAGE, generate_uid())
    transaction = generate_uid()

    assoc = device.associate(gateway.port)
    try:
        assert device.request(assoc, [*stored, unknown], transaction) == 0x0000
        report = device.report()  # the device keeps the association open for it
    finally:
        assoc.release()

    assert report.where == "association"
    assert report.event_type == 2  # some failed
    info = report.information
    assert info.TransactionUID == transaction
    assert info.RetrieveAETitle == "TELECONSULT"
    assert _uids(info.ReferencedSOPSequence) == stored
    (failed,) = info.FailedSOPSequence
    assert _uids([failed]) == [unknown]
    assert failed.FailureReason == 0x0112
    assert device.reports.empty()
    # logged by the gateway once the device has answered: may come a moment after the report
    _wait_for_log(
        caplog, f"storage commitment report {transaction} sent to {DEVICE} on the requesting association"
    )


def test_two_requests_on_one_association_get_two_reports_on_it(
    start: Any, device: Device, tmp_path: Path
) -> None:
    gateway = _gateway(start, device.serve())
    first, second = _store_with_storescu(gateway, tmp_path / "study", 2)
    transactions = [generate_uid(), generate_uid()]

    assoc = device.associate(gateway.port)
    try:
        assert device.request(assoc, [first], transactions[0]) == 0x0000
        assert device.request(assoc, [second], transactions[1]) == 0x0000  # series by series
        reports = [device.report(), device.report()]
    finally:
        assoc.release()

    assert {report.where for report in reports} == {"association"}
    by_transaction = {str(report.information.TransactionUID): report for report in reports}
    assert set(by_transaction) == set(transactions)
    assert _uids(by_transaction[transactions[0]].information.ReferencedSOPSequence) == [first]
    assert _uids(by_transaction[transactions[1]].information.ReferencedSOPSequence) == [second]


def test_report_on_a_new_association_when_the_device_releases(
    start: Any, device: Device, tmp_path: Path
) -> None:
    gateway = _gateway(start, device.serve())
    stored = _store_with_storescu(gateway, tmp_path / "study", 2)
    transaction = generate_uid()

    assoc = device.associate(gateway.port)
    assert device.request(assoc, stored, transaction) == 0x0000
    assoc.release()  # a typical device: it waits for the report on its own SCP
    report = device.report()

    assert report.where == "server"
    assert report.calling_ae_title == "TELECONSULT"
    assert report.event_type == 1  # all committed
    assert report.information.TransactionUID == transaction
    assert _uids(report.information.ReferencedSOPSequence) == stored
    assert "FailedSOPSequence" not in report.information


def test_corrupted_file_and_wrong_sop_class_are_not_committed(
    start: Any, device: Device, tmp_path: Path
) -> None:
    gateway = _gateway(start, device.serve())
    intact, corrupted, other = _store_with_storescu(gateway, tmp_path / "study", 3)
    record = gateway.store.index.instance(corrupted[1])
    assert record is not None
    path = gateway.store.files.path(record.file_key)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit of pixel data: the file no longer matches its SHA-256
    path.write_bytes(bytes(data))

    assoc = device.associate(gateway.port)
    try:
        assert device.request(assoc, [intact, corrupted, (CT_IMAGE, other[1])], generate_uid()) == 0x0000
        report = device.report()
    finally:
        assoc.release()

    assert report.event_type == 2
    assert _uids(report.information.ReferencedSOPSequence) == [intact]
    reasons = {
        str(item.ReferencedSOPInstanceUID): item.FailureReason
        for item in report.information.FailedSOPSequence
    }
    assert reasons == {corrupted[1]: 0x0110, other[1]: 0x0119}


def test_unreachable_device_is_retried(
    start: Any,
    device: Device,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(commitment, "RETRY_DELAYS", (0.5, 5.0, 5.0))
    caplog.set_level(logging.WARNING, logger="dicom_gateway.handlers.commitment")
    port = _free_port()  # nothing listens there yet: the device is "switched off"
    gateway = _gateway(start, port)
    stored = _store_with_storescu(gateway, tmp_path / "study", 1)
    transaction = generate_uid()

    assoc = device.associate(gateway.port)
    assert device.request(assoc, stored, transaction) == 0x0000
    assoc.release()
    _wait_for_log(caplog, "not delivered (attempt 1); next in 0.5 s")
    device.serve(port)  # the device comes back

    report = device.report()
    assert report.where == "server"
    assert report.event_type == 1
    assert report.information.TransactionUID == transaction


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"action_type": 2}, 0x0123),  # no such action
        ({"instance_uid": "1.2.840.10008.1.20.1.2"}, 0x0117),  # not the well-known instance
        ({"transaction_uid": ""}, 0x0115),  # invalid argument value
        ({"references": []}, 0x0115),
        ({"references": [(US_IMAGE, "")]}, 0x0115),
    ],
)
def test_invalid_requests_are_refused(
    start: Any, device: Device, change: dict[str, Any], status: int
) -> None:
    gateway = _gateway(start, device.serve())
    request: dict[str, Any] = {"references": [(US_IMAGE, generate_uid())], "transaction_uid": generate_uid()}
    request.update(change)
    assoc = device.associate(gateway.port)
    try:
        references = request.pop("references")
        transaction_uid = request.pop("transaction_uid")
        assert device.request(assoc, references, transaction_uid, **request) == status
    finally:
        assoc.release()
    with pytest.raises(queue.Empty):
        device.report(timeout=0.5)


def test_unknown_calling_ae_in_open_mode_is_refused(start: Any, device: Device) -> None:
    gateway = start(dicom_accept_unknown=True)  # MODALITY is not a configured peer
    assoc = device.associate(gateway.port)
    try:
        assert device.request(assoc, [(US_IMAGE, generate_uid())], generate_uid()) == 0x0124
    finally:
        assoc.release()
