"""The signed report as a PDF: what the township prints, files and hands to the patient.

Labels are bilingual (Simplified Chinese first, English after it). Times are
UTC to the millisecond, exactly as the signed payloads carry them, so a
reader can match the printed signatures against ``GET .../report/verify``.
The PDF is built ``invariant`` (no creation time, a fixed document id): the
same signed version always gives the same bytes, so a retried attempt
stores the same Encapsulated PDF instead of a new version of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from io import BytesIO
from typing import Any

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from teleconsult import __version__
from teleconsult.consults.outputs.document import ReportDocument, Signer, person_name_text
from teleconsult.consults.outputs.fonts import ReportFont
from teleconsult.consults.outputs.study import KeyImage
from teleconsult.domain.identity import Role
from teleconsult.domain.reports import SignatureRole, VersionKind, format_time

__all__ = ["build_report_pdf", "sex_text"]

_SEX = {"M": "男 Male", "F": "女 Female", "O": "其他 Other"}
_ROLE = {
    SignatureRole.PERFORMING: "检查医师 Performing physician",
    SignatureRole.REVIEWING: "审核医师 Reviewing specialist",
}
_ACCOUNT_ROLE = {
    Role.SONOGRAPHER: "超声医师 sonographer",
    Role.TOWNSHIP_DOCTOR: "乡镇医生 township doctor",
    Role.SPECIALIST: "专科医师 specialist",
}
_STATUS = {"final": "终审 final", "amended": "已补充 amended (signed addenda)"}
_GREY = colors.Color(0.93, 0.93, 0.93)
_THUMBNAIL = 40 * mm


def sex_text(sex: str) -> str:
    return _SEX.get(sex.strip().upper(), sex)


def _date_text(value: str) -> str:
    value = value.strip()
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def _utc(value: datetime) -> str:
    return format_time(value).replace("T", " ").replace("Z", " UTC")


class _Styles:
    def __init__(self, font: ReportFont) -> None:
        self.font = font
        base = {"fontName": font.name, "wordWrap": "CJK"}
        self.title = ParagraphStyle("title", fontSize=16, leading=22, alignment=1, **base)
        self.subtitle = ParagraphStyle("subtitle", fontSize=11, leading=15, alignment=1, **base)
        self.heading = ParagraphStyle("heading", fontSize=11, leading=15, spaceBefore=8, spaceAfter=3, **base)
        self.body = ParagraphStyle("body", fontSize=9.5, leading=13.5, **base)
        self.field = ParagraphStyle("field", fontSize=9.5, leading=13.5, leftIndent=6 * mm, **base)
        self.small = ParagraphStyle("small", fontSize=7.5, leading=10, **base)

    def text(self, text: str, style: ParagraphStyle | None = None) -> Paragraph:
        return Paragraph(self.font.markup(text), style or self.body)


def _grid(rows: Sequence[Sequence[Flowable]], widths: Sequence[float]) -> Table:
    table = Table([list(row) for row in rows], colWidths=list(widths))
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("BACKGROUND", (0, 0), (0, -1), _GREY),
            ]
        )
    )
    return table


def _details(document: ReportDocument, s: _Styles) -> Table:
    patient, study, consult = document.patient, document.study, document.consult
    version = f"{document.version} — {_STATUS.get(document.status.value, document.status.value)}"
    if document.addenda:
        version += f", {len(document.addenda)} 份补充 addenda"
    rows = [
        ("申请机构 Requesting organisation", document.requesting.describe()),
        ("诊断机构 Reviewing organisation", document.reviewing.describe()),
        ("姓名 Patient name", person_name_text(patient.name) or "—"),
        ("患者编号 Patient ID", f"{patient.patient_id} (issuer {patient.issuer_of_patient_id})"),
        ("性别 Sex", sex_text(patient.sex) or "—"),
        ("出生日期 Birth date", _date_text(patient.birth_date) or "—"),
        ("检查 Exam", f"{document.template.label.zh_cn} {document.template.label.en}"),
    ]
    if study is not None:
        description = " / ".join(filter(None, [study.description, "\\".join(study.modalities)]))
        rows += [
            ("检查日期 Study date", _date_text(study.study_date) or "—"),
            ("检查描述 Study", description or "—"),
            ("检查号 Accession number", study.accession_number or "—"),
            ("检查 UID Study Instance UID", study.study_instance_uid),
        ]
    rows += [
        ("会诊编号 Consult", consult.consult_id),
        ("报告版本 Report version", version),
        ("签发时间 Issued", _utc(document.signature.signed_at)),
    ]
    return _grid([[s.text(k), s.text(v)] for k, v in rows], [52 * mm, 118 * mm])


def _findings(document: ReportDocument, s: _Styles) -> list[Flowable]:
    flow: list[Flowable] = [s.text("检查所见 Findings", s.heading)]
    sections = document.findings()
    if not sections:
        flow.append(s.text("—"))
    for section in sections:
        flow.append(s.text(f"{section.label.zh_cn} {section.label.en}", s.body))
        for label, value in section.fields:
            flow.append(s.text(f"{label.zh_cn} {label.en}: {value}", s.field))
    label = document.template.impression_label
    flow += [s.text(f"{label.zh_cn} {label.en}", s.heading), s.text(document.impression or "—")]
    return flow


def _addenda(document: ReportDocument, s: _Styles) -> list[Flowable]:
    if not document.addenda:
        return []
    flow: list[Flowable] = [s.text("补充报告 Addenda", s.heading)]
    for addendum in document.addenda:
        signature = document.report.signature(addendum.version, SignatureRole.REVIEWING)
        signed = f"{signature.signer_name}, {_utc(signature.signed_at)}" if signature else "unsigned"
        flow.append(s.text(f"版本 Version {addendum.version} — {signed}"))
        flow.append(s.text(str(addendum.content.get("text", ""))))
        reason = str(addendum.content.get("reason", ""))
        if reason:
            flow.append(s.text(f"原因 Reason: {reason}", s.small))
        flow.append(Spacer(1, 2 * mm))
    return flow


def _key_images(images: Sequence[KeyImage], s: _Styles) -> list[Flowable]:
    if not images:
        return []
    cells: list[Any] = []
    for image in images:
        picture = Image(BytesIO(image.jpeg), kind="proportional", width=_THUMBNAIL, height=_THUMBNAIL)
        record = image.record
        caption = f"{record.instance_number or ''} · {record.sop_instance_uid[-12:]}"
        cells.append([picture, s.text(caption, s.small)])
    table = Table([cells], colWidths=[_THUMBNAIL + 3 * mm] * len(cells), hAlign="LEFT")
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return [KeepTogether([s.text("关键图像 Key images", s.heading), table])]


def _role_text(document: ReportDocument, signer: Signer) -> str:
    version = document.report.version(signer.signature.version)
    if version is not None and version.kind is VersionKind.ADDENDUM:
        return "补充报告 Addendum"
    return _ROLE[signer.signature.role]


def _signer_line(signer: Signer) -> str:
    signature = signer.signature
    account = _ACCOUNT_ROLE.get(signer.role, signer.role.value) if signer.role else ""
    return f"{signature.signer_name} ({signature.signer}{', ' + account if account else ''})"


def _signatures(document: ReportDocument, s: _Styles) -> list[Flowable]:
    header = ["角色 Role", "签名人 Signer", "机构 Organisation", "签名时间 Signed (UTC)", "版本 Version"]
    rows: list[list[Flowable]] = [[s.text(h, s.small) for h in header]]
    checks = {check.signature: check for check in document.verification.signatures}
    for signer in document.signers:
        signature = signer.signature
        check = checks.get(signature)
        verdict = (
            "有效 valid" if check and check.valid else f"无效 NOT valid: {check.reason if check else '?'}"
        )
        rows.append(
            [
                s.text(_role_text(document, signer), s.small),
                s.text(_signer_line(signer), s.small),
                s.text(signer.organisation.describe(), s.small),
                s.text(_utc(signature.signed_at), s.small),
                s.text(str(signature.version), s.small),
            ]
        )
        rows.append(
            [
                s.text("密钥 Key", s.small),
                s.text(
                    f"{signature.algorithm} {signature.key_fingerprint} — {verdict}",
                    s.small,
                ),
            ]
        )
    table = Table(rows, colWidths=[28 * mm, 42 * mm, 38 * mm, 40 * mm, 22 * mm])
    style = [
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 0), (-1, 0), _GREY),
    ]
    for row in range(2, len(rows), 2):
        style.append(("SPAN", (1, row), (-1, row)))
    table.setStyle(TableStyle(style))
    verification = document.verification
    count = len(verification.signatures)
    summary = (
        f"签名验证 Signature status: 全部 {count} 个签名有效 all {count} signatures valid"
        if verification.valid
        else "签名验证 Signature status: 存在无效签名 NOT all signatures valid"
    )
    note = (
        "Ed25519 signatures over the RFC 8785 canonical JSON of each version; anyone who can read the "
        f"consult checks them with GET /api/consults/{document.consult.consult_id}/report/verify."
    )
    return [
        s.text("签名 Signatures", s.heading),
        table,
        Spacer(1, 2 * mm),
        s.text(summary),
        s.text(note, s.small),
    ]


def build_report_pdf(
    document: ReportDocument, font: ReportFont, key_images: Sequence[KeyImage] = ()
) -> bytes:
    """The PDF of one signed version of the report."""
    s = _Styles(font)
    buffer = BytesIO()
    title = f"{document.template.label.zh_cn} — {document.reviewing.name}"
    footer = (
        f"teleconsult {__version__} · consult {document.consult.consult_id} · "
        f"report version {document.version}"
    )

    def page(canvas: Canvas, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(font.name, 7)
        canvas.drawString(20 * mm, 10 * mm, footer)
        canvas.drawRightString(190 * mm, 10 * mm, f"{doc.page}")
        canvas.restoreState()

    pdf = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=20 * mm,
        rightMargin=20 * mm,
        topMargin=18 * mm,
        bottomMargin=18 * mm,
        title=title,
        author=document.reviewing.name,
        subject=f"consult {document.consult.consult_id}, report version {document.version}",
        creator=f"teleconsult {__version__}",
        lang="zh-CN",
        invariant=True,
    )
    flow: list[Flowable] = [
        s.text(document.reviewing.name, s.title),
        s.text(
            f"远程会诊诊断报告 Teleconsultation report · {document.template.label.zh_cn} "
            f"{document.template.label.en}",
            s.subtitle,
        ),
        Spacer(1, 4 * mm),
        _details(document, s),
        s.text("会诊问题 Clinical question", s.heading),
        s.text(document.consult.question),
        *_findings(document, s),
        *_addenda(document, s),
        *_key_images(key_images, s),
        *_signatures(document, s),
    ]
    pdf.build(flow, onFirstPage=page, onLaterPages=page)
    return buffer.getvalue()
