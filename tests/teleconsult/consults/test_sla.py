"""Deadlines per urgency, the overdue check and its escalation, on a clock the test moves."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from pydantic import ValidationError

from teleconsult.config import Settings
from teleconsult.consults import OverdueMonitor
from teleconsult.domain.consults import SlaPolicy, Urgency
from tests.teleconsult.consults.conftest import START, Consulting, final


def test_default_deadlines() -> None:
    policy = SlaPolicy()
    assert {u.value: policy.deadline(u, START) - START for u in Urgency} == {
        "critical": timedelta(minutes=30),
        "stat": timedelta(hours=1),
        "urgent": timedelta(hours=4),
        "routine": timedelta(hours=48),
    }
    settings = Settings()
    assert (
        settings.consult_sla_minutes_critical,
        settings.consult_sla_minutes_stat,
        settings.consult_sla_minutes_urgent,
        settings.consult_sla_minutes_routine,
    ) == (30, 60, 240, 2880)


def test_deadlines_come_from_settings_and_must_be_ordered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELECONSULT_CONSULT_SLA_MINUTES_CRITICAL", "15")
    assert Settings().consult_sla_minutes_critical == 15
    monkeypatch.setenv("TELECONSULT_CONSULT_SLA_MINUTES_CRITICAL", "90")
    with pytest.raises(
        ValidationError, match="CRITICAL \\(90\\) is longer than TELECONSULT_CONSULT_SLA_MINUTES_STAT"
    ):
        Settings()


@pytest.mark.parametrize(("urgency", "minutes"), [("critical", 30), ("stat", 60), ("routine", 2880)])
def test_a_request_gets_the_deadline_of_its_urgency(
    consulting: Consulting, urgency: str, minutes: int
) -> None:
    consult = consulting.request(urgency=urgency)
    due = consulting.consults.store.get(consult["id"])
    assert due is not None
    assert due.due_at - due.requested_at == timedelta(minutes=minutes)


def test_overdue_consults_are_flagged_once_and_escalated_to_the_admins(consulting: Consulting) -> None:
    consult = consulting.request(urgency="critical")
    cid = consult["id"]
    done = final(consulting)  # signed in time: never overdue
    consulting.clock.advance(minutes=29)
    assert consulting.consults.check_overdue() == []
    assert consulting.get("specialist", f"/api/consults/{cid}").json()["overdue"] is False

    consulting.clock.advance(minutes=1)
    flagged = consulting.consults.check_overdue()
    assert [c.consult_id for c in flagged] == [cid]
    events = consulting.events("consult.overdue")
    assert len(events) == 1
    data = events[0][1]
    assert (data["consult_id"], data["recipients"], data["escalation"]) == (
        cid,
        ["admin"],
        "organisation_admin",
    )
    assert data["study_instance_uid"] == consult["study_instance_uid"]
    assert data["urgency"] == "critical"

    consulting.clock.advance(hours=100)
    assert consulting.consults.check_overdue() == []  # once only
    assert len(consulting.events("consult.overdue")) == 1

    body = consulting.get("specialist", f"/api/consults/{cid}").json()
    assert body["overdue"] is True
    assert body["overdue_at"].startswith("2026-11-24T08:30")
    assert body["history"][-1]["action"] == "overdue"
    listed = consulting.get("specialist", "/api/consults", overdue="true").json()
    assert [c["id"] for c in listed] == [cid]
    on_time = consulting.get("specialist", "/api/consults", overdue="false").json()
    assert [c["id"] for c in on_time] == [done["id"]]


def test_escalation_goes_to_the_department_lead(consulting: Consulting) -> None:
    assert (
        consulting.put("admin", "/api/departments/COUNTY/US/members/specialist2", {"lead": True}).status_code
        == 200
    )
    assert consulting.put("admin", "/api/departments/COUNTY/US/members/specialist", {}).status_code == 200
    by_department = consulting.request(urgency="stat", target_department="US")
    by_member = consulting.request(urgency="stat", target_specialist="specialist")
    consulting.clock.advance(hours=2)
    assert len(consulting.consults.check_overdue()) == 2
    recipients = {
        data["consult_id"]: (data["recipients"], data["escalation"])
        for _, data in consulting.events("consult.overdue")
    }
    assert recipients == {
        by_department["id"]: (["specialist2"], "department_lead"),
        by_member["id"]: (["specialist2"], "department_lead"),
    }


def test_the_background_check_escalates_without_being_asked(consulting: Consulting) -> None:
    consult = consulting.request(urgency="critical")
    consulting.clock.advance(minutes=31)
    seen = threading.Event()
    consulting.bus.subscribe(lambda _event: seen.set(), "consult.overdue")
    monitor = OverdueMonitor(consulting.consults, 0.01)
    monitor.start()
    try:
        assert seen.wait(10)
    finally:
        monitor.stop()
    assert consulting.events("consult.overdue")[0][1]["consult_id"] == consult["id"]
    with pytest.raises(ValueError, match="interval"):
        OverdueMonitor(consulting.consults, 0)
