"""Migration 0011 on SQLite and PostgreSQL: up, down and up again, append-only observations, as declared."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from teleconsult.storage.index import normalise_database_url
from teleconsult.storage.migrate import alembic_config, upgrade
from teleconsult.storage.tables import Base

TABLES = {"kiosk_patients", "kiosk_observations"}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(normalise_database_url(database_url))
    try:
        yield engine
    finally:
        engine.dispose()


def _downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


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
    _downgrade(engine, "0010")
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(engine, "0011")
    _observations_are_append_only(engine)


def test_the_migration_creates_the_tables_as_declared(engine: Engine) -> None:
    upgrade(engine)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [diff for diff in diffs if "kiosk" in repr(diff)] == []
