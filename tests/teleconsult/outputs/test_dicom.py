"""The DICOM outputs as a PACS receives them: valid (dciodvfy), the study's patient, verified, new series."""

from __future__ import annotations

from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage, EnhancedSRStorage

from teleconsult.consults.outputs import ReportOutputs
from teleconsult.consults.outputs.dicom import StudyClock
from tests.teleconsult.consults.conftest import Consulting
from tests.teleconsult.outputs.conftest import (
    PACS,
    SignedConsult,
    dciodvfy,
    outputs_of,
    sign_report,
    stored,
)


@pytest.fixture
def signed(consulting: Consulting, outputs: ReportOutputs) -> SignedConsult:
    return sign_report(consulting, outputs)


def _objects(consulting: Consulting, signed: SignedConsult) -> tuple[Dataset, Dataset]:
    (output,) = outputs_of(consulting, "sono1", signed.id)
    assert output["status"] == "done", output
    return (
        stored(consulting, output["structured_report"]["sop_instance_uid"]),
        stored(consulting, output["encapsulated_pdf"]["sop_instance_uid"]),
    )


def _content_texts(item: Dataset) -> list[str]:
    texts = [str(item.TextValue)] if "TextValue" in item else []
    for child in item.get("ContentSequence", []):
        texts += _content_texts(child)
    return texts


def _observers(sr: Dataset) -> dict[str, str]:
    """Person observer name -> role in this procedure, from the root's observation context."""
    found: dict[str, str] = {}
    name = None
    for item in sr.ContentSequence:
        if item.RelationshipType != "HAS OBS CONTEXT":
            continue
        concept = item.ConceptNameCodeSequence[0].CodeMeaning
        if concept == "Person Observer Name":
            name = str(item.PersonName)
        elif concept == "Person Observer's Role in this Procedure" and name is not None:
            found[name] = item.ConceptCodeSequence[0].CodeMeaning
    return found


def test_sr_and_encapsulated_pdf_pass_dciodvfy(
    consulting: Consulting, signed: SignedConsult, tmp_path: Path
) -> None:
    for data_set in _objects(consulting, signed):
        lines = dciodvfy(data_set, tmp_path)
        errors = [line for line in lines if line.startswith("Error")]
        assert not errors, "\n".join(lines)


def test_the_sr_is_verified_by_the_reviewer_with_the_performer_as_author(
    consulting: Consulting, signed: SignedConsult
) -> None:
    sr, _pdf = _objects(consulting, signed)
    report = consulting.get("sono1", signed.path).json()
    performing, reviewing = report["signatures"]

    assert sr.SOPClassUID == EnhancedSRStorage
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == ("COMPLETE", "VERIFIED", "FINAL")
    (verifier,) = sr.VerifyingObserverSequence
    assert str(verifier.VerifyingObserverName) == "赵医生^"
    assert verifier.VerifyingOrganization == "County Hospital"
    local = datetime(2026, 11, 24, 8, tzinfo=UTC).astimezone()  # the study has no offset: this server's
    assert verifier.VerificationDateTime == local.strftime("%Y%m%d%H%M%S.000000")
    assert sr.TimezoneOffsetFromUTC == local.strftime("%z")
    assert reviewing["signed_at"].startswith("2026-11-24T08:00:00")
    assert verifier.VerifyingObserverIdentificationCodeSequence[0].CodeValue == "specialist2"
    (author,) = sr.AuthorObserverSequence
    assert (str(author.PersonName), author.InstitutionName) == ("王医生^", "Township 1")
    assert sr.ParticipantSequence[0].ParticipationType == "ATTEST"
    assert performing["signer"] == "wangdoc"
    assert _observers(sr) == {"王医生^": "Performing", "赵医生^": "Verifying"}

    texts = _content_texts(sr)
    assert "肝右叶低回声结节，考虑血管瘤可能，建议增强CT。" in texts
    assert any(text.startswith("肝脏 Liver") and "128 mm" in text for text in texts)
    assert "肝内低回声结节，性质待定，请会诊。" in texts
    assert sr.ConceptNameCodeSequence[0].CodeValue == "25061-3"
    # highdicom reads it back as the document it is
    assert hd.sr.EnhancedSR.from_dataset(sr).content is not None


