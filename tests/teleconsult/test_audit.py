"""The audit trail: append-only in the database, tamper-evident by its chain, ATNA export, CLI."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError

from teleconsult.atna import audit_message, audit_messages_document, event_code
from teleconsult.audit import AuditEvent, AuditLog, AuditOutcome, Interface
from teleconsult.cli import main
from teleconsult.storage.store import InstanceStore
from tests.atna import assert_audit_message, coded


def _event(number: int, **overrides: Any) -> AuditEvent:
    values: dict[str, Any] = {
        "action": "study.read",
        "outcome": AuditOutcome.SUCCESS,
        "interface": Interface.HTTP,
        "actor": "sono1",
        "actor_organisation": "TOWN01",
        "role": "sonographer",
        "source_address": "10.1.0.7",
        "resource": f"GET /api/studies/{number}",
        "study_instance_uid": f"1.2.826.0.1.3680043.10.1.{number}",
        "patient_id": f"P{number}",
        "detail": f"event {number}",
    }
    values.update(overrides)
    return AuditEvent(**values)


@pytest.fixture
def audit(store: InstanceStore) -> AuditLog:
    return AuditLog(store.index.engine)


def _pks(audit: AuditLog) -> list[int]:
    return sorted(int(row["pk"]) for row in audit.query(limit=1000))


def _drop_append_only_triggers(engine: Engine) -> None:
    """What an attacker with DDL rights (a PostgreSQL superuser, the SQLite file's owner) can do."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("DROP TRIGGER audit_events_append_only ON audit_events")
        else:
            conn.exec_driver_sql("DROP TRIGGER audit_events_no_update")
            conn.exec_driver_sql("DROP TRIGGER audit_events_no_delete")


# -- append-only --------------------------------------------------------------------------------


def test_the_applications_connection_cannot_update_or_delete(store: InstanceStore, audit: AuditLog) -> None:
    audit.record(_event(1))
    audit.record(_event(2))
    statements = [
        "UPDATE audit_events SET detail = 'nothing happened'",
        "UPDATE audit_events SET actor = 'someone-else' WHERE pk = 1",
        "DELETE FROM audit_events WHERE pk = 2",
        "DELETE FROM audit_events",
    ]
    if store.index.engine.dialect.name == "postgresql":
        statements.append("TRUNCATE audit_events")
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"), store.index.engine.begin() as conn:
            conn.exec_driver_sql(statement)
    assert [row["detail"] for row in audit.query()] == ["event 2", "event 1"]
    assert audit.verify() == (True, 2, None)


# -- the chain ----------------------------------------------------------------------------------


def test_an_intact_chain_verifies(audit: AuditLog) -> None:
    assert audit.verify() == (True, 0, None)
    assert audit.head() is None
    for number in range(5):
        audit.record(_event(number))
    assert audit.verify() == (True, 5, None)
    head = audit.head()
    assert head is not None
    assert head[0] == max(_pks(audit))
    assert len(head[1]) == 64


def test_the_chain_finds_a_changed_row(store: InstanceStore, audit: AuditLog) -> None:
    for number in range(5):
        audit.record(_event(number))
    pks = _pks(audit)
    _drop_append_only_triggers(store.index.engine)
    with store.index.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE audit_events SET outcome = 'denied' WHERE pk = {pks[2]}")
    assert audit.verify() == (False, 2, pks[2])


def test_the_chain_finds_a_changed_row_even_with_its_digest_recomputed(
    store: InstanceStore, audit: AuditLog
) -> None:
    """Rewriting one row's digest to match its new content breaks the link to the next row."""
    from teleconsult.audit import _digest

    for number in range(4):
        audit.record(_event(number))
    rows = sorted(audit.query(limit=10), key=lambda row: row["pk"])
    target = rows[1]
    values = {name: target[name] for name in AuditEvent.__dataclass_fields__}
    values["detail"] = "forged"
    time = target["time"] if target["time"].tzinfo else target["time"].replace(tzinfo=UTC)
    values["time"] = time.astimezone(UTC).isoformat()
    forged = _digest(rows[0]["chain_sha256"], values)
    _drop_append_only_triggers(store.index.engine)
    with store.index.engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE audit_events SET detail = 'forged', chain_sha256 = '{forged}' WHERE pk = {target['pk']}"
        )
    assert audit.verify() == (False, 2, rows[2]["pk"])


