"""Per-peer query scope along the organisation tree, and the DICOM side of the audit trail.

Real peers (DCMTK findscu, movescu, getscu, storescu, echoscu) against the
gateway on loopback; pynetdicom where a test needs an abort.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from sqlalchemy.exc import OperationalError

from dicom_gateway.ae import GatewayContext
from teleconsult.audit import AuditLog
from teleconsult.errors import IndexUnavailableError
from teleconsult.storage.identity import IdentityStore
from tests.conftest import COMMUNITY, RunningGateway, require_tool
from tests.factories import US_IMAGE, encode, make_image, write_part10

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}

STUDY_TOWN01 = generate_uid()
STUDY_TOWN02 = generate_uid()
STUDY_VILLAGE21 = generate_uid()
STUDY_TOWN09 = generate_uid()  # an organisation missing from the tree
STUDIES = {
    STUDY_TOWN01: ("TOWN01", "P1"),
    STUDY_TOWN02: ("TOWN02", "P2"),
    STUDY_VILLAGE21: ("VILLAGE21", "P3"),
    STUDY_TOWN09: ("TOWN09", "P9"),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def move_port() -> int:
    return _free_port()


def _peers(move_port: int) -> list[dict[str, Any]]:
    return [
        {"ae_title": "TOWN01PACS", "host": "127.0.0.1", "port": move_port, "organisation": "TOWN01"},
        {"ae_title": "TOWN02PACS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN02"},
        {"ae_title": "COUNTYPACS", "host": "127.0.0.1", "port": 104, "organisation": "COUNTY"},
        {"ae_title": "TOWN09PACS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN09"},
        {"ae_title": "TOWNUS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"},
    ]


def _community(gateway: RunningGateway) -> None:
    identity = IdentityStore(gateway.store.index.engine)
    for code, name, parent in COMMUNITY:
        identity.add_organisation(code, name, parent)
    for study_uid, (organisation, patient_id) in STUDIES.items():
        ds = make_image(patient_id=patient_id, study_instance_uid=study_uid, charset="ISO_IR 192")
        gateway.store.store_instance(
            encode(ds), ExplicitVRLittleEndian, calling_ae_title="X", source_organisation=organisation
        )


@pytest.fixture
def gateway(start: Callable[..., RunningGateway], move_port: int) -> RunningGateway:
    running = start(dicom_peers=_peers(move_port))
    _community(running)
    return running


def _audit(gateway: RunningGateway, *, wait_for: int = 0, **filters: Any) -> list[dict[str, Any]]:
    """Audit rows, newest first; ``wait_for`` rows at least, as the gateway writes some after
    the peer is gone (at release, after a refusal) and queries' and retrieves' on a writer
    thread after their final response."""
    deadline = time.monotonic() + 10
    while True:
        rows = AuditLog(gateway.store.index.engine).query(limit=1000, **filters)
        if len(rows) >= wait_for or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=DCMTK_ENV, capture_output=True, text=True, timeout=120, check=False)


def _find(gateway: RunningGateway, out: Path, ae_title: str, *keys: str) -> set[str]:
    out.mkdir()
    args = [require_tool("findscu"), "-S", "-aet", ae_title, "-aec", "TELECONSULT", "-X", "-od", str(out)]
    for key in ("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID", *keys):
        args += ["-k", key]
    result = _run([*args, "127.0.0.1", str(gateway.port)])
    assert result.returncode == 0, result.stderr
    return {str(dcmread(path).StudyInstanceUID) for path in out.glob("rsp*.dcm")}


def _move(gateway: RunningGateway, out: Path, ae_title: str, move_port: int, study_uid: str) -> list[Path]:
    out.mkdir()
    result = _run(
        [
            require_tool("movescu"),
            "-S",
            "-aet",
            ae_title,
            "-aem",
            ae_title,
            "-aec",
            "TELECONSULT",
            "--port",
            str(move_port),
            "-od",
            str(out),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_uid}",
            "127.0.0.1",
            str(gateway.port),
        ]
    )
    assert result.returncode == 0, result.stderr
    return list(out.iterdir())


def _get(gateway: RunningGateway, out: Path, ae_title: str, study_uid: str) -> list[Path]:
    out.mkdir()
    result = _run(
        [
            require_tool("getscu"),
            "-S",
            "-aet",
            ae_title,
            "-aec",
            "TELECONSULT",
            "-od",
            str(out),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_uid}",
            "127.0.0.1",
            str(gateway.port),
        ]
    )
    assert result.returncode == 0, result.stderr
    return list(out.iterdir())


# -- scope ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ae_title", "expected"),
    [
        ("TOWN01PACS", {STUDY_TOWN01}),
        ("TOWN02PACS", {STUDY_TOWN02, STUDY_VILLAGE21}),  # the village is under the township
        ("COUNTYPACS", {STUDY_TOWN01, STUDY_TOWN02, STUDY_VILLAGE21}),
        ("TOWN09PACS", {STUDY_TOWN09}),  # not in the tree: itself only
    ],
)
def test_c_find_sees_the_peers_branch_of_the_tree(
    gateway: RunningGateway, tmp_path: Path, ae_title: str, expected: set[str]
) -> None:
    assert _find(gateway, tmp_path / "find", ae_title) == expected
    (row,) = _audit(gateway, actor=ae_title, wait_for=1)
    assert (row["action"], row["outcome"], row["interface"]) == ("query", "success", "dicom")
    assert row["resource"] == "C-FIND STUDY 1.2.840.10008.5.1.4.1.2.2.1"
    assert row["detail"].startswith(f"STUDY level, {len(expected)} matches; keys: ")
    assert row["actor_organisation"] == dict((p["ae_title"], p["organisation"]) for p in _peers(0))[ae_title]
    assert row["source_address"] == "127.0.0.1"


def test_c_find_for_another_townships_study_is_absent_and_denied(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    assert _find(gateway, tmp_path / "find", "TOWN01PACS", f"StudyInstanceUID={STUDY_TOWN02}") == set()
    (row,) = _audit(gateway, actor="TOWN01PACS", wait_for=1)
    assert row["outcome"] == "denied"
    assert row["study_instance_uid"] == STUDY_TOWN02
    assert row["patient_id"] is None  # nothing of TOWN02's patient lands in TOWN01's trail
    assert f"StudyInstanceUID={STUDY_TOWN02}" in row["detail"]
    # A query that names a patient is on record with the patient.
    assert _find(gateway, tmp_path / "find2", "TOWN01PACS", "PatientID=P1") == {STUDY_TOWN01}
    latest = _audit(gateway, actor="TOWN01PACS", wait_for=2)[0]
    assert (latest["outcome"], latest["patient_id"]) == ("success", "P1")


def test_c_move_and_c_get_of_another_townships_study_send_nothing_and_are_denied(
    gateway: RunningGateway, tmp_path: Path, move_port: int
) -> None:
    assert _move(gateway, tmp_path / "moved", "TOWN01PACS", move_port, STUDY_TOWN02) == []
    assert _get(gateway, tmp_path / "got", "TOWN01PACS", STUDY_TOWN02) == []
    rows = _audit(gateway, actor="TOWN01PACS", wait_for=2)
    assert [(row["action"], row["outcome"], row["resource"].split(" ")[0]) for row in rows] == [
        ("retrieve", "denied", "C-GET"),
        ("retrieve", "denied", "C-MOVE"),
    ]
    for row in rows:
        assert row["study_instance_uid"] == STUDY_TOWN02
        assert row["patient_id"] is None
        assert "0 sent" in row["detail"]
        assert "outside the peer's scope" in row["detail"]


def test_c_move_and_c_get_within_scope_are_audited_with_the_study(
    gateway: RunningGateway, tmp_path: Path, move_port: int
) -> None:
    assert len(_move(gateway, tmp_path / "moved", "TOWN01PACS", move_port, STUDY_TOWN01)) == 1
    assert len(_get(gateway, tmp_path / "got", "COUNTYPACS", STUDY_VILLAGE21)) == 1
    (moved,) = _audit(gateway, actor="TOWN01PACS", wait_for=1)
    assert (moved["action"], moved["outcome"], moved["study_instance_uid"], moved["patient_id"]) == (
        "retrieve",
        "success",
        STUDY_TOWN01,
        "P1",
    )
    assert moved["resource"] == "C-MOVE STUDY 1.2.840.10008.5.1.4.1.2.2.2"
    assert moved["detail"] == (
        f"final status 0x0000 to TOWN01PACS: 1 sent, 0 failed, 0 with warnings; studies={STUDY_TOWN01}"
    )
    (got,) = _audit(gateway, actor="COUNTYPACS", wait_for=1)
    assert (got["outcome"], got["study_instance_uid"], got["patient_id"]) == (
        "success",
        STUDY_VILLAGE21,
        "P3",
    )


# -- associations ---------------------------------------------------------------------------------


def test_refused_associations_are_audited(gateway: RunningGateway) -> None:
    echoscu = require_tool("echoscu")
    unknown = _run([echoscu, "-aet", "NOBODY", "-aec", "TELECONSULT", "127.0.0.1", str(gateway.port)])
    assert unknown.returncode != 0
    wrong_called = _run([echoscu, "-aet", "TOWNUS", "-aec", "ELSEWHERE", "127.0.0.1", str(gateway.port)])
    assert wrong_called.returncode != 0
    (nobody,) = _audit(gateway, actor="NOBODY", wait_for=1)
    assert (nobody["action"], nobody["outcome"], nobody["resource"]) == (
        "association",
        "denied",
        "A-ASSOCIATE",
    )
    assert nobody["actor_organisation"] is None
    assert "calling AE title not recognised" in nobody["detail"]
    (town,) = _audit(gateway, actor="TOWNUS", wait_for=1)
    assert (town["outcome"], town["actor_organisation"]) == ("denied", "TOWN01")
    assert "'ELSEWHERE' not recognised" in town["detail"]


def test_open_mode_unknown_peer_sees_nothing(start: Callable[..., RunningGateway], tmp_path: Path) -> None:
    running = start(dicom_accept_unknown=True)
    _community(running)
    assert _find(running, tmp_path / "find", "STRANGER") == set()
    (row,) = _audit(running, actor="STRANGER")
    assert (row["outcome"], row["actor_organisation"]) == ("success", "UNKNOWN")


# -- C-STORE: one record per study and association ------------------------------------------------


def test_stores_are_summed_up_per_study_when_the_association_ends(
    gateway: RunningGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions: list[int] = []
    record_many = AuditLog.record_many

    def counting(self: AuditLog, events: Any) -> None:
        events = list(events)
        transactions.append(len(events))
        record_many(self, events)

    monkeypatch.setattr(AuditLog, "record_many", counting)
    first, second = generate_uid(), generate_uid()
    files = []
    for number in range(6):
        study = first if number < 4 else second
        ds = make_image(patient_id="P1" if study == first else "P4", study_instance_uid=study, seed=number)
        files.append(str(write_part10(ds, tmp_path / f"{number}.dcm")))
    result = _run(
        [
            require_tool("storescu"),
            "-aet",
            "TOWNUS",
            "-aec",
            "TELECONSULT",
            "127.0.0.1",
            str(gateway.port),
            *files,
        ]
    )
    assert result.returncode == 0, result.stderr
    rows = _audit(gateway, actor="TOWNUS", wait_for=2)
    summary = {(row["study_instance_uid"], row["patient_id"], row["detail"], row["outcome"]) for row in rows}
    assert summary == {
        (first, "P1", "4 instances received; association released", "success"),
        (second, "P4", "2 instances received; association released", "success"),
    }
    assert all(row["action"] == "instance.store" and row["resource"] == "C-STORE" for row in rows)
    assert transactions == [2]  # one transaction for the association, none per instance


def test_an_aborted_association_is_summed_up_too(gateway: RunningGateway) -> None:
    ae = AE(ae_title="TOWNUS")
    ae.add_requested_context(US_IMAGE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title="TELECONSULT")
    assert assoc.is_established
    study = generate_uid()
    for seed in range(2):
        ds = make_image(study_instance_uid=study, seed=seed)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        assert assoc.send_c_store(ds).Status == 0x0000
    broken = make_image(study_instance_uid=study, seed=9)
    del broken.SeriesInstanceUID  # refused with 0xC001
    broken.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert assoc.send_c_store(broken).Status == 0xC001
    assoc.abort()
    rows = _audit(gateway, actor="TOWNUS", wait_for=2)
    assert {(row["outcome"], row["detail"], row["study_instance_uid"]) for row in rows} == {
        ("success", "2 instances received; association aborted", study),
        ("failure", "1 instances refused: 0xC001 x1; association aborted", None),
    }


# -- the scope itself -----------------------------------------------------------------------------


def test_query_scope_reads_the_tree_at_most_once_per_cache_period(store, make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(dicom_peers=_peers(104), dicom_accept_unknown=True)
    identity = IdentityStore(store.index.engine)
    for code, name, parent in COMMUNITY:
        identity.add_organisation(code, name, parent)
    context = GatewayContext(settings=settings, store=store)
    assert context.query_scope("COUNTYPACS") == ["COUNTY", "TOWN01", "TOWN02", "VILLAGE21"]
    assert context.query_scope("TOWN02PACS") == ["TOWN02", "VILLAGE21"]
    assert context.query_scope(" TOWN01PACS ") == ["TOWN01"]
    assert context.query_scope("STRANGER") == []  # open mode or not
    identity.add_organisation("TOWN03", "Township 3", "COUNTY")
    assert "TOWN03" not in context.query_scope("COUNTYPACS")  # cached
    context.scope_cache_seconds = 0
    assert "TOWN03" in context.query_scope("COUNTYPACS")


def test_an_unreadable_tree_is_an_index_error(store, make_settings, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    def broken(self: IdentityStore) -> dict[str, str | None]:
        raise OperationalError("SELECT organisations", {}, Exception("database is locked"))

    monkeypatch.setattr(IdentityStore, "organisation_tree", broken)
    context = GatewayContext(settings=make_settings(dicom_peers=_peers(104)), store=store)
    with pytest.raises(IndexUnavailableError):
        context.query_scope("TOWN01PACS")
    assert context.query_scope("STRANGER") == []  # no tree needed to see nothing


def test_worklist_queries_are_audited_and_scoped(gateway: RunningGateway, tmp_path: Path) -> None:
    from teleconsult.storage.worklist import add_item

    for organisation, accession in (("TOWN01", "A1"), ("TOWN02", "A2")):
        add_item(
            gateway.store.index,
            patient_id=f"P{accession}",
            patient_name="Wang^XiaoMing",
            accession_number=accession,
            modality="US",
            scheduled_station_ae_title="TOWNUS",
            organisation=organisation,
        )
    out = tmp_path / "wl"
    out.mkdir()
    keys = ["AccessionNumber", "PatientID", "ScheduledProcedureStepSequence[0].Modality=US"]
    args = [require_tool("findscu"), "-W", "-aet", "TOWNUS", "-aec", "TELECONSULT", "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    result = _run([*args, "127.0.0.1", str(gateway.port)])
    assert result.returncode == 0, result.stderr
    assert [str(dcmread(path).AccessionNumber) for path in out.glob("rsp*.dcm")] == ["A1"]
    (row,) = _audit(gateway, actor="TOWNUS", wait_for=1)
    assert (row["action"], row["outcome"]) == ("query", "success")
    assert row["resource"] == "C-FIND WORKLIST 1.2.840.10008.5.1.4.31"
    assert row["detail"] == "WORKLIST level, 1 matches; keys: ScheduledProcedureStepSequence.Modality=US"


def test_refusal_over_the_association_limit_is_a_failure(
    start: Callable[..., RunningGateway], move_port: int
) -> None:
    running = start(dicom_peers=_peers(move_port), dicom_max_associations=1)
    ae = AE(ae_title="TOWNUS")
    ae.add_requested_context("1.2.840.10008.1.1")
    first = ae.associate("127.0.0.1", running.port, ae_title="TELECONSULT")
    assert first.is_established
    try:
        second = AE(ae_title="TOWN02PACS")
        second.add_requested_context("1.2.840.10008.1.1")
        refused = second.associate("127.0.0.1", running.port, ae_title="TELECONSULT")
        assert refused.is_rejected
    finally:
        first.release()
    (row,) = _audit(running, actor="TOWN02PACS", wait_for=1)
    assert (row["action"], row["outcome"], row["actor_organisation"]) == ("association", "failure", "TOWN02")
    assert row["detail"] == "association limit exceeded (transient)"


def test_a_slow_audit_write_does_not_hold_back_the_final_c_find_response(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pynetdicom reports a response as sent before writing it: the record is written after."""
    release = threading.Event()
    record_many = AuditLog.record_many

    def blocked(self: AuditLog, events: Any) -> None:
        events = list(events)
        if any(event.action == "query" for event in events):
            assert release.wait(30)
        record_many(self, events)

    monkeypatch.setattr(AuditLog, "record_many", blocked)
    ae = AE(ae_title="TOWN01PACS")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title="TELECONSULT")
    assert assoc.is_established
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = ""
        statuses = [
            int(status.Status)
            for status, _ in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
        ]
        # Every response arrived while the audit write was still blocked.
        assert statuses == [0xFF00, 0x0000]
        assert _audit(gateway, actor="TOWN01PACS") == []
        release.set()
    finally:
        release.set()
        assoc.release()
    (row,) = _audit(gateway, actor="TOWN01PACS", wait_for=1)
    assert (row["action"], row["outcome"]) == ("query", "success")
    assert row["detail"].startswith("STUDY level, 1 matches")