def test_both_objects_carry_the_study_and_patient_in_new_series_in_utf8(
    consulting: Consulting, signed: SignedConsult
) -> None:
    study = signed.study  # GB18030 on the way in
    for data_set in _objects(consulting, signed):
        assert data_set.SpecificCharacterSet == "ISO_IR 192"
        assert str(data_set.PatientName) == "Wang^XiaoMing=王^小明"
        assert "王".encode() in data_set["PatientName"].value.original_string  # UTF-8 bytes
        assert (data_set.PatientID, data_set.PatientSex, data_set.PatientBirthDate) == (
            "P0001",
            "M",
            "19700101",
        )
        assert data_set.StudyInstanceUID == study.StudyInstanceUID
        assert data_set.AccessionNumber == study.AccessionNumber
        assert data_set.SeriesInstanceUID != study.SeriesInstanceUID
    sr, pdf = _objects(consulting, signed)
    assert sr.SeriesInstanceUID != pdf.SeriesInstanceUID
    assert (sr.Modality, pdf.Modality) == ("SR", "DOC")
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        study.SOPInstanceUID
    )


def test_the_encapsulated_pdf_is_the_served_pdf(consulting: Consulting, signed: SignedConsult) -> None:
    _sr, encapsulated = _objects(consulting, signed)
    served = consulting.get("sono1", f"{signed.path}/pdf").content
    assert encapsulated.SOPClassUID == EncapsulatedPDFStorage
    assert encapsulated.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert encapsulated.EncapsulatedDocumentLength == len(served)
    assert encapsulated.EncapsulatedDocument[: len(served)] == served
    assert (encapsulated.BurnedInAnnotation, encapsulated.VerificationFlag) == ("YES", "VERIFIED")
    assert encapsulated.ConversionType == "WSD"
    # the key image shown in the PDF is named as its source
    assert encapsulated.SourceInstanceSequence[0].ReferencedSOPInstanceUID == signed.study.SOPInstanceUID


def test_the_outputs_are_queued_for_the_townships_pacs(consulting: Consulting, signed: SignedConsult) -> None:
    (output,) = outputs_of(consulting, "sono1", signed.id)
    ours = {output["structured_report"]["sop_instance_uid"], output["encapsulated_pdf"]["sop_instance_uid"]}
    queued = consulting.api.store.outbox.list_entries(study_instance_uid=signed.study.StudyInstanceUID)
    assert {(e.sop_instance_uid, e.destination_ae_title, e.rule) for e in queued} == {
        (uid, PACS, "reports-home") for uid in ours
    }
    assert {(f["destination_ae_title"], f["status"]) for f in output["forwarding"]} == {(PACS, "pending")}
    # the image that came from the township's ultrasound is not sent back by this rule
    assert signed.study.SOPInstanceUID not in {e.sop_instance_uid for e in queued}


def test_stored_objects_round_trip(consulting: Consulting, signed: SignedConsult) -> None:
    for data_set in _objects(consulting, signed):
        buffer = BytesIO()
        data_set.save_as(buffer, enforce_file_format=True)
        again = dcmread(BytesIO(buffer.getvalue()))
        assert again.SOPInstanceUID == data_set.SOPInstanceUID
        assert str(again.PatientName) == str(data_set.PatientName)


def test_times_are_stated_in_the_studys_time_zone() -> None:
    signed_at = datetime(2026, 11, 24, 8, 20, 41, 7000, tzinfo=UTC)
    beijing = Dataset()
    beijing.TimezoneOffsetFromUTC = "+0800"
    clock = StudyClock.of(beijing)
    assert clock.date_time(signed_at) == ("20261124", "162041.007000", "20261124162041.007000")
    assert clock.offset(signed_at) == "+0800"
    west = Dataset()
    west.TimezoneOffsetFromUTC = "-0330"
    assert StudyClock.of(west).date_time(signed_at)[2] == "20261124045041.007000"
    assert StudyClock.of(Dataset()).offset(signed_at) == signed_at.astimezone().strftime("%z")