def test_the_chain_finds_a_deleted_row(store: InstanceStore, audit: AuditLog) -> None:
    for number in range(5):
        audit.record(_event(number))
    pks = _pks(audit)
    _drop_append_only_triggers(store.index.engine)
    with store.index.engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM audit_events WHERE pk = {pks[2]}")
    # The row after the gap no longer follows from the one before it.
    assert audit.verify() == (False, 2, pks[3])


def test_several_events_in_one_transaction_chain_in_order(audit: AuditLog) -> None:
    audit.record(_event(1))
    audit.record_many([_event(2), _event(3), _event(4)])
    audit.record_many([])
    assert [row["detail"] for row in audit.query()] == ["event 4", "event 3", "event 2", "event 1"]
    assert audit.verify() == (True, 4, None)


def test_long_values_are_cut_to_the_columns_and_still_verify(audit: AuditLog) -> None:
    audit.record(_event(1, patient_id="P" * 200, detail="d" * 5000, resource="r" * 900, actor="a" * 80))
    (row,) = audit.query()
    assert (len(row["patient_id"]), len(row["detail"]), len(row["resource"]), len(row["actor"])) == (
        64,
        1024,
        512,
        64,
    )
    assert audit.verify() == (True, 1, None)


@pytest.mark.postgresql
def test_verify_does_not_depend_on_the_sessions_time_zone(store: InstanceStore, audit: AuditLog) -> None:
    if store.index.engine.dialect.name != "postgresql":
        pytest.skip("only PostgreSQL answers in the session's time zone")
    audit.record(_event(1))
    url = store.index.engine.url
    options = f"{url.query.get('options', '')} -ctimezone=Asia/Shanghai".strip()
    shanghai = create_engine(url.update_query_dict({"options": options}))
    try:
        with shanghai.connect() as conn:
            assert conn.exec_driver_sql("SHOW TIME ZONE").scalar() == "Asia/Shanghai"
        assert AuditLog(shanghai).verify() == (True, 1, None)
    finally:
        shanghai.dispose()


# -- queries ------------------------------------------------------------------------------------


def test_filters_and_scope(audit: AuditLog) -> None:
    audit.record(_event(1))
    audit.record(_event(2, actor="sono2", actor_organisation="TOWN02", outcome=AuditOutcome.DENIED))
    audit.record(
        _event(
            3, actor="STORESCU", actor_organisation=None, interface=Interface.DICOM, role=None, action="query"
        )
    )
    audit.record(_event(4, actor="anonymous", actor_organisation=None, role=None, action="access"))
    assert [row["actor"] for row in audit.query(outcome="denied")] == ["sono2"]
    assert [row["actor"] for row in audit.query(patient_id="P1")] == ["sono1"]
    assert [row["actor"] for row in audit.query(organisations={"TOWN02"}, dicom_actors={"STORESCU"})] == [
        "STORESCU",
        "sono2",
    ]
    assert audit.query(organisations=set(), dicom_actors=()) == []
    # The same actor name outside DICOM is not a peer.
    assert audit.query(organisations={"NONE"}, dicom_actors={"anonymous"}) == []
    assert len(audit.query(organisations=None)) == 4
    # Times: an offset is honoured, a naive time is UTC.
    now = datetime.now(UTC)
    shanghai = timezone(timedelta(hours=8))
    assert len(audit.query(since=now - timedelta(minutes=5))) == 4
    assert len(audit.query(since=(now - timedelta(minutes=5)).astimezone(shanghai))) == 4
    assert audit.query(since=(now + timedelta(minutes=5)).astimezone(shanghai)) == []
    assert audit.query(until=(now - timedelta(minutes=5)).replace(tzinfo=None)) == []
    assert len(audit.query(until=(now + timedelta(minutes=5)).replace(tzinfo=None))) == 4
    assert list(audit.iter_events(batch_size=3)) == sorted(audit.query(), key=lambda row: row["pk"])


# -- ATNA (DICOM PS3.15 A.5) --------------------------------------------------------------------


def _row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "pk": 1,
        "time": datetime(2026, 11, 23, 10, 15, tzinfo=UTC),
        "action": "login",
        "outcome": "success",
        "interface": "http",
        "actor": "sono1",
        "actor_organisation": "TOWN01",
        "role": "sonographer",
        "source_address": "10.1.0.7",
        "resource": "POST /api/auth/token",
        "study_instance_uid": None,
        "patient_id": None,
        "detail": "",
        "chain_sha256": "0" * 64,
    }
    row.update(values)
    return row


