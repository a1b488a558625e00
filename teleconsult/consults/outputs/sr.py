"""The signed report as a DICOM Enhanced SR document (highdicom), filed in the study's PACS.

The content follows TID 2000 (Basic Diagnostic Imaging Report): a titled
root container (LOINC, CID 7000), the language, the observation context
with both signers (TID 1002 person observers: the township performer and
the reviewing specialist), then sections of TEXT items: the request,
findings, impression and any addenda. Findings stay text: the templates'
measurements have no standard concept codes, and the signed content is what
must reach the PACS unchanged.

The document is final: Completion Flag ``COMPLETE``, Preliminary Flag
``FINAL`` and Verification Flag ``VERIFIED``, the reviewing specialist in
the Verifying Observer Sequence at their signing time, the performing
signer as Author Observer and as an attesting Participant. An addendum's SR
is a new instance in the same series whose Predecessor Documents Sequence
names the SR it supersedes.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from highdicom.sr import (
    CodedConcept,
    ContainerContentItem,
    LanguageOfContentItemAndDescendants,
    ObserverContext,
    PersonObserverIdentifyingAttributes,
    RelationshipTypeValues,
    TextContentItem,
)
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DataSequence
from pydicom.sr.codedict import codes
from pydicom.valuerep import DA, TM

from teleconsult import __version__
from teleconsult.consults.outputs.dicom import (
    MANUFACTURER,
    PERSON_CODING_SCHEME_ITEM,
    SR_SERIES_NUMBER,
    UTF8,
    StudyClock,
    acquired_at,
    person_code,
    person_name,
    subject_header,
    text_value,
)
from teleconsult.consults.outputs.document import ReportDocument, Signer, document_title
from teleconsult.domain.identity import Role
from teleconsult.domain.reports import SignatureRole, format_time
from teleconsult.domain.studies import InstanceRecord

__all__ = ["build_report_sr"]

_CONTAINS = RelationshipTypeValues.CONTAINS
_CHINESE = CodedConcept("zh-CN", "RFC5646", "Chinese (China)")
_REQUEST_SECTION = CodedConcept("55115-0", "LN", "Request")
_ADDENDUM_SECTION = CodedConcept("55107-7", "LN", "Addendum")
_ROLE_IN_ORGANISATION = {
    Role.TOWNSHIP_DOCTOR: codes.SCT.Physician,
    Role.SPECIALIST: codes.SCT.Consultant,
}


def _observer(signer: Signer, role_in_procedure: CodedConcept) -> ObserverContext:
    signature = signer.signature
    return ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=PersonObserverIdentifyingAttributes(
            name=person_name(signature.signer_name),
            login_name=signature.signer,
            organization_name=signer.organisation.name,
            role_in_organization=_ROLE_IN_ORGANISATION.get(signer.role) if signer.role else None,
            role_in_procedure=role_in_procedure,
        ),
    )


def _section(name: CodedConcept, item_name: CodedConcept, texts: Sequence[str]) -> ContainerContentItem:
    section = ContainerContentItem(name=name, relationship_type=_CONTAINS)
    section.ContentSequence = DataSequence(
        [TextContentItem(name=item_name, value=text, relationship_type=_CONTAINS) for text in texts]
    )
    return section


def _content(document: ReportDocument) -> ContainerContentItem:
    title = document_title(document.template.code)
    root = ContainerContentItem(
        name=CodedConcept(title.code, title.scheme, title.meaning), template_id="2000"
    )
    items: list[Dataset] = [LanguageOfContentItemAndDescendants(_CHINESE)[0]]
    if document.performer is not None:
        items += _observer(document.performer, codes.DCM.Performing)
    items += _observer(document.reviewer, codes.DCM.Verifying)
    items.append(_section(_REQUEST_SECTION, codes.DCM.Request, [document.consult.question]))
    findings = [section.text() for section in document.findings()] or ["—"]
    items.append(_section(codes.DCM.Findings, codes.DCM.Finding, findings))
    items.append(_section(codes.DCM.Impressions, codes.DCM.Impression, [document.impression or "—"]))
    if document.addenda:
        texts = []
        for addendum in document.addenda:
            signature = document.report.signature(addendum.version, SignatureRole.REVIEWING)
            signed = f"{signature.signer_name} {format_time(signature.signed_at)}" if signature else ""
            reason = str(addendum.content.get("reason", ""))
            text = f"版本 {addendum.version} ({signed}): {addendum.content.get('text', '')}"
            texts.append(text + (f" — 原因 reason: {reason}" if reason else ""))
        items.append(_section(_ADDENDUM_SECTION, codes.DCM.Addendum, texts))
    root.ContentSequence = DataSequence(items)
    return root


def _evidence(header: Dataset, records: Sequence[InstanceRecord]) -> list[Dataset]:
    evidence = [header]
    for record in records:
        if record.sop_instance_uid == header.get("SOPInstanceUID"):
            continue
        item = Dataset()
        item.SOPClassUID = record.sop_class_uid
        item.SOPInstanceUID = record.sop_instance_uid
        item.StudyInstanceUID = record.study_instance_uid
        item.SeriesInstanceUID = record.series_instance_uid
        evidence.append(item)
    return evidence


def _observer_item(signer: Signer) -> Dataset:
    """An Author Observer / Participant item (PS3.3 C.17.2) for a person who signed."""
    signature = signer.signature
    item = Dataset()
    item.ObserverType = "PSN"
    item.PersonName = person_name(signature.signer_name)
    item.PersonIdentificationCodeSequence = [person_code(signature.signer, signature.signer_name)]
    item.InstitutionName = text_value(signer.organisation.name, 64)
    item.InstitutionCodeSequence = []
    item.InstitutionalDepartmentName = ""
    return item


def build_report_sr(
    document: ReportDocument,
    header: Dataset,
    evidence: Sequence[InstanceRecord],
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    predecessor: Dataset | None = None,
) -> hd.sr.EnhancedSR:
    """The Enhanced SR of one signed version, in the study ``header`` comes from."""
    signature = document.signature
    verifier = document.signer(signature)
    clock = StudyClock.of(header)
    content_date, content_time, content_datetime = clock.date_time(signature.signed_at)
    series_date, series_time, _ = clock.date_time(document.final_signature.signed_at)
    subject = subject_header(header, document)
    sr = hd.sr.EnhancedSR(
        evidence=_evidence(subject, evidence),
        content=_content(document),
        series_instance_uid=series_instance_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=document.version,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=True,
        is_verified=True,
        institution_name=text_value(document.reviewing.name, 64),
        verifying_observer_name=person_name(signature.signer_name),
        verifying_organization=text_value(verifier.organisation.name, 64),
        previous_versions=[predecessor] if predecessor is not None else None,
        specific_character_set=UTF8,
        series_description=text_value(f"会诊报告 Consult report SR {document.template.code}", 64),
        software_versions=__version__,
        coding_schemes=[PERSON_CODING_SCHEME_ITEM],
        content_date=content_date,
        content_time=content_time,
        series_date=series_date,
        series_time=series_time,
    )
    # The instant of the signature, not of this attempt: a retry builds the same bytes.
    sr.InstanceCreationDate, sr.InstanceCreationTime = DA(content_date), TM(content_time)
    sr.TimezoneOffsetFromUTC = clock.offset(signature.signed_at)
    # highdicom names the device that acquired the header instance, "contributing" now: it
    # contributed when it acquired the images.
    for equipment in sr.get("ContributingEquipmentSequence", []):
        equipment.ContributionDateTime = acquired_at(header) or content_datetime
    observer = sr.VerifyingObserverSequence[0]
    observer.VerificationDateTime = content_datetime
    observer.VerifyingObserverIdentificationCodeSequence = [
        person_code(signature.signer, signature.signer_name)
    ]
    performing = document.performer
    if performing is not None:
        sr.AuthorObserverSequence = [_observer_item(performing)]
        attest = _observer_item(performing)
        attest.ParticipationType = "ATTEST"
        attest.ParticipationDateTime = clock.date_time(performing.signature.signed_at)[2]
        sr.ParticipantSequence = [attest]
    return sr
