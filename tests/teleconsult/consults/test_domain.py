"""The pure model: transitions, visibility (and its SQL twin), templates."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from teleconsult.domain.consults import (
    Consult,
    ConsultAction,
    ConsultStatus,
    ConsultViewer,
    HistoryEntry,
    Target,
    Urgency,
    grants_study,
    next_status,
    visible_to,
)
from teleconsult.domain.identity import Role
from teleconsult.domain.report_templates import TEMPLATES, FieldKind, get_template
from teleconsult.errors import ConsultStateError, InvalidReportError
from teleconsult.storage.consults import ConsultFilters, ConsultStore
from teleconsult.storage.store import InstanceStore
from teleconsult.storage.transactions import writing

S = ConsultStatus
A = ConsultAction
ALLOWED = {
    A.ACCEPT: {S.REQUESTED},
    A.DECLINE: {S.REQUESTED, S.ACCEPTED, S.IN_REVIEW},
    A.CANCEL: {S.REQUESTED, S.ACCEPTED, S.IN_REVIEW, S.REPORTED},
    A.REASSIGN: {S.REQUESTED, S.ACCEPTED, S.IN_REVIEW, S.REPORTED},
    A.START_REVIEW: {S.ACCEPTED},
    A.SUBMIT: {S.IN_REVIEW},
    A.SIGN: {S.ACCEPTED, S.IN_REVIEW, S.REPORTED},
    A.DELIVER: {S.SIGNED},
}


@pytest.mark.parametrize(("action", "status"), list(itertools.product(ALLOWED, S)))
def test_transitions(action: ConsultAction, status: ConsultStatus) -> None:
    if status in ALLOWED[action]:
        assert next_status("c1", status, action) in S
    else:
        with pytest.raises(ConsultStateError, match=f"consult c1 is {status.value}; it can be"):
            next_status("c1", status, action)


def test_final_and_closed_consults_go_nowhere_but_delivery() -> None:
    for status in (S.DELIVERED, S.DECLINED, S.CANCELLED):
        assert not any(status in allowed for allowed in ALLOWED.values())


NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
TARGETS = [
    Target("COUNTY"),
    Target("COUNTY", department="US"),
    Target("COUNTY", specialist="specialist"),
    Target("CITY", specialist="cityspec"),
    Target("CITY", department="ER"),
]
VIEWERS = [
    ConsultViewer(
        "specialist", Role.SPECIALIST, "COUNTY", frozenset({"COUNTY", "TOWN01", "TOWN02", "VILLAGE21"})
    ),
    ConsultViewer(
        "usdoc",
        Role.SPECIALIST,
        "COUNTY",
        frozenset({"COUNTY", "TOWN01", "TOWN02", "VILLAGE21"}),
        departments=frozenset({("COUNTY", "US")}),
    ),
    ConsultViewer("cityspec", Role.SPECIALIST, "CITY", frozenset({"CITY"})),
    ConsultViewer(
        "erdoc", Role.SPECIALIST, "CITY", frozenset({"CITY"}), departments=frozenset({("CITY", "ER")})
    ),
    ConsultViewer(
        "erlead",
        Role.TOWNSHIP_DOCTOR,
        "CITY",
        frozenset({"CITY"}),
        departments=frozenset({("CITY", "ER")}),
        leads=frozenset({("CITY", "ER")}),
    ),
    ConsultViewer("cityadmin", Role.ADMIN, "CITY", frozenset({"CITY"})),
    ConsultViewer("sono1", Role.SONOGRAPHER, "TOWN01", frozenset({"TOWN01"})),
    ConsultViewer("village", Role.TOWNSHIP_DOCTOR, "VILLAGE21", frozenset({"VILLAGE21"})),
]


def _grid() -> list[Consult]:
    consults = []
    for n, (source, status, target, assignee) in enumerate(
        itertools.product(["TOWN01", "TOWN02", "VILLAGE21"], S, TARGETS, [None, "specialist", "cityspec"])
    ):
        consults.append(
            Consult(
                consult_id=f"00000000-0000-4000-8000-{n:012d}",
                study_instance_uid=f"1.2.3.{n}",
                patient_id=f"P{n}",
                issuer_of_patient_id=source,
                source_organisation=source,
                requested_by="sono1",
                requested_at=NOW,
                urgency=Urgency.ROUTINE,
                question="?",
                target=target,
                assignee=assignee,
                status=status,
                status_reason=None,
                due_at=NOW + timedelta(hours=1),
                overdue_at=None,
                updated_at=NOW,
            )
        )
    return consults


def test_sql_visibility_is_the_domain_rule(store: InstanceStore) -> None:
    consults = ConsultStore(store.index.engine)
    grid = _grid()
    with writing(store.index.engine) as conn:
        for consult in grid:
            entry = HistoryEntry(NOW, "sono1", A.REQUEST, None, consult.status)
            consults.insert(conn, consult, entry)
    for viewer in VIEWERS:
        expected = {c.consult_id for c in grid if visible_to(c, viewer)}
        found = {c.consult_id for c in consults.search(viewer, ConsultFilters(limit=10_000), NOW)}
        assert found == expected, viewer.username
        for consult in grid[::17]:
            assert consults.grants_study(viewer, consult.study_instance_uid or "") == grants_study(
                consult, viewer
            ), (viewer.username, consult)


def test_every_template_is_labelled_in_both_languages() -> None:
    assert set(TEMPLATES) == {
        "abdominal_ultrasound",
        "obstetric_ultrasound",
        "echocardiography",
        "chest_dr",
        "ecg_12_lead",
    }
    for template in TEMPLATES.values():
        labels = [template.label, template.impression_label]
        for section in template.sections:
            labels.append(section.label)
            labels.extend(spec.label for spec in section.fields)
            labels.extend(choice.label for spec in section.fields for choice in spec.choices)
            assert len({spec.key for spec in section.fields}) == len(section.fields)
        assert all(label.zh_cn and label.en for label in labels), template.code
        assert all(
            any("\u4e00" <= ch <= "\u9fff" for ch in label.zh_cn) or label.zh_cn.isascii() for label in labels
        )
        assert len({section.key for section in template.sections}) == len(template.sections)


def test_findings_are_checked_and_normalised() -> None:
    ecg = get_template("ecg_12_lead")
    checked = ecg.check_findings(
        {
            "rhythm": {"rhythm": " 窦性心律 ", "heart_rate_bpm": 72.0},
            "axis": {"qrs_axis_deg": -30},
            "st_t": {},
        }
    )
    assert checked == {"rhythm": {"rhythm": "窦性心律", "heart_rate_bpm": 72}, "axis": {"qrs_axis_deg": -30}}
    assert isinstance(checked["rhythm"]["heart_rate_bpm"], int)
    assert ecg.missing_for_signature(checked, "") == ["impression"]
    assert ecg.missing_for_signature({}, "窦性心律") == [
        "findings.rhythm.rhythm",
        "findings.rhythm.heart_rate_bpm",
    ]
    obstetric = get_template("obstetric_ultrasound")
    with pytest.raises(InvalidReportError, match="presentation must be one of cephalic"):
        obstetric.check_findings({"fetus": {"presentation": "upside-down"}})
    for bad in (float("nan"), float("inf"), True, 2**60):
        with pytest.raises(InvalidReportError, match="heart_rate_bpm"):
            obstetric.check_findings({"fetus": {"heart_rate_bpm": bad}})
    with pytest.raises(InvalidReportError, match="at most 300"):
        obstetric.check_findings({"fetus": {"heart_rate_bpm": 400}})
    assert any(f.kind is FieldKind.CHOICE for s in obstetric.sections for f in s.fields)
