"""A synthetic corpus shaped like a county's archive, and what each query must return.

The shape follows the figures in FACTS.md for the peer we compare with
(100,000 small instances in ~41,000 studies, ~2,400 studies a year): most
studies hold 1-3 instances, a few CT studies hold dozens; study dates are
spread evenly over as many years as it takes to give ~2,400 studies a year,
so "one month + modality" and "one year" return realistic counts. Names are
synthetic Chinese names in ISO_IR 192 built from common surnames and
given-name characters, written the three ways devices write them; some
patients have Latin-only names. Nothing here is real patient data.

The corpus is fully determined by (instances, seed): both servers are loaded
with the same bytes, and the expected count of every query is computed here,
from the corpus itself, independently of either server.
"""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

__all__ = [
    "MODALITIES",
    "SOP_CLASSES",
    "STUDIES_PER_YEAR",
    "Corpus",
    "Patient",
    "Series",
    "Study",
    "build_corpus",
    "matches_person_name",
]

STUDIES_PER_YEAR = 2400
LAST_YEAR = 2025

SOP_CLASSES = {
    "US": "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray, for presentation
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "ECG": "1.2.840.10008.5.1.4.1.1.9.1.1",  # 12-lead ECG Waveform
    "SR": "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR (the report)
}
MODALITIES = tuple(SOP_CLASSES)

# (modality, share of studies, {instances: weight}); calibrated so that
# 100,000 instances make ~41,000 studies as in FACTS.md.
_STUDY_KINDS: tuple[tuple[str, float, dict[int, float]], ...] = (
    ("US", 0.38, {1: 30, 2: 30, 3: 22, 4: 8, 5: 4, 6: 3, 8: 2, 12: 1}),
    ("DX", 0.22, {1: 55, 2: 40, 3: 5}),
    ("CR", 0.10, {1: 50, 2: 40, 3: 10}),
    ("ECG", 0.275, {1: 1}),
    ("CT", 0.025, {n: 1 for n in range(10, 41)}),
)
# Share of US and ECG studies that also carry a one-instance SR report series.
_SR_SHARE = 0.12
_STUDIES_PER_PATIENT = {1: 60, 2: 25, 3: 10, 4: 3, 5: 1, 6: 1}

# The 40 commonest surnames with roughly their share of the population (per cent).
_SURNAMES = (
    ("王", "Wang", 7.1),
    ("李", "Li", 7.0),
    ("张", "Zhang", 6.8),
    ("刘", "Liu", 5.4),
    ("陈", "Chen", 4.5),
    ("杨", "Yang", 3.1),
    ("黄", "Huang", 2.2),
    ("赵", "Zhao", 2.2),
    ("吴", "Wu", 2.0),
    ("周", "Zhou", 1.9),
    ("徐", "Xu", 1.5),
    ("孙", "Sun", 1.5),
    ("马", "Ma", 1.2),
    ("朱", "Zhu", 1.2),
    ("胡", "Hu", 1.1),
    ("郭", "Guo", 1.1),
    ("何", "He", 1.0),
    ("高", "Gao", 0.9),
    ("林", "Lin", 0.9),
    ("罗", "Luo", 0.8),
    ("梁", "Liang", 0.8),
    ("宋", "Song", 0.8),
    ("郑", "Zheng", 0.8),
    ("谢", "Xie", 0.7),
    ("韩", "Han", 0.7),
    ("唐", "Tang", 0.7),
    ("冯", "Feng", 0.7),
    ("于", "Yu", 0.6),
    ("董", "Dong", 0.6),
    ("萧", "Xiao", 0.6),
    ("程", "Cheng", 0.6),
    ("曹", "Cao", 0.6),
    ("袁", "Yuan", 0.6),
    ("邓", "Deng", 0.6),
    ("许", "Xu", 0.6),
    ("傅", "Fu", 0.5),
    ("沈", "Shen", 0.5),
    ("曾", "Zeng", 0.5),
    ("彭", "Peng", 0.5),
    ("吕", "Lyu", 0.5),
)
_GIVEN_FIRST = (
    ("小", "Xiao", 6),
    ("建", "Jian", 3),
    ("志", "Zhi", 3),
    ("秀", "Xiu", 3),
    ("晓", "Xiao", 3),
    ("国", "Guo", 3),
    ("海", "Hai", 2),
    ("文", "Wen", 2),
    ("明", "Ming", 2),
    ("丽", "Li", 2),
    ("春", "Chun", 2),
    ("玉", "Yu", 2),
    ("红", "Hong", 2),
    ("金", "Jin", 2),
    ("桂", "Gui", 2),
    ("永", "Yong", 2),
    ("德", "De", 1),
    ("俊", "Jun", 1),
    ("雪", "Xue", 1),
    ("子", "Zi", 1),
)
_GIVEN_SECOND = tuple(
    (char, pinyin, 1)
    for char, pinyin in (
        ("明", "Ming"),
        ("华", "Hua"),
        ("伟", "Wei"),
        ("芳", "Fang"),
        ("军", "Jun"),
        ("强", "Qiang"),
        ("磊", "Lei"),
        ("洋", "Yang"),
        ("艳", "Yan"),
        ("勇", "Yong"),
        ("杰", "Jie"),
        ("娟", "Juan"),
        ("涛", "Tao"),
        ("超", "Chao"),
        ("英", "Ying"),
        ("敏", "Min"),
        ("静", "Jing"),
        ("霞", "Xia"),
        ("平", "Ping"),
        ("刚", "Gang"),
        ("兰", "Lan"),
        ("梅", "Mei"),
        ("林", "Lin"),
        ("峰", "Feng"),
    )
)
# How a device writes the name (share): "王小明" in one group, the usual form
# from Chinese devices; "Wang^Xiaoming=王^小明" (alphabetic and ideographic
# groups, PS3.5 H.3); "WANG^XIAOMING", Latin only.
_NAME_FORMS = (("hanzi", 70), ("both", 15), ("latin", 15))
_DESCRIPTIONS = {
    "US": ("腹部超声", "心脏超声", "甲状腺超声", "产科超声"),
    "DX": ("胸部正位", "腰椎侧位", "膝关节"),
    "CR": ("胸部正位", "手腕"),
    "ECG": ("常规十二导联心电图",),
    "CT": ("头颅平扫", "胸部平扫"),
}
_INSTITUTIONS = ("城关镇卫生院", "河口乡卫生院", "石桥镇卫生院", "县人民医院")


