"""What every output of a signed report shows, gathered once per signed version.

The PDF, the DICOM SR, the Encapsulated PDF and the FHIR DiagnosticReport
all print the same facts: the report as it stood when one version was
signed (later addenda left out, so the outputs of version 2 never change
when version 3 is signed), both organisations, the patient, the study, every
signature with its key fingerprint, and whether the signatures verify.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from teleconsult.consults.reporting import ReportService, Verification
from teleconsult.domain.consults import Consult
from teleconsult.domain.identity import Role
from teleconsult.domain.report_templates import FieldKind, Label, ReportTemplate, get_template
from teleconsult.domain.reports import (
    Report,
    ReportSignature,
    ReportStatus,
    ReportVersion,
    SignatureRole,
    VersionKind,
)
from teleconsult.errors import NotFoundError

__all__ = [
    "DocumentTitle",
    "FindingSection",
    "Party",
    "PatientDetails",
    "ReportDocument",
    "Signer",
    "StudyDetails",
    "collect_document",
    "document_title",
    "person_name_text",
]


@dataclass(frozen=True, slots=True)
class DocumentTitle:
    """A report's title as a LOINC code (DICOM CID 7000), for the SR, the PDF object and FHIR."""

    code: str
    meaning: str
    scheme: str = "LN"


# DICOM PS3.16 CID 7000 "Diagnostic Imaging Report Document Titles". 11524-6 is LOINC's
# EKG study (the check digit of 11524 is 6).
_TITLES: Mapping[str, DocumentTitle] = {
    "abdominal_ultrasound": DocumentTitle("25061-3", "Ultrasound Report"),
    "obstetric_ultrasound": DocumentTitle("11525-3", "Ultrasound Obstetric and Gyn Report"),
    "echocardiography": DocumentTitle("42148-7", "Echocardiography Report"),
    "chest_dr": DocumentTitle("43468-8", "X-Ray Report"),
    "ecg_12_lead": DocumentTitle("11524-6", "ECG Report"),
}
_GENERIC_TITLE = DocumentTitle("18748-4", "Diagnostic Imaging Report")
# Modalities of reports in the study (ours among them): not what was examined.
_REPORT_MODALITIES = frozenset({"SR", "DOC", "KO"})


def document_title(template: str) -> DocumentTitle:
    return _TITLES.get(template, _GENERIC_TITLE)


@dataclass(frozen=True, slots=True)
class Party:
    """An organisation as printed: its name, and the code the service knows it by."""

    code: str
    name: str

    def describe(self) -> str:
        return self.name if self.name == self.code else f"{self.name} ({self.code})"


@dataclass(frozen=True, slots=True)
class Signer:
    signature: ReportSignature
    organisation: Party
    role: Role | None  # the signer's account role, None if the account is gone


@dataclass(frozen=True, slots=True)
class PatientDetails:
    patient_id: str
    issuer_of_patient_id: str
    name: str = ""  # DICOM PN: alphabetic=ideographic=phonetic groups
    sex: str = ""
    birth_date: str = ""  # DICOM DA


@dataclass(frozen=True, slots=True)
class StudyDetails:
    study_instance_uid: str
    source_organisation: str
    study_date: str
    accession_number: str
    description: str
    modalities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FindingSection:
    label: Label
    fields: tuple[tuple[Label, str], ...]  # field label, value with its unit

    def text(self) -> str:
        """One line, Chinese label first: what an SR TEXT item and FHIR carry."""
        parts = [f"{label.zh_cn} {label.en}: {value}" for label, value in self.fields]
        return f"{self.label.zh_cn} {self.label.en} — " + "; ".join(parts)


