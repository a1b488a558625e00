"""The signed report's PDF as a DICOM Encapsulated PDF (PS3.3 A.45.1), for PACS that show no SR.

Modules: Patient and General Study (copied from the study), Encapsulated
Document Series (modality DOC), General Equipment, SC Equipment
(conversion type WSD: made on a workstation), Encapsulated Document and SOP
Common, built on highdicom's ``SOPClass``. The document is marked verified
and lists, as Source Instance Sequence, the images whose thumbnails it shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian
from pydicom.valuerep import DA, TM

from teleconsult import __version__
from teleconsult.consults.outputs.dicom import (
    MANUFACTURER,
    PDF_SERIES_NUMBER,
    UTF8,
    StudyClock,
    subject_header,
    text_value,
)
from teleconsult.consults.outputs.document import ReportDocument, document_title
from teleconsult.domain.studies import InstanceRecord

__all__ = ["build_encapsulated_pdf"]


def _source(record: InstanceRecord) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = record.sop_class_uid
    item.ReferencedSOPInstanceUID = record.sop_instance_uid
    return item


def build_encapsulated_pdf(
    document: ReportDocument,
    header: Dataset,
    pdf: bytes,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    sources: Sequence[InstanceRecord] = (),
) -> hd.SOPClass:
    """The Encapsulated PDF of one signed version, in the study ``header`` comes from."""
    if not pdf.startswith(b"%PDF-"):
        raise ValueError("pdf must be a PDF document (it does not start with %PDF-)")
    signature = document.signature
    clock = StudyClock.of(header)
    content_date, content_time, content_datetime = clock.date_time(signature.signed_at)
    series_date, series_time, _ = clock.date_time(document.final_signature.signed_at)
    subject = subject_header(header, document)
    ds = hd.SOPClass(
        study_instance_uid=subject.StudyInstanceUID,
        series_instance_uid=series_instance_uid,
        series_number=PDF_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        sop_class_uid=EncapsulatedPDFStorage,
        instance_number=document.version,
        modality="DOC",
        manufacturer=MANUFACTURER,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        specific_character_set=UTF8,
        series_description=text_value(f"会诊报告 Consult report PDF {document.template.code}", 64),
        software_versions=__version__,
        institution_name=text_value(document.reviewing.name, 64),
        content_date=content_date,
        content_time=content_time,
        series_date=series_date,
        series_time=series_time,
    )
    ds.copy_patient_and_study_information(subject)
    ds.InstanceCreationDate, ds.InstanceCreationTime = DA(content_date), TM(content_time)
    ds.TimezoneOffsetFromUTC = clock.offset(signature.signed_at)
    # SC Equipment
    ds.ConversionType = "WSD"
    ds.SecondaryCaptureDeviceManufacturer = MANUFACTURER
    ds.SecondaryCaptureDeviceSoftwareVersions = __version__
    # Encapsulated Document
    title = document_title(document.template.code)
    concept = Dataset()
    concept.CodeValue = title.code
    concept.CodingSchemeDesignator = title.scheme
    concept.CodeMeaning = title.meaning
    ds.ConceptNameCodeSequence = [concept]
    ds.DocumentTitle = text_value(
        f"{document.template.label.zh_cn} {document.template.label.en} v{document.version}", 64
    )
    ds.AcquisitionDateTime = content_datetime
    ds.BurnedInAnnotation = "YES"  # it names the patient
    ds.VerificationFlag = "VERIFIED"
    if sources:
        ds.SourceInstanceSequence = [_source(record) for record in sources]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    # OB values have even length; the pad byte is not part of the document.
    ds.EncapsulatedDocument = pdf + b"\x00" * (len(pdf) % 2)
    return ds
