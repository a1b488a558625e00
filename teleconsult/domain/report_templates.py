"""Report templates per exam type: structured findings sections and an impression.

Labels come in Simplified Chinese (``zh-CN``, what township and county staff
read) and English. Findings are ``{section: {field: value}}``; a template
checks every key and value, so a typo in a client cannot store a finding no
form will ever show. Drafts may be incomplete; what a signature needs
(``required`` fields and the impression) is checked at signing.

Numbers are plain JSON numbers in the field's unit (mm, bpm, ms ...), so that
the signed canonical form (RFC 8785) is the same whatever the client sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from teleconsult.errors import InvalidReportError

__all__ = [
    "TEMPLATES",
    "Choice",
    "FieldKind",
    "Label",
    "ReportTemplate",
    "TemplateField",
    "TemplateSection",
    "get_template",
]

MAX_TEXT = 4000
MAX_IMPRESSION = 8000
# RFC 8785 numbers are IEEE doubles: integers beyond 2**53 would not survive canonicalisation.
_MAX_NUMBER = 2**53


class FieldKind(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    CHOICE = "choice"


@dataclass(frozen=True, slots=True)
class Label:
    zh_cn: str
    en: str


@dataclass(frozen=True, slots=True)
class Choice:
    value: str
    label: Label


@dataclass(frozen=True, slots=True)
class TemplateField:
    key: str
    label: Label
    kind: FieldKind = FieldKind.TEXT
    unit: str | None = None
    choices: tuple[Choice, ...] = ()
    minimum: float | None = 0
    maximum: float | None = None
    required: bool = False

    def check(self, value: Any, where: str) -> str | int | float:
        """The value as stored, or ``InvalidReportError`` naming the field."""
        if self.kind is FieldKind.NUMBER:
            return self._number(value, where)
        if not isinstance(value, str):
            raise InvalidReportError(f"{where} must be text")
        text = value.strip()
        if len(text) > MAX_TEXT:
            raise InvalidReportError(f"{where} is longer than {MAX_TEXT} characters")
        if self.kind is FieldKind.CHOICE and text not in {choice.value for choice in self.choices}:
            allowed = ", ".join(choice.value for choice in self.choices)
            raise InvalidReportError(f"{where} must be one of {allowed}, not {text[:40]!r}")
        return text

    def _number(self, value: Any, where: str) -> int | float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidReportError(f"{where} must be a number{f' in {self.unit}' if self.unit else ''}")
        if not math.isfinite(value) or abs(value) >= _MAX_NUMBER:
            raise InvalidReportError(f"{where} must be a finite number")
        if self.minimum is not None and value < self.minimum:
            raise InvalidReportError(f"{where} must be at least {self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise InvalidReportError(f"{where} must be at most {self.maximum:g}")
        # 12.0 and 12 are one value: keep whole numbers as integers so the canonical form is one.
        return int(value) if float(value).is_integer() else float(value)


@dataclass(frozen=True, slots=True)
class TemplateSection:
    key: str
    label: Label
    fields: tuple[TemplateField, ...]

    def field(self, key: str) -> TemplateField | None:
        return next((f for f in self.fields if f.key == key), None)


@dataclass(frozen=True, slots=True)
class ReportTemplate:
    code: str
    label: Label
    modalities: tuple[str, ...]
    sections: tuple[TemplateSection, ...]
    impression_label: Label = Label("诊断意见", "Impression")

    def section(self, key: str) -> TemplateSection | None:
        return next((s for s in self.sections if s.key == key), None)

    def check_findings(self, findings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Findings as stored: known sections and fields only, values checked, empty ones left out."""
        if not isinstance(findings, Mapping):
            raise InvalidReportError("findings must be an object of sections")
        checked: dict[str, dict[str, Any]] = {}
        for section_key, values in findings.items():
            section = self.section(section_key)
            if section is None:
                known = ", ".join(s.key for s in self.sections)
                raise InvalidReportError(
                    f"template {self.code} has no section {section_key[:40]!r}; its sections are {known}"
                )
            if not isinstance(values, Mapping):
                raise InvalidReportError(f"findings.{section_key} must be an object of fields")
            out: dict[str, Any] = {}
            for field_key, value in values.items():
                spec = section.field(field_key)
                if spec is None:
                    known = ", ".join(f.key for f in section.fields)
                    raise InvalidReportError(
                        f"section {section_key} of template {self.code} has no field {field_key[:40]!r}; "
                        f"its fields are {known}"
                    )
                if value is None or value == "":
                    continue
                checked_value = spec.check(value, f"findings.{section_key}.{field_key}")
                if checked_value != "":
                    out[field_key] = checked_value
            if out:
                checked[section_key] = out
        return checked

    def missing_for_signature(self, findings: Mapping[str, Any], impression: str) -> list[str]:
        """What a report still lacks before it may be signed (required fields, impression)."""
        missing = [
            f"findings.{section.key}.{spec.key}"
            for section in self.sections
            for spec in section.fields
            if spec.required and spec.key not in findings.get(section.key, {})
        ]
        if not impression.strip():
            missing.append("impression")
        return missing


