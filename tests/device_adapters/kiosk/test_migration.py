"""Migration 0011 on SQLite and PostgreSQL: up, down and up again, append-only observations, as declared."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from teleconsult.storage.migrate import upgrade
from teleconsult.storage.tables import Base
from tests.migrations import downgrade

TABLES = {"kiosk_patients", "kiosk_observations"}


def _observations_are_append_only(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO kiosk_patients (patient_key, resident_id_hmac, resident_id_encrypted, "
                "resident_id_masked, organisation, birth_date, sex, created_at, updated_at) VALUES "
                "('k', 'h', 'e', '110105********002X', 'VILLAGE21', '19491231', 'female', CURRENT_TIMESTAMP, "
                "CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO kiosk_observations (observation_id, patient_pk, organisation, device_id, "
                "channel, kind, measured_at, received_at, result_json, unit, reported_json, alerts_json) "
                "SELECT 'o', pk, 'VILLAGE21', 'K1', 'http', 'spo2', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, "
                "'[97]', '%', '{}', '[]' FROM kiosk_patients"
            )
        )
        conn.execute(text("UPDATE kiosk_patients SET name = 'x'"))  # the patient row may change
    for statement in ("UPDATE kiosk_observations SET unit = 'x'", "DELETE FROM kiosk_observations"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT unit FROM kiosk_observations")).scalars().all() == ["%"]


def test_0011_upgrades_downgrades_and_upgrades_again(engine: Engine) -> None:
    upgrade(engine, "0010")
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(engine, "0011")
    assert set(inspect(engine).get_table_names()) >= TABLES
    _observations_are_append_only(engine)
    downgrade(engine, "0010")
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(engine, "0011")
    _observations_are_append_only(engine)


def test_the_migration_creates_the_tables_as_declared(engine: Engine) -> None:
    upgrade(engine)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [diff for diff in diffs if "kiosk" in repr(diff)] == []
