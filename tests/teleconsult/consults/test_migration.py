"""Migration 0007 on SQLite and PostgreSQL: up, down and up again, with its append-only triggers."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from teleconsult.storage.migrate import upgrade
from tests.migrations import downgrade

TABLES = {
    "consults",
    "consult_history",
    "department_members",
    "report_versions",
    "report_signatures",
    "signing_keys",
}


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _append_only_holds(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO consults (consult_id, patient_id, issuer_of_patient_id, source_organisation, "
                "requested_by, requested_at, urgency, question, target_kind, target_organisation, status, "
                "due_at, updated_at) VALUES ('c', 'P1', 'TOWN01', 'TOWN01', 'sono1', CURRENT_TIMESTAMP, "
                "'routine', '?', 'pool', 'COUNTY', 'requested', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO report_versions (consult_pk, version, kind, template, content, content_sha256, "
                "author, author_organisation, created_at) SELECT pk, 1, 'report', 'chest_dr', '{}', 'x', "
                "'sono1', 'TOWN01', CURRENT_TIMESTAMP FROM consults"
            )
        )
    for statement in ("UPDATE report_versions SET content = '[]'", "DELETE FROM report_versions"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))


def test_0007_upgrades_downgrades_and_upgrades_again(engine: Engine) -> None:
    upgrade(engine, "0006")
    assert not TABLES & _tables(engine)
    upgrade(engine, "0007")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one() == "0007"
    assert _tables(engine) >= TABLES
    _append_only_holds(engine)

    downgrade(engine, "0006")
    assert not TABLES & _tables(engine)
    assert "audit_events" in _tables(engine)

    upgrade(engine)
    assert _tables(engine) >= TABLES
    _append_only_holds(engine)