def _text(key: str, zh_cn: str, en: str, *, required: bool = False) -> TemplateField:
    return TemplateField(key, Label(zh_cn, en), required=required)


def _number(
    key: str,
    zh_cn: str,
    en: str,
    unit: str,
    *,
    minimum: float | None = 0,
    maximum: float | None = None,
    required: bool = False,
) -> TemplateField:
    return TemplateField(
        key, Label(zh_cn, en), FieldKind.NUMBER, unit, minimum=minimum, maximum=maximum, required=required
    )


def _choice(key: str, zh_cn: str, en: str, choices: tuple[tuple[str, str, str], ...]) -> TemplateField:
    return TemplateField(
        key,
        Label(zh_cn, en),
        FieldKind.CHOICE,
        choices=tuple(Choice(value, Label(z, e)) for value, z, e in choices),
    )


def _description(required: bool = False) -> TemplateField:
    return _text("description", "描述", "Description", required=required)


_SECTION = TemplateSection

ABDOMINAL_ULTRASOUND = ReportTemplate(
    code="abdominal_ultrasound",
    label=Label("腹部超声检查报告", "Abdominal ultrasound report"),
    modalities=("US",),
    sections=(
        _SECTION(
            "liver",
            Label("肝脏", "Liver"),
            (
                _description(True),
                _number("right_lobe_oblique_mm", "右叶斜径", "Right lobe oblique diameter", "mm"),
            ),
        ),
        _SECTION(
            "gallbladder",
            Label("胆囊", "Gallbladder"),
            (_description(), _number("wall_thickness_mm", "壁厚", "Wall thickness", "mm")),
        ),
        _SECTION(
            "bile_ducts",
            Label("胆管", "Bile ducts"),
            (_description(), _number("cbd_diameter_mm", "胆总管内径", "Common bile duct diameter", "mm")),
        ),
        _SECTION("pancreas", Label("胰腺", "Pancreas"), (_description(),)),
        _SECTION(
            "spleen",
            Label("脾脏", "Spleen"),
            (_description(), _number("thickness_mm", "厚径", "Thickness", "mm")),
        ),
        _SECTION(
            "kidneys",
            Label("双肾", "Kidneys"),
            (
                _description(),
                _number("left_length_mm", "左肾长径", "Left kidney length", "mm"),
                _number("right_length_mm", "右肾长径", "Right kidney length", "mm"),
            ),
        ),
    ),
    impression_label=Label("超声提示", "Impression"),
)

OBSTETRIC_ULTRASOUND = ReportTemplate(
    code="obstetric_ultrasound",
    label=Label("产科超声检查报告", "Obstetric ultrasound report"),
    modalities=("US",),
    sections=(
        _SECTION(
            "fetus",
            Label("胎儿", "Fetus"),
            (
                _number("number_of_fetuses", "胎儿数目", "Number of fetuses", "", minimum=1, maximum=8),
                _choice(
                    "presentation",
                    "胎方位",
                    "Presentation",
                    (
                        ("cephalic", "头位", "Cephalic"),
                        ("breech", "臀位", "Breech"),
                        ("transverse", "横位", "Transverse"),
                        ("variable", "不定", "Variable"),
                    ),
                ),
                _number("heart_rate_bpm", "胎心率", "Fetal heart rate", "bpm", maximum=300, required=True),
                _description(),
            ),
        ),
        _SECTION(
            "biometry",
            Label("生物学测量", "Biometry"),
            (
                _number("bpd_mm", "双顶径", "Biparietal diameter", "mm"),
                _number("hc_mm", "头围", "Head circumference", "mm"),
                _number("ac_mm", "腹围", "Abdominal circumference", "mm"),
                _number("fl_mm", "股骨长", "Femur length", "mm"),
                _number("efw_g", "估计胎儿体重", "Estimated fetal weight", "g"),
            ),
        ),
        _SECTION(
            "placenta",
            Label("胎盘", "Placenta"),
            (
                _text("position", "位置", "Position"),
                _choice(
                    "grade",
                    "成熟度",
                    "Grade",
                    (
                        ("0", "0级", "Grade 0"),
                        ("I", "I级", "Grade I"),
                        ("II", "II级", "Grade II"),
                        ("III", "III级", "Grade III"),
                    ),
                ),
            ),
        ),
        _SECTION(
            "amniotic_fluid",
            Label("羊水", "Amniotic fluid"),
            (_number("afi_mm", "羊水指数", "Amniotic fluid index", "mm"), _description()),
        ),
        _SECTION(
            "gestational_age",
            Label("超声孕周", "Gestational age by ultrasound"),
            (
                _number("weeks", "周", "Weeks", "wk", maximum=45),
                _number("days", "天", "Days", "d", maximum=6),
            ),
        ),
    ),
    impression_label=Label("超声提示", "Impression"),
)

