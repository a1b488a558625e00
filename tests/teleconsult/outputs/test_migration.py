"""Migration 0008 (report_outputs) on SQLite and PostgreSQL: up, down and up again; one row per version."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from teleconsult.storage.migrate import upgrade
from tests.migrations import downgrade


def _insert_output(engine: Engine, version: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO report_outputs (consult_pk, version, kind, patient_key, status, attempts, "
                "next_attempt_at, created_at) SELECT pk, :version, 'report', 'k', 'pending', 0, "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM consults"
            ),
            {"version": version},
        )


def test_0008_upgrades_downgrades_and_upgrades_again(engine: Engine) -> None:
    upgrade(engine, "0007")
    assert "report_outputs" not in inspect(engine).get_table_names()
    upgrade(engine, "0008")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one() == "0008"
    indexes = {index["name"] for index in inspect(engine).get_indexes("report_outputs")}
    assert {"ix_report_outputs_status_next_attempt_at", "ix_report_outputs_patient_key"} <= indexes

    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO consults (consult_id, patient_id, issuer_of_patient_id, source_organisation, "
                "requested_by, requested_at, urgency, question, target_kind, target_organisation, status, "
                "due_at, updated_at) VALUES ('c', 'P1', 'TOWN01', 'TOWN01', 'sono1', CURRENT_TIMESTAMP, "
                "'routine', '?', 'pool', 'COUNTY', 'signed', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    _insert_output(engine, 2)
    with pytest.raises(IntegrityError):  # outputs are made once per signed version
        _insert_output(engine, 2)
    _insert_output(engine, 3)

    downgrade(engine, "0007")
    assert "report_outputs" not in inspect(engine).get_table_names()
    assert "report_versions" in inspect(engine).get_table_names()
    upgrade(engine)
    assert "report_outputs" in inspect(engine).get_table_names()