@pytest.mark.parametrize(
    ("values", "event_id", "action", "event_type"),
    [
        ({"action": "login"}, "110114", "E", "110122"),
        ({"action": "logout"}, "110114", "E", "110123"),
        ({"action": "association", "interface": "dicom", "role": None}, "110114", "E", "110122"),
        ({"action": "access", "role": None, "outcome": "denied"}, "110114", "E", "110122"),
        ({"action": "access", "outcome": "denied", "resource": "GET /api/audit"}, "110110", "R", None),
        (
            {"action": "access", "interface": "dicomweb", "resource": "GET /dicomweb/studies/1.2"},
            "110103",
            "R",
            None,
        ),
        (
            {"action": "query", "interface": "dicom", "resource": "C-FIND STUDY 1.2.840.10008.5.1.4.1.2.2.1"},
            "110112",
            "E",
            None,
        ),
        (
            {"action": "query", "interface": "dicomweb", "resource": "GET /dicomweb/studies"},
            "110112",
            "E",
            None,
        ),
        ({"action": "retrieve", "interface": "dicom"}, "110104", "R", None),
        ({"action": "instance.store", "interface": "dicom"}, "110104", "C", None),
        ({"action": "stow"}, "110107", "C", None),
        ({"action": "instance.export"}, "110106", "R", None),
        ({"action": "audit.read"}, "110101", "R", None),
        ({"action": "audit.export"}, "110101", "R", None),
        ({"action": "study.read"}, "110103", "R", None),
        ({"action": "report.update"}, "110110", "U", None),
        ({"action": "consult.create"}, "110110", "C", None),
    ],
)
def test_actions_map_to_dicom_event_ids(
    values: dict[str, Any], event_id: str, action: str, event_type: str | None
) -> None:
    row = _row(**values)
    code = event_code(row)
    assert (code.event_id.code, code.action) == (event_id, action)
    assert (code.event_type.code if code.event_type else None) == event_type
    message = audit_message(row, source_id="TELECONSULT")
    assert_audit_message(message)
    event = message.find("EventIdentification")
    assert event is not None
    assert coded(event.find("EventID"))[:2] == (event_id, "DCM")  # type: ignore[arg-type]
    assert event.get("EventActionCode") == action


@pytest.mark.parametrize(("outcome", "indicator"), [("success", "0"), ("denied", "4"), ("failure", "8")])
def test_outcome_indicators(outcome: str, indicator: str) -> None:
    message = audit_message(_row(outcome=outcome, detail="why"), source_id="TELECONSULT")
    event = message.find("EventIdentification")
    assert event is not None
    assert event.get("EventOutcomeIndicator") == indicator
    description = event.find("EventOutcomeDescription")
    assert (description is not None) == (outcome != "success")


def test_patient_study_and_participants() -> None:
    row = _row(
        action="retrieve",
        interface="dicom",
        actor="TOWN01PACS",
        role=None,
        resource="C-MOVE STUDY 1.2.840.10008.5.1.4.1.2.2.2",
        study_instance_uid=None,
        patient_id="P1",
        detail="final status 0x0000 to TOWN01PACS: 3 sent; studies=1.2.3,1.2.4",
    )
    message = audit_message(row, source_id="TELECONSULT")
    assert_audit_message(message)
    requestor, application = message.findall("ActiveParticipant")
    assert requestor.attrib == {
        "UserID": "TOWN01PACS",
        "AlternativeUserID": "AETITLES=TOWN01PACS",
        "UserIsRequestor": "true",
        "NetworkAccessPointID": "10.1.0.7",
        "NetworkAccessPointTypeCode": "2",
    }
    assert application.get("UserID") == "TELECONSULT"
    assert application.get("UserIsRequestor") == "false"
    source = message.find("AuditSourceIdentification")
    assert source is not None
    assert source.get("AuditSourceID") == "TELECONSULT"
    objects = message.findall("ParticipantObjectIdentification")
    patient, *studies = objects
    assert (
        patient.get("ParticipantObjectID"),
        patient.get("ParticipantObjectTypeCode"),
        patient.get("ParticipantObjectTypeCodeRole"),
    ) == ("P1", "1", "1")
    assert coded(patient.find("ParticipantObjectIDTypeCode")) == ("2", "RFC-3881", "Patient Number")  # type: ignore[arg-type]
    assert [study.get("ParticipantObjectID") for study in studies] == ["1.2.3", "1.2.4"]
    for study in studies:
        assert (study.get("ParticipantObjectTypeCode"), study.get("ParticipantObjectTypeCodeRole")) == (
            "2",
            "3",
        )
        assert coded(study.find("ParticipantObjectIDTypeCode")) == ("110180", "DCM", "Study Instance UID")  # type: ignore[arg-type]


