"""File events: a file closed after writing or renamed into the inbox is taken at once, not after settling.

The inboxes here poll every 60 s and settle for 60 s on a clock that never
moves, so only an event can get a file imported within the tests' seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from device_adapters.ecg.file_events import CompletedFiles
from device_adapters.ecg.inbox import EcgInbox
from teleconsult.domain.studies import StudyQuery
from teleconsult.storage.store import InstanceStore
from tests.device_adapters.scp_writer import ScpSpec, write_scp
from tests.device_adapters.writers import write_csv

MakeInbox = Callable[..., EcgInbox]
_SLOW = {"ecg_inbox_poll_seconds": 60.0, "ecg_inbox_settle_seconds": 60.0}


def _wait_gone(path: Path, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return not path.exists()


def _started(make_inbox: MakeInbox) -> EcgInbox:
    inbox = make_inbox(**_SLOW)
    (inbox.root / "TOWN01").mkdir(parents=True, exist_ok=True)
    inbox.start()
    assert inbox._completed.watching, "inotify is expected on the test machine's local disk"
    return inbox


def test_a_file_written_and_closed_is_taken_at_once(
    make_inbox: MakeInbox, store: InstanceStore, leads: dict[str, np.ndarray]
) -> None:
    inbox = _started(make_inbox)
    try:
        path = inbox.root / "TOWN01" / "cart.scp"
        started = time.monotonic()
        path.write_bytes(write_scp(ScpSpec(leads=leads, patient_id="EV1")))
        assert _wait_gone(path)
        assert time.monotonic() - started < 10  # not the 60 s poll nor the 60 s settling
        assert store.index.find_studies(StudyQuery(patient_id="EV1"))
    finally:
        inbox.stop()


def test_a_part_file_renamed_and_a_file_moved_in_from_outside_are_taken(
    make_inbox: MakeInbox, store: InstanceStore, leads: dict[str, np.ndarray], tmp_path: Path
) -> None:
    inbox = _started(make_inbox)
    try:
        part = inbox.root / "TOWN01" / "a.csv.part"
        part.write_bytes(write_csv(leads, patient_id="EV2"))
        renamed = part.rename(inbox.root / "TOWN01" / "a.csv")
        outside = tmp_path / "outside.csv"
        outside.write_bytes(write_csv(leads, patient_id="EV3"))
        moved = outside.rename(inbox.root / "TOWN01" / "b.csv")
        assert _wait_gone(renamed)
        assert _wait_gone(moved)
        assert store.index.find_studies(StudyQuery(patient_id="EV2"))
        assert store.index.find_studies(StudyQuery(patient_id="EV3"))
    finally:
        inbox.stop()


def test_a_file_still_open_for_writing_waits(
    make_inbox: MakeInbox, store: InstanceStore, leads: dict[str, np.ndarray]
) -> None:
    """No close event yet: the settle rule (60 s on a stopped clock here) holds the half-written file."""
    inbox = _started(make_inbox)
    data = write_csv(leads, patient_id="EV4")
    path = inbox.root / "TOWN01" / "slow.csv"
    try:
        with path.open("wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            # another file's event wakes the inbox while this one is open
            (inbox.root / "TOWN01" / "other.csv").write_bytes(write_csv(leads, patient_id="EV5"))
            assert _wait_gone(inbox.root / "TOWN01" / "other.csv")
            assert path.exists()
            handle.write(data[len(data) // 2 :])
        assert _wait_gone(path)
        assert store.index.find_studies(StudyQuery(patient_id="EV4"))
        quarantine = inbox.settings.quarantine_dir
        assert not quarantine.exists() or not any(quarantine.rglob("*.reason.txt"))
    finally:
        inbox.stop()


def test_a_file_changed_after_its_event_falls_back_to_settling(tmp_path: Path) -> None:
    completed = CompletedFiles(tmp_path)
    assert completed.start()
    try:
        path = tmp_path / "x.scp"
        path.write_bytes(b"first")
        deadline = time.monotonic() + 10
        while completed.state(Path("x.scp")) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        stat = path.stat()
        assert completed.state(Path("x.scp")) == (stat.st_size, stat.st_mtime_ns)
        assert completed.wake.is_set()
        completed.forget({Path("x.scp")})
        assert completed.remembered() == set()
    finally:
        completed.stop()
    assert not completed.watching


def test_without_inotify_the_inbox_still_polls(tmp_path: Path) -> None:
    """A folder that cannot be watched (here: missing) leaves polling as the only way in."""
    completed = CompletedFiles(tmp_path / "missing")
    assert completed.start() is False
    assert not completed.watching
    completed.stop()
