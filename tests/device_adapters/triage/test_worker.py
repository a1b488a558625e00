"""The analyser on a real store (SQLite, and PostgreSQL when configured): rows, consults, alerts, catch-up."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bench.ecg.synthetic import inferior_stemi, synthesise
from device_adapters.ecg.triage import EcgTriage
from teleconsult.consults import ConsultService
from teleconsult.consults.service import SYSTEM_ACTOR
from teleconsult.domain.consults import ConsultStatus, Urgency
from teleconsult.storage.consults import ConsultStore
from teleconsult.storage.ecg_measurements import EcgMeasurementStatus
from teleconsult.storage.store import InstanceStore
from tests.conftest import RecordingBus
from tests.device_adapters.triage.conftest import ecg_dataset, store_ecg


def _consults_of(store: InstanceStore, study_instance_uid: str) -> list[str]:
    with store.index.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT consult_id FROM consults WHERE study_instance_uid = :uid"),
            {"uid": study_instance_uid},
        ).all()
    return [row.consult_id for row in rows]


def test_a_stemi_ecg_opens_one_critical_consult_to_the_county_and_raises_the_alert(
    store: InstanceStore, triage: EcgTriage, bus: RecordingBus
) -> None:
    ds = store_ecg(store, ecg_dataset(synthesise(st_offsets=inferior_stemi(0.25), noise_mv=0.01)))
    record = triage.analyse(ds.SOPInstanceUID)
    assert record is not None
    assert record.status is EcgMeasurementStatus.ANALYSED
    assert record.positive
    assert record.screen is not None
    assert record.screen["territories"] == {"inferior": ["II", "III", "aVF"]}
    assert record.consult_id is not None
    consult = ConsultStore(store.index.engine).get(record.consult_id)
    assert consult is not None
    assert consult.urgency is Urgency.CRITICAL
    assert consult.status is ConsultStatus.REQUESTED
    assert consult.requested_by == SYSTEM_ACTOR
    assert consult.target.organisation == "COUNTY"  # the county above TOWN01
    assert consult.study_instance_uid == ds.StudyInstanceUID
    assert "suspected STEMI" in consult.question
    assert "physician confirmation" in consult.question
    alerts = [e for e in bus.events if e.type == "alert.critical"]
    assert len(alerts) == 1
    data = alerts[0].data
    assert data["study_instance_uid"] == ds.StudyInstanceUID
    assert data["consult_id"] == record.consult_id
    assert data["reason"] == (
        "ST elevation in II, III, aVF (inferior): suspected STEMI — needs physician confirmation"
    )
    assert data["measurements"]["st_j60_mv"]["II"] == pytest.approx(0.25, abs=0.03)
    assert data["measurements"]["heart_rate_bpm"] == pytest.approx(70, abs=1.5)
    assert [e.data["consult_id"] for e in bus.events if e.type == "consult.requested"] == [record.consult_id]


def test_analysing_twice_or_from_two_analysers_at_once_makes_one_consult(
    store: InstanceStore, triage: EcgTriage, consults: ConsultService, bus: RecordingBus
) -> None:
    ds = store_ecg(store, ecg_dataset(synthesise(st_offsets=inferior_stemi(0.25))))
    other = EcgTriage(store, consults, triage.settings)
    results = []
    threads = [
        threading.Thread(target=lambda a=a: results.append(a.analyse(ds.SOPInstanceUID)))
        for a in (triage, other, triage)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 3
    assert len({r.consult_id for r in results if r is not None}) == 1
    assert len(_consults_of(store, ds.StudyInstanceUID)) == 1
    assert len([e for e in bus.events if e.type == "alert.critical"]) == 1
    assert triage.analyse(ds.SOPInstanceUID) == results[0]  # and again later: the row as it is


def test_a_normal_ecg_is_recorded_without_consult_or_alert(
    store: InstanceStore, triage: EcgTriage, bus: RecordingBus
) -> None:
    ds = store_ecg(store, ecg_dataset(synthesise(heart_rate=75)))
    record = triage.analyse(ds.SOPInstanceUID)
    assert record is not None
    assert record.status is EcgMeasurementStatus.ANALYSED
    assert not record.positive
    assert record.consult_id is None
    assert record.measurements is not None
    assert record.measurements["qrs_ms"] == pytest.approx(90, abs=12)
    assert _consults_of(store, ds.StudyInstanceUID) == []
    assert not [e for e in bus.events if e.type in ("alert.critical", "consult.requested")]


def test_an_eleven_lead_ecg_is_recorded_not_analysable_with_the_reason(
    store: InstanceStore, triage: EcgTriage
) -> None:
    ecg = synthesise()
    ecg.leads_mv.pop("V6")
    ds = store_ecg(store, ecg_dataset(ecg))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.9.1.2"  # General ECG
    record = triage.analyse(ds.SOPInstanceUID)
    assert record is not None
    assert record.status is EcgMeasurementStatus.NOT_ANALYSABLE
    assert record.reason is not None
    assert "lacks lead(s) V6" in record.reason
    assert not record.positive


def test_a_positive_screen_without_a_specialist_to_take_it_is_still_alerted(
    store: InstanceStore, triage: EcgTriage, bus: RecordingBus
) -> None:
    from teleconsult.storage.identity import IdentityStore

    IdentityStore(store.index.engine).add_organisation("LONE", "A hospital without specialists")
    ds = store_ecg(store, ecg_dataset(synthesise(heart_rate=35), organisation="LONE"), organisation="LONE")
    record = triage.analyse(ds.SOPInstanceUID)
    assert record is not None
    assert record.positive
    assert record.consult_id is None
    assert record.note is not None
    assert "has no specialists" in record.note
    alert = next(e for e in bus.events if e.type == "alert.critical")
    assert alert.data["consult_id"] is None
    assert "urgent bradycardia" in alert.data["reason"]


def test_ecgs_stored_while_the_analyser_was_down_are_analysed_when_it_starts(
    store: InstanceStore, triage: EcgTriage
) -> None:
    stored = [
        store_ecg(store, ecg_dataset(synthesise(heart_rate=rate, seed=rate), patient_id=f"P{rate}"))
        for rate in (60, 72, 35)
    ]
    assert triage.records.unanalysed({stored[0].SOPClassUID}) != []
    triage.start()  # not subscribed to any bus: only the start-up scan can find them
    assert triage.wait_idle(120)
    for ds in stored:
        record = triage.records.get(ds.SOPInstanceUID, 1)
        assert record is not None
        assert record.status is EcgMeasurementStatus.ANALYSED
    assert triage.records.unanalysed({stored[0].SOPClassUID}) == []


def test_the_catch_up_leaves_ecgs_older_than_its_window_alone(
    store: InstanceStore, triage: EcgTriage
) -> None:
    """An installation that predates the triage must not get critical consults for its history."""
    old = store_ecg(
        store, ecg_dataset(synthesise(st_offsets=inferior_stemi(0.25), sex="M"), patient_id="OLD")
    )
    recent = store_ecg(store, ecg_dataset(synthesise(heart_rate=72), patient_id="RECENT"))
    hours = triage.settings.ecg_triage_catch_up_hours
    with store.index.engine.begin() as conn:
        conn.execute(
            text("UPDATE instances SET received_at = :then WHERE sop_instance_uid = :uid").bindparams(
                then=triage.clock() - timedelta(hours=hours + 1), uid=old.SOPInstanceUID
            )
        )
    assert triage.scan() == 1
    triage.start()
    assert triage.wait_idle(120)
    assert triage.records.get(recent.SOPInstanceUID, 1) is not None
    assert triage.records.get(old.SOPInstanceUID, 1) is None
    with store.index.engine.connect() as conn:  # the old one, a STEMI pattern, opened no consult
        assert conn.execute(text("SELECT count(*) FROM consults")).scalar_one() == 0


def test_a_stored_event_wakes_the_running_analyser(store: InstanceStore, triage: EcgTriage) -> None:
    unsubscribe = triage.subscribe(store.bus)
    triage.start()
    try:
        assert triage.wait_idle(120)  # the start-up scan found nothing
        ds = store_ecg(store, ecg_dataset(synthesise(heart_rate=170, pr_ms=110)))
        assert triage.wait_idle(60)
        record = triage.records.get(ds.SOPInstanceUID, 1)
        assert record is not None
        assert record.positive
        assert record.screen is not None
        assert record.screen["rhythm"] == "tachycardia"
    finally:
        unsubscribe()


def test_rows_are_append_only(store: InstanceStore, triage: EcgTriage) -> None:
    ds = store_ecg(store, ecg_dataset(synthesise()))
    triage.analyse(ds.SOPInstanceUID)
    for statement in ("UPDATE ecg_measurements SET positive = true", "DELETE FROM ecg_measurements"):
        with pytest.raises(DBAPIError, match="append-only"), store.index.engine.begin() as conn:
            conn.execute(text(statement))


def test_a_deflated_ecg_that_inflates_to_gigabytes_is_not_read_whole(
    store: InstanceStore, triage: EcgTriage
) -> None:
    """Regression: one 2 MB deflate bomb stored as an ECG took the server from 381 MiB to 4.1 GiB RSS."""
    import random
    import resource

    from bench.reliability.mutations import ECG_12_LEAD, deflate_bomb

    bomb = next(
        mutant
        for seed in range(64)
        if (mutant := deflate_bomb(random.Random(seed), seed)).sop_class_uid == ECG_12_LEAD
    )
    store.store_instance(
        bomb.data_set, bomb.transfer_syntax_uid, calling_ae_title="TOWNUS", source_organisation="TOWN01"
    )
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    record = triage.analyse(bomb.sop_instance_uid)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) >> 10
    assert record is not None
    assert record.status is EcgMeasurementStatus.NOT_ANALYSABLE
    assert record.reason is not None
    assert "inflates to more than 64 MiB" in record.reason
    assert grown_mib < 256


def test_a_deflated_ecg_whose_stream_is_broken_gets_a_failed_row(
    store: InstanceStore, triage: EcgTriage
) -> None:
    """A stream that cannot be inflated is recorded as failed once, not retried at every scan."""
    import zlib

    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = ecg_dataset(synthesise())
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    ds.set_original_encoding(False, True, None)
    write_dataset(fp, ds)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(fp.getvalue()) + compressor.flush()
    broken = deflated[: len(deflated) * 3 // 4]  # cut short: the header intact, the waveform not
    store.store_instance(
        broken, DeflatedExplicitVRLittleEndian, calling_ae_title="TOWNUS", source_organisation="TOWN01"
    )
    record = triage.analyse(ds.SOPInstanceUID)
    assert record is not None
    assert record.status in (EcgMeasurementStatus.FAILED, EcgMeasurementStatus.NOT_ANALYSABLE)
