"""The report PDF: what it shows, its fonts, and who may read it."""

from __future__ import annotations

import os
from io import BytesIO
from pathlib import Path

import pytest
from pydantic import ValidationError
from pypdf import PdfReader

from teleconsult.audit import AuditLog
from teleconsult.config import Settings
from teleconsult.consults.outputs import ReportOutputs, build_report_pdf, load_report_font
from teleconsult.consults.outputs.fonts import CID_FONT, LATIN_FONT, ReportFont
from tests.teleconsult.consults.conftest import Consulting, accepted
from tests.teleconsult.outputs.conftest import cjk_font_installed, sign_report


def _text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(BytesIO(pdf)).pages)


def _fonts(pdf: bytes) -> dict[str, bool]:
    """Base font name -> whether the font program is embedded."""
    fonts: dict[str, bool] = {}
    for page in PdfReader(BytesIO(pdf)).pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            descendants = font.get("/DescendantFonts")
            described = descendants[0].get_object() if descendants else font
            descriptor = described.get("/FontDescriptor")
            embedded = descriptor is not None and any(
                key in descriptor.get_object() for key in ("/FontFile", "/FontFile2", "/FontFile3")
            )
            fonts[str(font["/BaseFont"])] = embedded
    return fonts


def _images(pdf: bytes) -> int:
    return sum(len(page.images) for page in PdfReader(BytesIO(pdf)).pages)


def test_the_pdf_shows_both_organisations_the_patient_and_both_signers(
    consulting: Consulting, outputs: ReportOutputs
) -> None:
    signed = sign_report(consulting, outputs)
    response = consulting.get("sono1", f"{signed.path}/pdf")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["cache-control"] == "no-store"
    pdf = response.content
    text = _text(pdf)
    report = consulting.get("sono1", signed.path).json()

    for expected in (
        "王小明",  # the patient's name from the study (GB18030 there)
        "Wang XiaoMing",
        "P0001",
        "1970-01-01",
        "男 Male",
        "Township 1 (TOWN01)",  # requesting
        "County Hospital (COUNTY)",  # reviewing
        "腹部超声检查报告",
        "肝右叶低回声结节，考虑血管瘤可能，建议增强CT。",  # the final impression
        "右叶斜径 Right lobe oblique diameter: 128 mm",
        "肝内低回声结节，性质待定，请会诊。",  # the question
        "王医生",
        "赵医生",
        "2026-11-24 08:00:00.000 UTC",
        "全部 2 个签名有效 all 2 signatures valid",
    ):
        assert expected in text, expected
    for signature in report["signatures"]:
        assert signature["key_fingerprint"] in text.replace("\n", "")
    assert "2 — 终审 final" in text
    assert _images(pdf) == 1  # the study's one image as a key image


def test_the_pdf_of_a_study_without_images_has_no_key_images(
    consulting: Consulting, outputs: ReportOutputs
) -> None:
    ecg = consulting.api.store  # an ECG: a waveform, nothing to render
    from tests.factories import encode, make_ecg

    ds = make_ecg()
    ecg.store_instance(
        encode(ds), ds.file_meta.TransferSyntaxUID, calling_ae_title="TOWNUS", source_organisation="TOWN01"
    )
    consult = accepted(consulting, study=None, study_instance_uid=ds.StudyInstanceUID)
    path = f"/api/consults/{consult['id']}/report"
    draft = {
        "template": "ecg_12_lead",
        "findings": {"rhythm": {"rhythm": "窦性心律", "heart_rate_bpm": 72}},
        "impression": "正常心电图。",
    }
    assert consulting.put("doctor1", path, draft).status_code == 200
    assert consulting.post("doctor1", f"{path}/sign").status_code == 200
    assert consulting.post("specialist", f"{path}/sign").status_code == 200
    assert outputs.wait_idle(120)
    pdf = consulting.get("sono1", f"{path}/pdf").content
    assert _images(pdf) == 0
    text = _text(pdf)
    assert "李华" in text
    assert "心率 Heart rate: 72 bpm" in text
    assert "关键图像" not in text


def test_the_pdf_is_404_before_the_report_is_final_and_for_those_who_may_not_see_it(
    consulting: Consulting, outputs: ReportOutputs
) -> None:
    consult = accepted(consulting)
    path = f"/api/consults/{consult['id']}/report"
    assert consulting.get("sono1", f"{path}/pdf").status_code == 404  # no report at all
    assert consulting.put(
        "specialist", path, {"template": "abdominal_ultrasound", "impression": "x"}
    ).is_success
    early = consulting.get("sono1", f"{path}/pdf")
    assert early.status_code == 404
    assert early.headers["content-type"] == "application/problem+json"
    assert "not final" in early.json()["detail"]

    signed = sign_report(consulting, outputs)
    stranger = consulting.get("sono2", f"{signed.path}/pdf")  # another township
    assert stranger.status_code == 404
    assert stranger.json()["code"] == "not-found"
    assert consulting.get("cityspec", f"{signed.path}/pdf").status_code == 404
    assert consulting.get("sono1", f"{signed.path}/pdf").status_code == 200

    audit = AuditLog(consulting.api.store.index.engine)
    rows = audit.query(study_instance_uid=signed.study.StudyInstanceUID, limit=200)
    reads = {
        (r["actor"], r["outcome"]) for r in rows if r["action"] == "report.read" and "/pdf" in r["resource"]
    }
    assert {("sono1", "success"), ("sono2", "denied"), ("cityspec", "denied")} <= reads
    success = next(r for r in rows if r["actor"] == "sono1" and "/pdf" in r["resource"])
    assert success["patient_id"] == "P0001"
    assert "version 2" in success["detail"]


def test_the_builtin_cid_font_needs_no_font_installed(consulting: Consulting, outputs: ReportOutputs) -> None:
    signed = sign_report(consulting, outputs)
    font = load_report_font(None, candidates=())
    assert (font.name, font.embedded) == (CID_FONT, False)
    pdf = build_report_pdf(outputs.document(signed.id, 2), font)
    assert "王小明" in _text(pdf)
    fonts = _fonts(pdf)
    assert f"/{CID_FONT}" in fonts
    assert not any(fonts.values())  # nothing embedded: the reader supplies STSong-Light


def test_an_installed_cjk_font_is_embedded(consulting: Consulting, outputs: ReportOutputs) -> None:
    path = cjk_font_installed()
    if path is None:
        message = "no CJK TrueType font installed (scripts/test.sh installs fonts-wqy-microhei)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    signed = sign_report(consulting, outputs)
    font = load_report_font(path)
    pdf = build_report_pdf(outputs.document(signed.id, 2), font)
    assert "王小明" in _text(pdf)
    assert any(embedded for name, embedded in _fonts(pdf).items() if name != f"/{LATIN_FONT}")


def test_characters_a_font_lacks_are_set_in_helvetica() -> None:
    chinese_only = ReportFont("NoLatin", Path("/nowhere.ttf"), frozenset(map(ord, "王小明")))
    assert chinese_only.markup("王小明 Wang <b>") == (
        f'王小明 <font name="{LATIN_FONT}">Wang &lt;b&gt;</font>'
    )
    assert ReportFont(CID_FONT, None).markup("王 Wang & 李") == "王 Wang &amp; 李"


def test_a_configured_font_must_exist(make_settings) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match="TELECONSULT_REPORT_FONT"):
        make_settings(report_font="/no/such/font.ttf")
    path = cjk_font_installed()
    if path is not None:
        assert isinstance(make_settings(report_font=str(path)), Settings)
