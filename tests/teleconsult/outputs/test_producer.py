"""The output stage: off the signing request, once per signed version, superseded by addenda, retried."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from io import BytesIO
from typing import Any

import pytest
from pypdf import PdfReader
from sqlalchemy import text

import teleconsult.consults.outputs.producer as producer_module
from teleconsult.consults.outputs import ReportOutputs
from teleconsult.events import Event, EventType
from tests.teleconsult.consults.conftest import DRAFT, Consulting, FakeClock, accepted
from tests.teleconsult.outputs.conftest import REVIEWER, outputs_of, sign_report, stored


def _study_instances(consulting: Consulting, study_instance_uid: str) -> list[Any]:
    return consulting.api.store.index.instances_of_study(study_instance_uid)


def test_signing_answers_before_the_outputs_are_made(
    consulting: Consulting, outputs: ReportOutputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    threads: list[str] = []
    produce = outputs.produce

    def slow_produce(consult_id: str, version: int) -> Any:
        threads.append(threading.current_thread().name)
        entered.set()
        assert release.wait(60), "the test never released the worker"
        return produce(consult_id, version)

    monkeypatch.setattr(outputs, "produce", slow_produce)
    signed = sign_report(consulting, outputs, wait=False)  # the reviewing signature has been answered
    assert entered.wait(60)
    assert threads == ["report-outputs"]
    (pending,) = outputs_of(consulting, "sono1", signed.id)
    assert pending["status"] == "producing"
    assert consulting.get("sono1", f"{signed.path}/pdf").status_code == 404
    release.set()
    assert outputs.wait_idle(120)
    (done,) = outputs_of(consulting, "sono1", signed.id)
    assert done["status"] == "done"
    assert consulting.get("sono1", f"{signed.path}/pdf").status_code == 200


def test_outputs_are_made_once_per_version(consulting: Consulting, outputs: ReportOutputs) -> None:
    signed = sign_report(consulting, outputs)
    (output,) = outputs_of(consulting, "sono1", signed.id)
    assert (output["version"], output["kind"], output["status"], output["attempts"]) == (
        2,
        "report",
        "done",
        1,
    )
    # the same event again (a replayed or duplicated delivery) asks for nothing new
    event = Event(EventType.REPORT_SIGNED, {"consult_id": signed.id, "version": 2, "kind": "report"})
    consulting.api.store.bus.publish(event)
    assert outputs.request(signed.id, 2, "report") is False
    assert outputs.wait_idle(120)
    assert len(outputs_of(consulting, "sono1", signed.id)) == 1
    # made again, they are the same bytes: the store sees duplicates, not new versions
    again = outputs.produce(signed.id, 2)
    assert again.pdf == outputs.pdf(signed.id, 2)
    for uid in (again.sr_sop_instance_uid, again.pdf_sop_instance_uid):
        assert uid is not None
        assert len(consulting.api.store.index.versions(uid)) == 1
    classes = sorted(i.sop_class_uid for i in _study_instances(consulting, signed.study.StudyInstanceUID))
    assert classes == [
        "1.2.840.10008.5.1.4.1.1.104.1",
        "1.2.840.10008.5.1.4.1.1.6.1",
        "1.2.840.10008.5.1.4.1.1.88.22",
    ]


def test_a_signed_addendum_gets_new_outputs_that_supersede_the_earlier_ones(
    consulting: Consulting, outputs: ReportOutputs, clock: FakeClock
) -> None:
    signed = sign_report(consulting, outputs)
    first_pdf = outputs.pdf(signed.id, 2)
    clock.advance(hours=2)
    addendum = {"text": "补充：增强CT示肝血管瘤。", "reason": "增强CT结果回报"}
    response = consulting.post(REVIEWER, f"{signed.path}/addenda", addendum)
    assert response.status_code == 201, response.text
    assert outputs.wait_idle(120)

    v2, v3 = outputs_of(consulting, "sono1", signed.id)
    assert (v2["version"], v3["version"], v3["kind"], v3["status"]) == (2, 3, "addendum", "done")
    for kind in ("structured_report", "encapsulated_pdf"):
        assert v3[kind]["sop_instance_uid"] != v2[kind]["sop_instance_uid"]  # new SOP instances
        assert v3[kind]["series_instance_uid"] == v2[kind]["series_instance_uid"]  # the report's series
    sr = stored(consulting, v3["structured_report"]["sop_instance_uid"])
    predecessor = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == v2["structured_report"]["sop_instance_uid"]
    assert sr.InstanceNumber == 3
    signed_at = datetime(2026, 11, 24, 10, tzinfo=UTC).astimezone()
    assert sr.VerifyingObserverSequence[0].VerificationDateTime == signed_at.strftime("%Y%m%d%H%M%S.000000")

    pdf = consulting.get("sono1", f"{signed.path}/pdf").content
    assert pdf == outputs.pdf(signed.id, 3)
    text = "".join(page.extract_text() for page in PdfReader(BytesIO(pdf)).pages)
    packed = "".join(text.split())  # table cells wrap
    for expected in (
        "补充：增强CT示肝血管瘤。",
        "原因Reason:增强CT结果回报",
        "3—已补充amended",
        "补充报告Addendum",
    ):
        assert expected in packed, expected
    assert "DOC" not in text  # the study's examined modalities only, not its reports'
    assert "补充" not in "".join(page.extract_text() for page in PdfReader(BytesIO(first_pdf or b"")).pages)
    assert outputs.pdf(signed.id, 2) == first_pdf  # version 2's PDF is kept as it was
    fhir = consulting.get("sono1", f"/fhir/DiagnosticReport/{signed.id}").json()
    assert (fhir["status"], fhir["meta"]["versionId"]) == ("amended", "3")
    assert "补充：增强CT示肝血管瘤。" in fhir["conclusion"]
    assert {e.destination_ae_title for e in consulting.api.store.outbox.list_entries(limit=None)} == {
        "TOWN01PACS"
    }
    assert (
        len(consulting.api.store.outbox.list_entries(study_instance_uid=signed.study.StudyInstanceUID)) == 4
    )


def test_a_failed_attempt_is_visible_and_retried(
    consulting: Consulting, outputs: ReportOutputs, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = producer_module.build_encapsulated_pdf
    calls: list[int] = []

    def failing_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the PDF object could not be built")
        return build(*args, **kwargs)

    monkeypatch.setattr(producer_module, "build_encapsulated_pdf", failing_once)
    signed = sign_report(consulting, outputs)
    (failed,) = outputs_of(consulting, "sono1", signed.id)
    assert (failed["status"], failed["attempts"]) == ("failed", 1)
    assert failed["last_error"] == "RuntimeError: the PDF object could not be built"
    assert failed["next_attempt_at"] == "2026-11-24T08:00:30Z"
    assert consulting.get("sono1", f"{signed.path}/pdf").status_code == 404
    # the SR was stored before the failure
    sr_instances = [
        i
        for i in _study_instances(consulting, signed.study.StudyInstanceUID)
        if i.sop_class_uid.endswith(".88.22")
    ]
    assert len(sr_instances) == 1

    clock.advance(seconds=29)
    assert outputs.wait_idle(120)
    assert outputs_of(consulting, "sono1", signed.id)[0]["status"] == "failed"  # not due yet
    clock.advance(seconds=2)
    assert outputs.wait_idle(120)
    (done,) = outputs_of(consulting, "sono1", signed.id)
    assert (done["status"], done["attempts"], done["last_error"]) == ("done", 2, None)
    assert consulting.get("sono1", f"{signed.path}/pdf").status_code == 200
    # the retry rebuilt the same SR: a duplicate, not a second version of it
    sr_uid = done["structured_report"]["sop_instance_uid"]
    assert sr_uid == sr_instances[0].sop_instance_uid
    assert len(consulting.api.store.index.versions(sr_uid)) == 1


def test_a_claim_left_by_a_stopped_worker_is_taken_over(
    consulting: Consulting, outputs: ReportOutputs, clock: FakeClock
) -> None:
    outputs.stop()  # no worker: the request stays pending
    signed = sign_report(consulting, outputs, wait=False)
    (claimed,) = outputs.records.claim("a-worker-that-died", clock(), stale_after=outputs.stale_after)
    assert claimed.consult_id == signed.id
    assert outputs.run_due() == 0  # claimed, not stale yet
    clock.advance(minutes=11)
    assert outputs.run_due() == 1
    (done,) = outputs_of(consulting, "sono1", signed.id)
    assert done["status"] == "done"


def test_a_signed_version_whose_request_was_lost_is_found_again(
    consulting: Consulting, outputs: ReportOutputs
) -> None:
    signed = sign_report(consulting, outputs)
    with consulting.api.store.index.engine.begin() as conn:
        conn.execute(text("DELETE FROM report_outputs"))
    assert outputs.of_consult(signed.id) == []
    assert outputs.reconcile() == 1
    assert outputs.reconcile() == 0
    assert outputs.wait_idle(120)
    (done,) = outputs_of(consulting, "sono1", signed.id)
    assert (done["version"], done["status"]) == (2, "done")


def test_a_patient_consult_without_a_study_gets_a_pdf_and_no_dicom_objects(
    consulting: Consulting, outputs: ReportOutputs
) -> None:
    consult = accepted(consulting, patient_id="P0009")
    path = f"/api/consults/{consult['id']}/report"
    assert consulting.put("doctor1", path, DRAFT).status_code == 200
    assert consulting.post("doctor1", f"{path}/sign").status_code == 200
    assert consulting.post("specialist", f"{path}/sign").status_code == 200
    assert outputs.wait_idle(120)
    (output,) = outputs_of(consulting, "sono1", consult["id"])
    assert output["status"] == "done"
    assert (output["structured_report"], output["encapsulated_pdf"], output["study_instance_uid"]) == (
        None,
        None,
        None,
    )
    assert consulting.get("sono1", f"{path}/pdf").headers["content-type"] == "application/pdf"
    fhir = consulting.get("sono1", f"/fhir/DiagnosticReport/{consult['id']}").json()
    assert "imagingStudy" not in fhir
    assert fhir["subject"]["identifier"]["value"] == "P0009"


def test_the_consult_stays_signed_until_the_township_acknowledges(
    consulting: Consulting, outputs: ReportOutputs
) -> None:
    signed = sign_report(consulting, outputs)
    assert consulting.get("sono1", f"/api/consults/{signed.id}").json()["status"] == "signed"
    delivered = consulting.post("sono1", f"/api/consults/{signed.id}/acknowledge")
    assert delivered.json()["status"] == "delivered"