@dataclass(frozen=True, slots=True)
class Patient:
    patient_id: str
    name: str  # the PN value as sent, groups separated by "="
    charset: str | None  # SpecificCharacterSet, None for Latin-only names
    birth_date: str
    sex: str

    @property
    def hanzi_prefix(self) -> str | None:
        """The first two characters of a one-group Chinese name ("王小明" -> "王小")."""
        if "=" in self.name or "^" in self.name or self.name.isascii():
            return None
        return self.name[:2]


@dataclass(frozen=True, slots=True)
class Series:
    series_instance_uid: str
    modality: str
    number: int
    sop_instance_uids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Study:
    study_instance_uid: str
    patient: Patient
    study_date: str
    study_time: str
    accession_number: str
    description: str
    institution: str
    series: tuple[Series, ...]

    @property
    def modalities(self) -> frozenset[str]:
        return frozenset(s.modality for s in self.series)

    @property
    def instance_count(self) -> int:
        return sum(len(s.sop_instance_uids) for s in self.series)


@dataclass(frozen=True, slots=True)
class Corpus:
    seed: int
    patients: tuple[Patient, ...]
    studies: tuple[Study, ...]
    years: tuple[int, ...]

    @property
    def instance_count(self) -> int:
        return sum(study.instance_count for study in self.studies)

    @property
    def series_count(self) -> int:
        return sum(len(study.series) for study in self.studies)

    def studies_of_patient(self, patient_id: str) -> list[Study]:
        return [s for s in self.studies if s.patient.patient_id == patient_id]

    def studies_between(self, low: str, high: str, modality: str | None = None) -> list[Study]:
        """Studies with low <= StudyDate <= high (and the modality among their series)."""
        return [
            s
            for s in self.studies
            if low <= s.study_date <= high and (modality is None or modality in s.modalities)
        ]

    def studies_named(self, pattern: str) -> list[Study]:
        """Studies whose patient name matches a DICOM wildcard pattern (see matches_person_name)."""
        return [s for s in self.studies if matches_person_name(s.patient.name, pattern)]


def matches_person_name(name: str, pattern: str) -> bool:
    """DICOM wildcard matching of a PN value, as teleconsult documents it.

    The pattern matches if it matches any one component group (alphabetic,
    ideographic, phonetic) as a whole, case-insensitively: "王小*" finds
    "王小明" but not "Wang^Xiaoming=王^小明", whose ideographic group starts
    "王^".
    """
    regex = re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.upper()),
        re.DOTALL,
    )
    return any(regex.fullmatch(group.upper()) for group in name.split("=") if group)


class _Weighted:
    """Weighted choice with one cumulative table, much faster than random.choices per call."""

    def __init__(self, items: Sequence[tuple[object, float]]) -> None:
        self.values = [value for value, _ in items]
        self.cumulative: list[float] = []
        total = 0.0
        for _, weight in items:
            total += weight
            self.cumulative.append(total)

    def pick(self, rng: random.Random) -> object:
        return self.values[bisect.bisect_right(self.cumulative, rng.random() * self.cumulative[-1])]


