"""The drop folder: organisation subfolders, complete files only, imports removed, bad ones quarantined."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from device_adapters.ecg.inbox import EcgInbox
from teleconsult.audit import AuditLog
from teleconsult.domain.studies import StudyQuery
from teleconsult.errors import StorageFullError
from teleconsult.storage.store import InstanceStore
from tests.device_adapters.conftest import FakeClock
from tests.device_adapters.scp_writer import ScpSpec, write_scp
from tests.device_adapters.writers import write_aecg, write_csv, write_wfdb

MakeInbox = Callable[..., EcgInbox]


def _drop(inbox: EcgInbox, relative: str, data: bytes) -> Path:
    path = inbox.root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _reason(inbox: EcgInbox, name: str) -> str:
    return (inbox.settings.quarantine_dir / f"{name}.reason.txt").read_text(encoding="utf-8")


def test_files_in_organisation_folders_are_imported_as_theirs_and_removed(
    make_inbox: MakeInbox, store: InstanceStore, leads: dict[str, np.ndarray]
) -> None:
    inbox = make_inbox()
    scp = _drop(inbox, "TOWN01/cart.scp", write_scp(ScpSpec(leads=leads, patient_id="S1")))
    xml = _drop(inbox, "VILLAGE21/sub/ecg.xml", write_aecg(leads, patient_id="S2"))
    outcomes = inbox.poll_once()
    assert sorted((str(o.path), o.organisation, o.reason) for o in outcomes) == [
        ("TOWN01/cart.scp", "TOWN01", None),
        ("VILLAGE21/sub/ecg.xml", "VILLAGE21", None),
    ]
    assert not scp.exists()
    assert not xml.exists()
    (study,) = store.index.find_studies(StudyQuery(patient_id="S1"))
    assert study.source_organisation == "TOWN01"
    assert study.patient_name == "王^小明"
    (study,) = store.index.find_studies(StudyQuery(patient_id="S2"))
    assert study.source_organisation == "VILLAGE21"
    quarantine = inbox.settings.quarantine_dir
    assert not quarantine.exists() or not any(quarantine.iterdir())


def test_top_level_files_belong_to_the_configured_organisation(
    make_inbox: MakeInbox, store: InstanceStore, leads: dict[str, np.ndarray]
) -> None:
    inbox = make_inbox(ecg_inbox_organisation="TOWN02")
    _drop(inbox, "ecg.csv", write_csv(leads, patient_id="T1"))
    (outcome,) = inbox.poll_once()
    assert outcome.organisation == "TOWN02"
    assert outcome.imported is not None
    assert store.index.find_studies(StudyQuery(patient_id="T1"))[0].source_organisation == "TOWN02"


@pytest.mark.parametrize(
    ("relative", "settings", "message"),
    [
        ("ecg.csv", {}, "TELECONSULT_ECG_INBOX_ORGANISATION is not set"),
        ("NOSUCHORG/ecg.csv", {}, "'NOSUCHORG' is not the code of an organisation"),
    ],
)
def test_files_without_a_known_organisation_are_quarantined(
    make_inbox: MakeInbox,
    leads: dict[str, np.ndarray],
    relative: str,
    settings: dict[str, object],
    message: str,
) -> None:
    inbox = make_inbox(**settings)
    path = _drop(inbox, relative, write_csv(leads))
    (outcome,) = inbox.poll_once()
    assert outcome.imported is None
    assert message in (outcome.reason or "")
    assert not path.exists()
    assert (inbox.settings.quarantine_dir / "ecg.csv").read_bytes() == write_csv(leads)
    assert message in _reason(inbox, "ecg.csv")


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("truncated.scp", "truncated-scp", "truncated"),
        ("badcrc.scp", "bad-crc-scp", "CRC"),
        ("broken.xml", "malformed-xml", "malformed XML"),
        ("ragged.csv", "ragged-csv", "ragged rows"),
        ("photo.jpg", "unknown", "not a format teleconsult imports"),
        ("empty.csv", "empty", "is empty"),
    ],
)
def test_bad_files_are_quarantined_with_a_readable_reason(
    make_inbox: MakeInbox, leads: dict[str, np.ndarray], name: str, data: str, message: str
) -> None:
    scp = write_scp(ScpSpec(leads=leads))
    bad_crc = bytearray(scp)
    bad_crc[-3] ^= 0x10
    contents = {
        "truncated-scp": scp[: len(scp) // 2],
        "bad-crc-scp": bytes(bad_crc),
        "malformed-xml": write_aecg(leads)[:-40],
        "ragged-csv": write_csv(leads) + b"1,2,3\n",
        "unknown": b"\xff\xd8\xff\xe0 not an ECG at all",
        "empty": b"",
    }
    inbox = make_inbox()
    path = _drop(inbox, f"TOWN01/{name}", contents[data])
    (outcome,) = inbox.poll_once()
    assert outcome.imported is None
    assert message in (outcome.reason or "")
    assert not path.exists()
    quarantined = inbox.settings.quarantine_dir / name
    assert quarantined.read_bytes() == contents[data]
    reason = _reason(inbox, name)
    assert message in reason
    assert "organisation: TOWN01" in reason
    assert "ECG inbox TOWN01/" in reason


def test_a_second_bad_file_of_the_same_name_does_not_overwrite_the_first(
    make_inbox: MakeInbox, leads: dict[str, np.ndarray]
) -> None:
    inbox = make_inbox()
    for content in (b"first", b"second"):
        _drop(inbox, "TOWN01/x.jpg", content)
        inbox.poll_once()
    kept = sorted(p.read_bytes() for p in inbox.settings.quarantine_dir.rglob("x.jpg"))
    assert kept == [b"first", b"second"]
    assert len(list(inbox.settings.quarantine_dir.rglob("x.jpg.reason.txt"))) == 2


def test_only_complete_files_are_taken(
    make_inbox: MakeInbox, clock: FakeClock, leads: dict[str, np.ndarray]
) -> None:
    inbox = make_inbox(ecg_inbox_settle_seconds=2.0)
    part = _drop(inbox, "TOWN01/cart.scp.part", write_scp(ScpSpec(leads=leads))[:100])
    hidden = _drop(inbox, "TOWN01/.cart.scp", b"half")
    growing = _drop(inbox, "TOWN01/ecg.csv", write_csv(leads)[:1000])
    assert inbox.poll_once() == []
    clock.now += 1.0
    growing.write_bytes(write_csv(leads))  # still being written: size changes
    assert inbox.poll_once() == []
    clock.now += 1.5
    assert inbox.poll_once() == []  # unchanged for 1.5 s only
    clock.now += 1.0
    (outcome,) = inbox.poll_once()
    assert outcome.imported is not None
    assert not growing.exists()
    # The writer renames its .part file when done; the hidden file is never taken.
    part.write_bytes(write_scp(ScpSpec(leads=leads, patient_id="R1")))
    part.rename(part.with_name("cart.scp"))
    clock.now += 0.1
    assert inbox.poll_once() == []
    clock.now += 2.0
    (outcome,) = inbox.poll_once()
    assert outcome.imported is not None
    assert outcome.imported.patient_id == "R1"
    assert hidden.exists()


def test_wfdb_header_and_signal_files_are_taken_together(
    make_inbox: MakeInbox, clock: FakeClock, leads: dict[str, np.ndarray], tmp_path: Path
) -> None:
    inbox = make_inbox()
    header = write_wfdb(tmp_path / "w", leads)
    target = inbox.root / "TOWN02"
    target.mkdir()
    os.replace(header, target / header.name)
    assert inbox.poll_once() == []  # the signal file is not there yet
    os.replace(tmp_path / "w" / "rec01.dat", target / "rec01.dat")
    (outcome,) = inbox.poll_once()
    assert outcome.imported is not None
    assert outcome.organisation == "TOWN02"
    assert list(target.iterdir()) == []


def test_incomplete_wfdb_records_are_quarantined_after_the_wait(
    make_inbox: MakeInbox, clock: FakeClock, leads: dict[str, np.ndarray], tmp_path: Path
) -> None:
    inbox = make_inbox(ecg_inbox_incomplete_seconds=60)
    header = write_wfdb(tmp_path / "w", leads)
    _drop(inbox, "TOWN01/rec01.hea", header.read_bytes())
    _drop(inbox, "TOWN01/orphan.dat", b"\x00\x01" * 10)
    assert inbox.poll_once() == []
    clock.now += 61
    outcomes = {str(o.path): o.reason for o in inbox.poll_once()}
    assert "did not arrive within 60 s" in outcomes["TOWN01/rec01.hea"]
    assert "no header in its folder names" in outcomes["TOWN01/orphan.dat"]
    assert "'rec01.dat'" in _reason(inbox, "rec01.hea")


def test_files_stay_when_the_store_is_full(
    make_inbox: MakeInbox, monkeypatch: pytest.MonkeyPatch, leads: dict[str, np.ndarray]
) -> None:
    inbox = make_inbox()
    path = _drop(inbox, "TOWN01/cart.scp", write_scp(ScpSpec(leads=leads)))

    def full(*args: object, **kwargs: object) -> None:
        raise StorageFullError("disk full")

    monkeypatch.setattr(inbox.importer.store, "store_instance", full)
    assert inbox.poll_once() == []
    assert path.exists()
    monkeypatch.undo()
    (outcome,) = inbox.poll_once()
    assert outcome.imported is not None
    assert not path.exists()


def test_the_watcher_thread_imports_and_stops(
    make_inbox: MakeInbox, store: InstanceStore, leads: dict[str, np.ndarray]
) -> None:
    inbox = EcgInbox(make_inbox().settings.model_copy(update={"ecg_inbox_poll_seconds": 0.05}), store)
    inbox.start()
    try:
        path = _drop(inbox, "TOWN01/cart.scp", write_scp(ScpSpec(leads=leads, patient_id="TH1")))
        deadline = time.monotonic() + 20
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not path.exists()
        assert store.index.find_studies(StudyQuery(patient_id="TH1"))
    finally:
        inbox.stop()
    assert inbox._thread is None


def test_every_file_taken_is_audited(
    make_inbox: MakeInbox, store: InstanceStore, leads: dict[str, np.ndarray]
) -> None:
    """An imported ECG is a write of patient data; a quarantined file is a refused one."""
    inbox = make_inbox()
    _drop(inbox, "TOWN01/cart.scp", write_scp(ScpSpec(leads=leads, patient_id="AUD1")))
    _drop(inbox, "TOWN01/broken.csv", b"not,an\necg")
    inbox.poll_once()
    rows = {row["resource"]: row for row in AuditLog(store.index.engine).query(limit=10)}
    stored = rows["ECG inbox TOWN01/cart.scp"]
    assert (stored["action"], stored["outcome"], stored["interface"]) == (
        "instance.store",
        "success",
        "inbox",
    )
    assert (stored["actor"], stored["actor_organisation"], stored["patient_id"]) == (
        "ecg-inbox",
        "TOWN01",
        "AUD1",
    )
    (study,) = store.index.find_studies(StudyQuery(patient_id="AUD1"))
    assert stored["study_instance_uid"] == study.study_instance_uid
    refused = rows["ECG inbox TOWN01/broken.csv"]
    assert (refused["outcome"], refused["interface"]) == ("failure", "inbox")
    assert refused["detail"].startswith("quarantined: ")
