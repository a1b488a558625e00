"""Orthanc as the real PACS: teleconsult forwards to it, through an outage and a restart.

A Lua ``ReceivedInstanceFilter`` in Orthanc logs every instance it receives,
re-sent ones included (Orthanc itself would silently keep one copy), so
"exactly once" is checked on the PACS side as well as in the queue.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

from pydicom.uid import generate_uid
from pynetdicom.transport import ThreadedAssociationServer

from dicom_gateway.ae import start_gateway
from dicom_gateway.forwarder import Forwarder
from teleconsult.config import Settings
from teleconsult.storage.outbox import ForwardStatus
from teleconsult.storage.store import InstanceStore
from tests.conftest import require_tool
from tests.factories import make_ecg, make_image, write_part10
from tests.orthanc import DCMTK_ENV, Orthanc, wait_for

TOWN_DEVICE = {"ae_title": "TOWNUS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"}
OTHER_TOWN = {"ae_title": "STORESCU", "host": "127.0.0.1", "port": 104, "organisation": "TOWN02"}
# Short timers: a study is stable after 0.2 s, retries start at 0.2 s.
FAST = {
    "dicom_forward_stable_seconds": 0.2,
    "dicom_forward_retry_base_seconds": 0.2,
    "dicom_forward_max_retry_seconds": 0.5,
}


def _storescu(port: int, calling_ae_title: str, files: list[Path], *options: str) -> None:
    result = subprocess.run(
        [
            require_tool("storescu"),
            *options,
            "-aet",
            calling_ae_title,
            "-aec",
            "TELECONSULT",
            "127.0.0.1",
            str(port),
        ]
        + [str(f) for f in files],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _study_files(folder: Path, count: int, *, prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    study = generate_uid()
    return [
        write_part10(
            make_image(study_instance_uid=study, patient_id=prefix, seed=seed), folder / f"{prefix}{seed}.dcm"
        )
        for seed in range(count)
    ]


def _orthanc_peer(orthanc: Orthanc, *, organisation: str, pacs: bool = False) -> dict[str, object]:
    return {
        "ae_title": "ORTHANC",
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
        "organisation": organisation,
        "pacs": pacs,
    }


def _sop_instance_uids(store: InstanceStore) -> set[str]:
    return {e.sop_instance_uid for e in store.outbox.list_entries(limit=None)}


def test_instances_are_forwarded_to_orthanc_once_and_byte_identical(
    make_settings, orthanc: Orthanc, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = make_settings(
        dicom_peers=[TOWN_DEVICE, OTHER_TOWN, _orthanc_peer(orthanc, organisation="COUNTY01")],
        dicom_forward_rules=[
            {"name": "county-pacs", "from_organisations": ["TOWN01"], "destination": "ORTHANC"}
        ],
        # stable long enough that both storescu calls below make one study
        **{**FAST, "dicom_forward_stable_seconds": 1.5},
    )
    corpus = tmp_path / "corpus"
    images = _study_files(corpus, 3, prefix="us")
    # A JPEG-LS file goes out in JPEG-LS: Orthanc gets the compressed bytes as stored.
    compressed = corpus / "jpegls.dcm"
    converted = subprocess.run(
        [require_tool("dcmcjpls"), str(images[0]), str(compressed)],
        env=DCMTK_ENV,
        capture_output=True,
        check=False,
    )
    assert converted.returncode == 0, converted.stderr
    images[0].unlink()
    ecg = write_part10(make_ecg(), corpus / "ecg.dcm")
    not_routed = _study_files(tmp_path / "town2", 2, prefix="t2")

    store = InstanceStore(settings)
    store.open()
    gateway = start_gateway(settings, store, host="127.0.0.1", port=0)
    forwarder = Forwarder(settings, store)
    forwarder.start()
    try:
        _storescu(gateway.server_address[1], "TOWNUS", [*images[1:], ecg])
        _storescu(gateway.server_address[1], "TOWNUS", [compressed], "-xt")  # propose JPEG-LS
        _storescu(gateway.server_address[1], "STORESCU", not_routed)
        wait_for(lambda: store.outbox.counts()["sent"] == 4, "4 instances forwarded")
        in_orthanc = orthanc.instances()
        sent = _sop_instance_uids(store)
        assert store.outbox.counts() == {"pending": 0, "sending": 0, "sent": 4, "failed": 0}
        assert set(in_orthanc) == sent, "everything from TOWN01, nothing from TOWN02"
        for sop_instance_uid, orthanc_id in in_orthanc.items():
            record = store.index.instance(sop_instance_uid)
            assert record is not None
            assert orthanc.data_set_sha256(orthanc_id) == record.sha256, "byte-identical data set"
        assert orthanc.received() == Counter({(uid, "TELECONSULT"): 1 for uid in sent}), "each once"
        assert forwarder.stats["sent"] == 4
        assert forwarder.stats["associations"] == 2, "one association per study"
    finally:
        forwarder.stop()
        gateway.shutdown()
        store.close()


def test_queue_holds_through_an_outage_and_a_restart_then_delivers_everything_once(
    make_settings, orthanc: Orthanc, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = make_settings(
        dicom_peers=[TOWN_DEVICE, _orthanc_peer(orthanc, organisation="TOWN01", pacs=True)],
        dicom_forward_rules=[
            {"name": "home-pacs", "from_organisations": ["*"], "destination": "source-pacs"}
        ],
        **FAST,
    )
    store = InstanceStore(settings)
    store.open()
    gateway: ThreadedAssociationServer | None = start_gateway(settings, store, host="127.0.0.1", port=0)
    forwarder = Forwarder(settings, store)
    forwarder.start()
    try:
        assert gateway is not None
        port = gateway.server_address[1]
        _storescu(port, "TOWNUS", _study_files(tmp_path / "a", 2, prefix="a"))
        wait_for(lambda: store.outbox.counts()["sent"] == 2, "study A forwarded")

        orthanc.stop()
        _storescu(port, "TOWNUS", _study_files(tmp_path / "b", 2, prefix="b"))
        _storescu(port, "TOWNUS", _study_files(tmp_path / "c", 3, prefix="c"))

        def held_with_reasons() -> bool:
            waiting = store.outbox.list_entries(status=ForwardStatus.PENDING)
            return len(waiting) == 5 and all(
                e.attempts >= 2 and (e.last_error or "").startswith("cannot connect to ORTHANC")
                for e in waiting
            )

        wait_for(held_with_reasons, "rows pending with growing attempts and the reason")

        # teleconsult restarts: everything in memory is gone.
        forwarder.stop()
        gateway.shutdown()
        gateway = None
        store.close()
        first_run_sent = forwarder.stats["sent"]

        store = InstanceStore(settings)
        store.open()
        survived = store.outbox.list_entries(status=ForwardStatus.PENDING, limit=None)
        assert len(survived) == 5, "the queue survived the restart"
        assert all(e.attempts >= 2 and e.last_error for e in survived), "with its history"
        forwarder = Forwarder(settings, store)
        forwarder.start()

        orthanc.start()
        wait_for(lambda: store.outbox.counts()["sent"] == 7, "the backlog delivered after Orthanc is back")

        entries = store.outbox.list_entries(limit=None)
        assert store.outbox.counts() == {"pending": 0, "sending": 0, "sent": 7, "failed": 0}
        assert all(e.sent_at is not None for e in entries)
        assert sorted(e.attempts for e in entries)[:2] == [1, 1], "study A went through first time"
        assert all(e.attempts >= 3 for e in entries if e.attempts != 1), "the others after their retries"
        assert first_run_sent + forwarder.stats["sent"] == 7, "no row sent twice"
        in_orthanc = orthanc.instances()
        uids = {e.sop_instance_uid for e in entries}
        assert set(in_orthanc) == uids
        assert orthanc.received() == Counter({(uid, "TELECONSULT"): 1 for uid in uids}), "exactly once"
    finally:
        forwarder.stop()
        if gateway is not None:
            gateway.shutdown()
        store.close()