@dataclass(frozen=True, slots=True)
class ReportDocument:
    consult: Consult
    report: Report  # as it stood when ``version`` was signed
    version: int
    template: ReportTemplate
    requesting: Party
    reviewing: Party
    patient: PatientDetails
    study: StudyDetails | None
    signers: tuple[Signer, ...]
    verification: Verification

    @property
    def final_version(self) -> ReportVersion:
        final = self.report.final_version
        assert final is not None
        return final

    @property
    def final_signature(self) -> ReportSignature:
        signature = self.report.final_signature
        assert signature is not None
        return signature

    @property
    def signature(self) -> ReportSignature:
        """The reviewing signature of ``version``: the one these outputs were made for."""
        signature = self.report.signature(self.version, SignatureRole.REVIEWING)
        assert signature is not None
        return signature

    @property
    def kind(self) -> VersionKind:
        version = self.report.version(self.version)
        assert version is not None
        return version.kind

    @property
    def status(self) -> ReportStatus:
        return self.report.status

    @property
    def addenda(self) -> list[ReportVersion]:
        return self.report.addenda

    @property
    def impression(self) -> str:
        return str(self.final_version.content.get("impression", ""))

    def signer(self, signature: ReportSignature) -> Signer:
        return next(s for s in self.signers if s.signature == signature)

    @property
    def performer(self) -> Signer | None:
        """The township signature the final one co-signs (None when none was required)."""
        performing = self.report.latest_performing
        return None if performing is None else self.signer(performing)

    @property
    def reviewer(self) -> Signer:
        """The specialist whose signature made the report final."""
        return self.signer(self.final_signature)

    def findings(self) -> list[FindingSection]:
        """The final version's findings in template order, numbers with their unit."""
        content = self.final_version.content.get("findings", {})
        sections = []
        for section in self.template.sections:
            values = content.get(section.key)
            if not values:
                continue
            fields = []
            for spec in section.fields:
                if spec.key not in values:
                    continue
                value = values[spec.key]
                if spec.kind is FieldKind.CHOICE:
                    choice = next((c for c in spec.choices if c.value == value), None)
                    text = f"{choice.label.zh_cn} {choice.label.en}" if choice else str(value)
                elif spec.kind is FieldKind.NUMBER:
                    text = f"{_number_text(value)} {spec.unit or ''}".strip()
                else:
                    text = str(value)
                fields.append((spec.label, text))
            sections.append(FindingSection(section.label, tuple(fields)))
        return sections


def _number_text(value: float) -> str:
    """12 as 12, 103.5 as 103.5: the stored JSON number, without float noise or exponents."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return format(value, ".15g")


def person_name_text(name: str) -> str:
    """A DICOM PN as people read it: ideographic first (王小明), the alphabetic form after it."""
    groups = ([*name.split("="), "", ""])[:2]
    alphabetic = _joined([part for part in groups[0].split("^") if part])
    ideographic = "".join(part for part in groups[1].split("^") if part)
    if ideographic and alphabetic:
        return f"{ideographic} ({alphabetic})"
    return ideographic or alphabetic


def _joined(parts: list[str]) -> str:
    """Components as the name is written: 王小明 without spaces, Wang Xiaoming with.

    Many devices put a Chinese name in the first (alphabetic) group.
    """
    if parts and all(_is_cjk(part) for part in parts):
        return "".join(parts)
    return " ".join(parts)


def _is_cjk(text: str) -> bool:
    return all(
        "\u3400" <= char <= "\u9fff" or "\uf900" <= char <= "\ufaff" or "\U00020000" <= char <= "\U0003134f"
        for char in text
    )


def as_of(report: Report, version: int) -> Report:
    """The report as it stood when ``version`` was written: later versions and signatures left out."""
    return Report(
        consult_id=report.consult_id,
        versions=tuple(v for v in report.versions if v.version <= version),
        signatures=tuple(s for s in report.signatures if s.version <= version),
    )


def collect_document(
    reports: ReportService,
    consult_id: str,
    version: int,
    *,
    sex: str = "",
    birth_date: str = "",
) -> ReportDocument:
    """The document of one reviewing-signed version; ``NotFoundError`` if there is none."""
    consult, whole = reports.final_report(consult_id)
    report = as_of(whole, version)
    if report.final_signature is None or report.signature(version, SignatureRole.REVIEWING) is None:
        raise NotFoundError(f"version {version} of the report of consult {consult_id} is not signed as final")
    consults = reports.consults
    names = {organisation.code: organisation.name for organisation in consults.identity.organisations()}

    def party(code: str) -> Party:
        return Party(code, names.get(code, code))

    signers = []
    for signature in report.signatures:
        user = consults.identity.user(signature.signer)
        signers.append(Signer(signature, party(signature.signer_organisation), user.role if user else None))
    summary = consults.study(consult)
    study = None
    patient = PatientDetails(consult.patient_id, consult.issuer_of_patient_id, sex=sex, birth_date=birth_date)
    if summary is not None:
        study = StudyDetails(
            study_instance_uid=summary.study_instance_uid,
            source_organisation=summary.source_organisation,
            study_date=summary.study_date,
            accession_number=summary.accession_number,
            description=summary.study_description,
            modalities=tuple(m for m in summary.modalities if m not in _REPORT_MODALITIES),
        )
        patient = PatientDetails(
            summary.patient_id, summary.issuer_of_patient_id, summary.patient_name, sex, birth_date
        )
    return ReportDocument(
        consult=consult,
        report=report,
        version=version,
        template=get_template(report.final_version.template),  # type: ignore[union-attr]
        requesting=party(consult.source_organisation),
        reviewing=party(report.final_signature.signer_organisation),
        patient=patient,
        study=study,
        signers=tuple(signers),
        verification=reports.verify_report(consult, report),
    )
