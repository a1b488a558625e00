"""Image exports in the drop folder: taken with their sidecars, quarantined with a reason otherwise."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom import dcmread

from device_adapters.ecg.inbox import EcgInbox
from device_adapters.images.importer import ImportedImage
from teleconsult.audit import AuditLog
from teleconsult.domain.studies import StudyQuery
from teleconsult.storage.store import InstanceStore
from tests.device_adapters.conftest import FakeClock
from tests.device_adapters.images.conftest import encode_image, grey8, grey16, rgb, sidecar

MakeInbox = Callable[..., EcgInbox]


def _drop(inbox: EcgInbox, relative: str, data: bytes) -> Path:
    path = inbox.root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _reason(inbox: EcgInbox, name: str) -> str:
    return (inbox.settings.quarantine_dir / f"{name}.reason.txt").read_text(encoding="utf-8")


def test_an_export_and_its_sidecar_are_imported_as_the_folders_organisation(
    make_inbox: MakeInbox, store: InstanceStore
) -> None:
    inbox = make_inbox()
    image = _drop(inbox, "TOWN01/dr/IMG_0001.PNG", encode_image(grey16(), "PNG"))
    assert inbox.poll_once() == []  # the sidecar is not there yet: it waits
    assert image.exists()
    json = _drop(inbox, "TOWN01/dr/IMG_0001.json", sidecar())
    (outcome,) = inbox.poll_once()
    assert (str(outcome.path), outcome.organisation, outcome.reason) == (
        "TOWN01/dr/IMG_0001.PNG",
        "TOWN01",
        None,
    )
    assert isinstance(outcome.imported, ImportedImage)
    assert not image.exists()
    assert not json.exists()
    (study,) = store.index.find_studies(StudyQuery(patient_id="IMG0001"))
    assert study.source_organisation == "TOWN01"
    assert study.patient_name == "王^小明"
    ds = dcmread(BytesIO(store.read_instance(outcome.imported.stored.sop_instance_uid)))
    assert np.array_equal(ds.pixel_array, grey16())
    rows = {row["resource"]: row for row in AuditLog(store.index.engine).query(limit=10)}
    row = rows["ECG inbox TOWN01/dr/IMG_0001.PNG"]
    assert (row["action"], row["outcome"], row["interface"], row["actor"]) == (
        "instance.store",
        "success",
        "inbox",
        "ecg-inbox",
    )
    assert (row["patient_id"], row["study_instance_uid"]) == ("IMG0001", study.study_instance_uid)
    assert row["detail"].startswith("PNG stored ")
    quarantine = inbox.settings.quarantine_dir
    assert not quarantine.exists() or not any(quarantine.iterdir())


def test_exports_and_ecgs_side_by_side(make_inbox: MakeInbox, store: InstanceStore) -> None:
    inbox = make_inbox(ecg_inbox_organisation="TOWN02")
    _drop(inbox, "us1.jpg", encode_image(rgb(), "JPEG"))
    _drop(inbox, "us1.json", sidecar(modality="US", body_part="ABDOMEN", accession_number="U1"))
    _drop(inbox, "us2.bmp", encode_image(rgb(seed=7), "BMP"))
    _drop(inbox, "us2.json", sidecar(modality="US", body_part="ABDOMEN", accession_number="U1"))
    outcomes = inbox.poll_once()
    assert sorted((str(o.path), o.reason) for o in outcomes) == [("us1.jpg", None), ("us2.bmp", None)]
    (study,) = store.index.find_studies(StudyQuery(patient_id="IMG0001"))
    assert (study.number_of_instances, study.source_organisation) == (2, "TOWN02")
    assert list(inbox.root.iterdir()) == []


def test_an_export_without_its_sidecar_is_quarantined_after_the_wait(
    make_inbox: MakeInbox, clock: FakeClock
) -> None:
    inbox = make_inbox(ecg_inbox_incomplete_seconds=60)
    data = encode_image(grey8(), "JPEG")
    image = _drop(inbox, "TOWN01/chest.jpg", data)
    lone = _drop(inbox, "TOWN01/lost.json", sidecar())
    assert inbox.poll_once() == []
    clock.now += 61
    outcomes = {str(o.path): o.reason or "" for o in inbox.poll_once()}
    assert "without its sidecar chest.json" in outcomes["TOWN01/chest.jpg"]
    assert "within 60 s" in outcomes["TOWN01/chest.jpg"]
    assert "a sidecar without the image export" in outcomes["TOWN01/lost.json"]
    assert not image.exists()
    assert not lone.exists()
    assert (inbox.settings.quarantine_dir / "chest.jpg").read_bytes() == data
    reason = _reason(inbox, "chest.jpg")
    assert "without its sidecar chest.json" in reason
    assert "organisation: TOWN01" in reason
    assert "a sidecar without" in _reason(inbox, "lost.json")


def test_a_bad_sidecar_quarantines_the_pair_naming_the_field(
    make_inbox: MakeInbox, store: InstanceStore
) -> None:
    inbox = make_inbox()
    _drop(inbox, "TOWN01/x.png", encode_image(grey8(), "PNG"))
    _drop(inbox, "TOWN01/x.json", sidecar(study_date="yesterday", patient_id=None))
    (outcome,) = inbox.poll_once()
    assert outcome.imported is None
    assert "study_date: not a date" in (outcome.reason or "")
    assert "patient_id: required" in (outcome.reason or "")
    quarantine = inbox.settings.quarantine_dir
    assert (quarantine / "x.png").is_file()
    assert (quarantine / "x.json").read_bytes() == sidecar(study_date="yesterday", patient_id=None)
    assert "study_date" in _reason(inbox, "x.png")
    assert "file: x.png, x.json" in _reason(inbox, "x.png")
    (row,) = AuditLog(store.index.engine).query(limit=10)
    assert (row["outcome"], row["resource"]) == ("failure", "ECG inbox TOWN01/x.png")
    assert row["detail"].startswith("quarantined: ")


def test_an_unreadable_image_is_quarantined_with_its_sidecar(make_inbox: MakeInbox) -> None:
    inbox = make_inbox()
    _drop(inbox, "TOWN01/cut.jpg", encode_image(rgb(), "JPEG")[:400])
    _drop(inbox, "TOWN01/cut.json", sidecar())
    (outcome,) = inbox.poll_once()
    assert "damaged or cut short" in (outcome.reason or "")
    assert sorted(p.name for p in inbox.settings.quarantine_dir.iterdir()) == [
        "cut.jpg",
        "cut.jpg.reason.txt",
        "cut.json",
    ]


def test_a_file_named_as_an_image_that_is_none_is_quarantined_at_once(make_inbox: MakeInbox) -> None:
    inbox = make_inbox()
    _drop(inbox, "TOWN01/notes.png", "病历 not an image".encode())
    (outcome,) = inbox.poll_once()
    assert "not a format teleconsult imports" in (outcome.reason or "")


def test_two_exports_sharing_one_sidecar_are_quarantined(make_inbox: MakeInbox) -> None:
    inbox = make_inbox()
    _drop(inbox, "TOWN01/x.jpg", encode_image(rgb(), "JPEG"))
    _drop(inbox, "TOWN01/x.png", encode_image(rgb(), "PNG"))
    _drop(inbox, "TOWN01/x.json", sidecar())
    (outcome,) = inbox.poll_once()
    assert "share one sidecar" in (outcome.reason or "")
    assert len(list(inbox.settings.quarantine_dir.iterdir())) == 4


def test_a_half_written_sidecar_is_waited_for(make_inbox: MakeInbox, clock: FakeClock) -> None:
    inbox = make_inbox(ecg_inbox_settle_seconds=2.0)
    _drop(inbox, "TOWN01/x.png", encode_image(grey8(), "PNG"))
    clock.now += 5
    json = _drop(inbox, "TOWN01/x.json", sidecar()[:20])
    assert inbox.poll_once() == []  # the image is complete, its sidecar is still being written
    clock.now += 1
    json.write_bytes(sidecar())
    assert inbox.poll_once() == []
    clock.now += 2.5
    (outcome,) = inbox.poll_once()
    assert outcome.imported is not None
