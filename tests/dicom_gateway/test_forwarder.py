"""The forwarder against a pynetdicom storage SCP on loopback standing in for a PACS."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLosslessSV1, generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer

from dicom_gateway.forwarder import Forwarder
from teleconsult.storage.outbox import ForwardStatus
from teleconsult.storage.store import InstanceStore
from tests.factories import encode, make_ecg, make_image

TOWN_DEVICE = {"ae_title": "TOWNUS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"}


@dataclass
class Received:
    calling_ae_title: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    data: bytes


@dataclass
class FakePacs:
    """A storage SCP that records what arrives and answers what the test asks."""

    server: ThreadedAssociationServer
    received: list[Received] = field(default_factory=list)
    associations: int = 0
    statuses: dict[str, int | Dataset] = field(default_factory=dict)
    gate: threading.Event | None = None
    storing: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def start_pacs() -> Iterator[Callable[..., FakePacs]]:
    servers: list[ThreadedAssociationServer] = []

    def _start(
        transfer_syntaxes: tuple[str, ...] = (
            ExplicitVRLittleEndian,
            ImplicitVRLittleEndian,
            JPEGLosslessSV1,
        ),
        require_calling_ae_title: str | None = None,
    ) -> FakePacs:
        ae = AE("PACS")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, list(transfer_syntaxes))
        if require_calling_ae_title is not None:
            ae.require_calling_aet = [require_calling_ae_title]
        pacs: FakePacs

        def on_store(event: Any) -> int | Dataset:
            pacs.storing.set()
            if pacs.gate is not None:
                pacs.gate.wait(10)
            uid = str(event.request.AffectedSOPInstanceUID)
            pacs.received.append(
                Received(
                    event.assoc.requestor.ae_title,
                    uid,
                    str(event.context.transfer_syntax),
                    event.request.DataSet.getvalue(),
                )
            )
            return pacs.statuses.get(uid, 0x0000)

        def on_accepted(_event: Any) -> None:
            pacs.associations += 1

        server = ae.start_server(
            ("127.0.0.1", 0),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_ACCEPTED, on_accepted)],
        )
        assert isinstance(server, ThreadedAssociationServer)
        pacs = FakePacs(server)
        servers.append(server)
        return pacs

    yield _start
    for server in servers:
        server.shutdown()


@pytest.fixture
def open_store(make_settings) -> Iterator[Callable[..., InstanceStore]]:  # type: ignore[no-untyped-def]
    opened: list[InstanceStore] = []

    def _open(pacs_port: int, **overrides: object) -> InstanceStore:
        values: dict[str, object] = {
            "dicom_peers": [
                TOWN_DEVICE,
                {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port, "organisation": "COUNTY"},
            ],
            "dicom_forward_rules": [
                {"name": "county", "from_organisations": ["TOWN01"], "destination": "PACS"}
            ],
            "dicom_forward_stable_seconds": 0,
            "dicom_forward_retry_base_seconds": 5,
        }
        values.update(overrides)
        store = InstanceStore(make_settings(**values))
        store.open()
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


def _put(store: InstanceStore, data: bytes, transfer_syntax_uid: str = ExplicitVRLittleEndian) -> None:
    store.store_instance(data, transfer_syntax_uid, calling_ae_title="TOWNUS", source_organisation="TOWN01")


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _attempts(outcome: str) -> float:
    """``teleconsult_forward_attempts_total`` for ``outcome`` in this process."""
    return REGISTRY.get_sample_value("teleconsult_forward_attempts_total", {"outcome": outcome}) or 0.0


def test_each_study_goes_over_one_association_with_its_bytes_unchanged(
    start_pacs: Callable[..., FakePacs], open_store: Callable[..., InstanceStore]
) -> None:
    pacs = start_pacs()
    store = open_store(pacs.port)
    study = generate_uid()
    sent: dict[str, tuple[bytes, str]] = {}
    for seed in range(3):
        ds = make_image(study_instance_uid=study, seed=seed)
        sent[ds.SOPInstanceUID] = (encode(ds), ExplicitVRLittleEndian)
    # Stored as a JPEG Lossless file would be: it must leave in that syntax.
    compressed = make_image(study_instance_uid=study, seed=7)
    sent[compressed.SOPInstanceUID] = (encode(compressed), JPEGLosslessSV1)
    ecg = make_ecg()
    sent[ecg.SOPInstanceUID] = (encode(ecg, ImplicitVRLittleEndian), ImplicitVRLittleEndian)
    for data, transfer_syntax_uid in sent.values():
        _put(store, data, transfer_syntax_uid)
    forwarder = Forwarder(store.settings, store)

    assert forwarder.run_once() == 4, "the image study first, as one group"
    assert forwarder.run_once() == 1, "then the ECG study"
    assert forwarder.run_once() == 0

    assert pacs.associations == 2
    assert {r.sop_instance_uid: (r.data, r.transfer_syntax_uid) for r in pacs.received} == sent
    assert {r.calling_ae_title for r in pacs.received} == {"TELECONSULT"}
    assert store.outbox.counts() == {"pending": 0, "sending": 0, "sent": 5, "failed": 0}
    assert forwarder.stats == {"associations": 2, "sent": 5, "failures": 0, "gave_up": 0}


def test_warning_counts_as_sent_and_a_failure_is_retried_with_its_reason(
    start_pacs: Callable[..., FakePacs], open_store: Callable[..., InstanceStore]
) -> None:
    pacs = start_pacs()
    store = open_store(pacs.port)
    study = generate_uid()
    coerced, refused, fine = (make_image(study_instance_uid=study, seed=n) for n in range(3))
    failure = Dataset()
    failure.Status = 0xA700
    failure.ErrorComment = "Disk full"
    pacs.statuses = {coerced.SOPInstanceUID: 0xB000, refused.SOPInstanceUID: failure}
    for ds in (coerced, refused, fine):
        _put(store, encode(ds))
    before = datetime.now(UTC)

    sent_before, failed_before = _attempts("sent"), _attempts("failed")

    Forwarder(store.settings, store).run_once()

    assert (_attempts("sent") - sent_before, _attempts("failed") - failed_before) == (2, 1)
    by_uid = {e.sop_instance_uid: e for e in store.outbox.list_entries()}
    assert by_uid[coerced.SOPInstanceUID].status is ForwardStatus.SENT
    assert by_uid[fine.SOPInstanceUID].status is ForwardStatus.SENT
    retried = by_uid[refused.SOPInstanceUID]
    assert retried.status is ForwardStatus.PENDING
    assert retried.attempts == 1
    assert retried.last_error == "C-STORE status 0xA700 (Failure) from PACS: Disk full"
    delay = (retried.next_attempt_at - before).total_seconds()
    assert 5 <= delay < 10, "retry after the base delay"


def test_peer_down_leaves_rows_pending_with_the_reason(
    open_store: Callable[..., InstanceStore],
) -> None:
    store = open_store(_free_port(), dicom_forward_max_attempts=2, dicom_forward_retry_base_seconds=0.05)
    _put(store, encode(make_image()))
    forwarder = Forwarder(store.settings, store)

    forwarder.run_once()
    (entry,) = store.outbox.list_entries()
    assert entry.status is ForwardStatus.PENDING
    assert entry.last_error is not None
    assert entry.last_error.startswith("cannot connect to PACS at 127.0.0.1:")
    _wait_for(lambda: forwarder.run_once() == 1, "the retry to fall due")
    (entry,) = store.outbox.list_entries()
    assert (entry.status, entry.attempts) == (ForwardStatus.FAILED, 2), "max attempts reached"


def test_rejected_association_is_reported(
    start_pacs: Callable[..., FakePacs], open_store: Callable[..., InstanceStore]
) -> None:
    pacs = start_pacs(require_calling_ae_title="SOMEONE")
    store = open_store(pacs.port)
    _put(store, encode(make_image()))

    Forwarder(store.settings, store).run_once()

    (entry,) = store.outbox.list_entries()
    assert entry.status is ForwardStatus.PENDING
    assert entry.last_error is not None
    assert "association rejected by PACS" in entry.last_error
    assert "Calling AE title not recognised" in entry.last_error


def test_peer_taking_only_implicit_vr_gets_uncompressed_files_reencoded_never_compressed_ones(
    start_pacs: Callable[..., FakePacs], open_store: Callable[..., InstanceStore]
) -> None:
    pacs = start_pacs(transfer_syntaxes=(ImplicitVRLittleEndian,))
    store = open_store(pacs.port)
    study = generate_uid()
    plain = make_image(study_instance_uid=study, seed=1)
    compressed = make_image(study_instance_uid=study, seed=2)
    _put(store, encode(plain))
    _put(store, encode(compressed), JPEGLosslessSV1)

    Forwarder(store.settings, store).run_once()

    (received,) = pacs.received
    assert received.transfer_syntax_uid == ImplicitVRLittleEndian
    back = read_dataset(BytesIO(received.data), is_implicit_VR=True, is_little_endian=True)
    assert back.SOPInstanceUID == plain.SOPInstanceUID
    assert back.PixelData == plain.PixelData
    by_uid = {e.sop_instance_uid: e for e in store.outbox.list_entries()}
    assert by_uid[plain.SOPInstanceUID].status is ForwardStatus.SENT
    refused = by_uid[compressed.SOPInstanceUID]
    assert refused.status is ForwardStatus.PENDING
    assert refused.last_error is not None
    assert "accepted no presentation context" in refused.last_error
    assert "never transcoded" in refused.last_error


def test_running_forwarder_delivers_and_stops(
    start_pacs: Callable[..., FakePacs], open_store: Callable[..., InstanceStore]
) -> None:
    pacs = start_pacs()
    store = open_store(pacs.port, dicom_forward_workers=2, dicom_forward_stable_seconds=0.1)
    forwarder = Forwarder(store.settings, store)
    forwarder.start()
    try:
        uids = []
        for _ in range(3):
            study = generate_uid()
            for seed in range(2):
                ds = make_image(study_instance_uid=study, seed=seed)
                uids.append(ds.SOPInstanceUID)
                _put(store, encode(ds))
        _wait_for(lambda: store.outbox.counts()["sent"] == 6, "every row sent")
    finally:
        forwarder.stop()
    assert not any(t.name.startswith("forwarder-") and t.is_alive() for t in threading.enumerate())
    assert sorted(r.sop_instance_uid for r in pacs.received) == sorted(uids), "each instance once"
    # One association per study, or more when a slow machine let a study look
    # stable between its two instances: never fewer.
    assert pacs.associations >= 3


def test_stop_gives_the_rest_of_a_claim_back_unsent(
    start_pacs: Callable[..., FakePacs], open_store: Callable[..., InstanceStore]
) -> None:
    pacs = start_pacs()
    pacs.gate = threading.Event()
    store = open_store(pacs.port)
    study = generate_uid()
    for seed in range(4):
        _put(store, encode(make_image(study_instance_uid=study, seed=seed)))
    forwarder = Forwarder(store.settings, store)
    sending = threading.Thread(target=forwarder.run_once)
    sending.start()
    _wait_for(pacs.storing.is_set, "the first C-STORE")
    forwarder.stop()  # while the peer holds the first C-STORE
    pacs.gate.set()
    sending.join(30)

    assert len(pacs.received) == 1
    counts = store.outbox.counts()
    assert (counts["sent"], counts["pending"]) == (1, 3)
    assert all(e.attempts == 0 and e.last_error is None for e in store.outbox.list_entries(status="pending"))


def test_start_reclaims_rows_a_crashed_forwarder_left_sending(
    start_pacs: Callable[..., FakePacs], open_store: Callable[..., InstanceStore]
) -> None:
    pacs = start_pacs()
    store = open_store(pacs.port)
    _put(store, encode(make_image()))
    (claimed,) = store.outbox.claim("crashed-host:1:dead/0")
    # its last sign of life was ten minutes ago
    store.outbox.touch("crashed-host:1:dead/0", now=datetime.now(UTC) - timedelta(minutes=10))
    forwarder = Forwarder(store.settings, store, reclaim_after_seconds=300)
    forwarder.start()
    try:
        _wait_for(lambda: store.outbox.counts()["sent"] == 1, "the reclaimed row to be sent")
    finally:
        forwarder.stop()
    assert [r.sop_instance_uid for r in pacs.received] == [claimed.sop_instance_uid]