def test_query_carries_its_sop_class_and_keys() -> None:
    row = _row(
        action="query",
        interface="dicom",
        actor="TOWN01PACS",
        role=None,
        resource="C-FIND STUDY 1.2.840.10008.5.1.4.1.2.2.1",
        detail="STUDY level, 2 matches; keys: PatientName=王*",
    )
    message = audit_message(row, source_id="TELECONSULT")
    assert_audit_message(message)
    (query,) = message.findall("ParticipantObjectIdentification")
    assert query.get("ParticipantObjectID") == "1.2.840.10008.5.1.4.1.2.2.1"
    assert coded(query.find("ParticipantObjectIDTypeCode"))[0] == "110181"  # type: ignore[arg-type]
    text = query.findtext("ParticipantObjectQuery") or ""
    assert base64.b64decode(text).decode("utf-8").endswith("PatientName=王*")


def test_reading_the_audit_log_names_the_log() -> None:
    message = audit_message(_row(action="audit.read", resource="GET /api/audit"), source_id="TELECONSULT")
    assert_audit_message(message)
    (log,) = message.findall("ParticipantObjectIdentification")
    assert log.get("ParticipantObjectTypeCodeRole") == "13"
    assert log.findtext("ParticipantObjectName") == "Security Audit Log"


def test_values_are_escaped() -> None:
    document = audit_messages_document(
        [_row(actor='<AE&"x">', detail="<script>", outcome="denied")], source_id="TELECONSULT"
    )
    root = ET.fromstring(document)
    assert root.tag == "AuditMessages"
    (message,) = root
    assert_audit_message(message)
    assert message.find("ActiveParticipant").get("UserID") == '<AE&"x">'  # type: ignore[union-attr]


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture
def cli_env(store: InstanceStore, monkeypatch: pytest.MonkeyPatch) -> InstanceStore:
    monkeypatch.setenv("TELECONSULT_DATA_DIR", str(store.settings.data_dir))
    monkeypatch.setenv("TELECONSULT_DATABASE_URL", store.settings.index_url)
    return store


def test_cli_verify(cli_env: InstanceStore, audit: AuditLog, capsys: pytest.CaptureFixture[str]) -> None:
    for number in range(3):
        audit.record(_event(number))
    assert main(["audit", "verify"]) == 0
    assert "intact: 3 events" in capsys.readouterr().out
    pks = _pks(audit)
    _drop_append_only_triggers(cli_env.index.engine)
    with cli_env.index.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE audit_events SET patient_id = 'P9' WHERE pk = {pks[1]}")
    assert main(["audit", "verify"]) == 1
    captured = capsys.readouterr()
    assert f"BROKEN at event {pks[1]}" in captured.out


def test_cli_export(cli_env: InstanceStore, audit: AuditLog, capsys: pytest.CaptureFixture[str]) -> None:
    for number in range(3):
        audit.record(_event(number))
    assert main(["audit", "export", "--since", "2000-01-01", "--until", "2999-12-31T00:00+08:00"]) == 0
    root = ET.fromstring(capsys.readouterr().out)
    assert root.tag == "AuditMessages"
    assert len(root) == 3
    for message in root:
        assert_audit_message(message)
    # The export itself is on record, as ATNA "Audit Log Used" from the command line.
    (latest, *_) = audit.query()
    assert (latest["action"], latest["interface"], latest["detail"]) == (
        "audit.export",
        "cli",
        "3 events exported as ATNA XML; since 2000-01-01T00:00:00, until 2999-12-31T00:00:00+08:00",
    )
    assert main(["audit", "export", "--since", "2999-01-01"]) == 0
    assert len(ET.fromstring(capsys.readouterr().out)) == 0
    assert main(["audit", "export", "--since", "yesterday"]) == 2


def test_a_nul_in_what_a_peer_sent_is_audited_not_refused(audit: AuditLog) -> None:
    """Regression: a STOW-RS part whose SOP Instance UID held a NUL answered 500 on PostgreSQL."""
    audit.record(_event(1, resource="POST /dicomweb/studies\x00", detail="STOW-RS refused 2.25.1\x00/../x"))
    [row] = audit.query(limit=10)
    assert row["detail"] == "STOW-RS refused 2.25.1\ufffd/../x"
    assert row["resource"] == "POST /dicomweb/studies\ufffd"
    assert audit.verify() == (True, 1, None)