def _uid(rng: random.Random) -> str:
    """A UUID-derived UID (PS3.5 B.2), reproducible from the seed."""
    return f"2.25.{rng.getrandbits(128)}"


class _Generator:
    """Draws patients, studies and series from one seeded random source."""

    def __init__(self, seed: int, years: tuple[int, ...]) -> None:
        self.rng = random.Random(seed)
        self.first_day = date(years[0], 1, 1)
        self.days = (date(years[-1], 12, 31) - self.first_day).days + 1
        self.surnames = _Weighted([((c, p), w) for c, p, w in _SURNAMES])
        self.given_first = _Weighted([((c, p), w) for c, p, w in _GIVEN_FIRST])
        self.given_second = _Weighted([((c, p), w) for c, p, w in _GIVEN_SECOND])
        self.forms = _Weighted(list(_NAME_FORMS))
        self.kinds = _Weighted([((m, _Weighted(list(sizes.items()))), w) for m, w, sizes in _STUDY_KINDS])
        self.studies_per_patient = _Weighted(list(_STUDIES_PER_PATIENT.items()))
        self.accession = 0

    def patient(self, number: int) -> Patient:
        rng = self.rng
        surname, surname_pinyin = self.surnames.pick(rng)  # type: ignore[misc]
        first, first_pinyin = self.given_first.pick(rng)  # type: ignore[misc]
        second, second_pinyin = self.given_second.pick(rng)  # type: ignore[misc]
        latin = f"{surname_pinyin}^{first_pinyin}{second_pinyin.lower()}"
        form = self.forms.pick(rng)
        if form == "hanzi":
            name, charset = f"{surname}{first}{second}", "ISO_IR 192"
        elif form == "both":
            name, charset = f"{latin}={surname}^{first}{second}", "ISO_IR 192"
        else:
            name, charset = latin.upper(), None
        birth = date(1935, 1, 1) + timedelta(days=rng.randrange(365 * 85))
        return Patient(
            patient_id=f"P{number:07d}",
            name=name,
            charset=charset,
            birth_date=birth.strftime("%Y%m%d"),
            sex=rng.choice("MF"),
        )

    def study(self, patient: Patient, instances_left: int) -> Study:
        rng = self.rng
        modality, sizes = self.kinds.pick(rng)  # type: ignore[misc]
        count = min(int(sizes.pick(rng)), instances_left)
        series = [self._series(modality, 1, count)]
        if modality in ("US", "ECG") and count < instances_left and rng.random() < _SR_SHARE:
            series.append(self._series("SR", 2, 1))
        day = self.first_day + timedelta(days=rng.randrange(self.days))
        self.accession += 1
        return Study(
            study_instance_uid=_uid(rng),
            patient=patient,
            study_date=day.strftime("%Y%m%d"),
            study_time=f"{rng.randrange(8, 18):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}",
            accession_number=f"A{self.accession:08d}",
            description=rng.choice(_DESCRIPTIONS[modality]),
            institution=rng.choice(_INSTITUTIONS),
            series=tuple(series),
        )

    def _series(self, modality: str, number: int, count: int) -> Series:
        return Series(
            series_instance_uid=_uid(self.rng),
            modality=modality,
            number=number,
            sop_instance_uids=tuple(_uid(self.rng) for _ in range(count)),
        )


def _years_for(instances: int) -> tuple[int, ...]:
    """Enough years, ending in LAST_YEAR, for ~STUDIES_PER_YEAR studies each (2.44 instances a study)."""
    expected_studies = instances / 2.44
    count = max(1, round(expected_studies / STUDIES_PER_YEAR))
    return tuple(range(LAST_YEAR - count + 1, LAST_YEAR + 1))


def build_corpus(instances: int, seed: int = 20251) -> Corpus:
    """Patients and studies holding exactly ``instances`` instances."""
    if instances < 1:
        raise ValueError(f"instances must be at least 1, not {instances}")
    years = _years_for(instances)
    generator = _Generator(seed, years)
    patients: list[Patient] = []
    studies: list[Study] = []
    left = instances
    while left > 0:
        patient = generator.patient(len(patients) + 1)
        patients.append(patient)
        for _ in range(int(generator.studies_per_patient.pick(generator.rng))):  # type: ignore[call-overload]
            if left <= 0:
                break
            study = generator.study(patient, left)
            studies.append(study)
            left -= study.instance_count
    return Corpus(seed=seed, patients=tuple(patients), studies=tuple(studies), years=years)