ECHOCARDIOGRAPHY = ReportTemplate(
    code="echocardiography",
    label=Label("超声心动图检查报告", "Echocardiography report"),
    modalities=("US",),
    sections=(
        _SECTION(
            "chambers",
            Label("心腔", "Chambers"),
            (
                _number("lvedd_mm", "左室舒张末内径", "LV end-diastolic diameter", "mm"),
                _number("la_mm", "左房内径", "Left atrium diameter", "mm"),
                _number("ivs_mm", "室间隔厚度", "Interventricular septum thickness", "mm"),
                _description(),
            ),
        ),
        _SECTION(
            "function",
            Label("心功能", "Function"),
            (
                _number(
                    "lvef_percent", "左室射血分数", "LV ejection fraction", "%", maximum=100, required=True
                ),
                _description(),
            ),
        ),
        _SECTION("valves", Label("瓣膜", "Valves"), (_description(),)),
        _SECTION("pericardium", Label("心包", "Pericardium"), (_description(),)),
    ),
    impression_label=Label("超声提示", "Impression"),
)

CHEST_DR = ReportTemplate(
    code="chest_dr",
    label=Label("胸部DR检查报告", "Chest radiograph (DR) report"),
    modalities=("DX", "CR"),
    sections=(
        _SECTION("lungs", Label("肺野", "Lung fields"), (_description(True),)),
        _SECTION("mediastinum", Label("纵隔", "Mediastinum"), (_description(),)),
        _SECTION(
            "heart",
            Label("心影", "Cardiac silhouette"),
            (
                _description(),
                _number("cardiothoracic_ratio", "心胸比", "Cardiothoracic ratio", "", maximum=1),
            ),
        ),
        _SECTION("pleura_diaphragm", Label("胸膜及膈肌", "Pleura and diaphragm"), (_description(),)),
        _SECTION("bones", Label("骨骼", "Bones"), (_description(),)),
    ),
    impression_label=Label("诊断意见", "Impression"),
)

ECG_12_LEAD = ReportTemplate(
    code="ecg_12_lead",
    label=Label("十二导联心电图报告", "12-lead ECG report"),
    modalities=("ECG",),
    sections=(
        _SECTION(
            "rhythm",
            Label("节律", "Rhythm"),
            (
                _text("rhythm", "心律", "Rhythm", required=True),
                _number("heart_rate_bpm", "心率", "Heart rate", "bpm", maximum=400, required=True),
            ),
        ),
        _SECTION(
            "intervals",
            Label("间期", "Intervals"),
            (
                _number("pr_ms", "PR间期", "PR interval", "ms"),
                _number("qrs_ms", "QRS时限", "QRS duration", "ms"),
                _number("qt_ms", "QT间期", "QT interval", "ms"),
                _number("qtc_ms", "QTc间期", "QTc interval", "ms"),
            ),
        ),
        _SECTION(
            "axis",
            Label("电轴", "Axis"),
            (_number("qrs_axis_deg", "QRS电轴", "QRS axis", "°", minimum=-180, maximum=180),),
        ),
        _SECTION("st_t", Label("ST-T改变", "ST-T changes"), (_description(),)),
    ),
    impression_label=Label("心电图诊断", "ECG interpretation"),
)

TEMPLATES: dict[str, ReportTemplate] = {
    template.code: template
    for template in (ABDOMINAL_ULTRASOUND, OBSTETRIC_ULTRASOUND, ECHOCARDIOGRAPHY, CHEST_DR, ECG_12_LEAD)
}


def get_template(code: str) -> ReportTemplate:
    """The template named ``code``, or ``InvalidReportError`` listing those that exist."""
    template = TEMPLATES.get(code)
    if template is None:
        raise InvalidReportError(
            f"there is no report template {code[:40]!r}; use one of {', '.join(sorted(TEMPLATES))}"
        )
    return template
