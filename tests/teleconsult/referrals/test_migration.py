"""Migration 0010 on SQLite and PostgreSQL: up, down and up again, append-only history, as declared."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from teleconsult.storage.migrate import upgrade
from teleconsult.storage.tables import Base
from tests.migrations import downgrade

TABLES = {"referrals", "referral_history"}


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _revision(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one())


def _history_is_append_only(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO consults (consult_id, patient_id, issuer_of_patient_id, source_organisation, "
                "requested_by, requested_at, urgency, question, target_kind, target_organisation, status, "
                "due_at, updated_at) VALUES ('c', 'P1', 'TOWN01', 'TOWN01', 'sono1', CURRENT_TIMESTAMP, "
                "'critical', '?', 'pool', 'COUNTY', 'accepted', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO referrals (referral_id, consult_pk, direction, green_channel, reason, "
                "target_organisation, issued_by, issuing_organisation, issued_at, status, updated_at) "
                "SELECT 'r', pk, 'up', TRUE, 'STEMI', 'COUNTY', 'specialist', 'COUNTY', CURRENT_TIMESTAMP, "
                "'issued', CURRENT_TIMESTAMP FROM consults"
            )
        )
        conn.execute(
            text(
                "INSERT INTO referral_history (referral_pk, time, actor, actor_organisation, action, "
                "to_status) SELECT pk, CURRENT_TIMESTAMP, 'specialist', 'COUNTY', 'issued', 'issued' "
                "FROM referrals"
            )
        )
        # the referral's current state changes; its history does not
        conn.execute(text("UPDATE referrals SET status = 'accepted'"))
    for statement in ("UPDATE referral_history SET actor = 'someone'", "DELETE FROM referral_history"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT actor FROM referral_history")).scalars().all() == ["specialist"]


def test_0010_upgrades_downgrades_and_upgrades_again(engine: Engine) -> None:
    upgrade(engine, "0009")
    assert not TABLES & _tables(engine)
    upgrade(engine, "0010")
    assert _revision(engine) == "0010"
    assert _tables(engine) >= TABLES
    _history_is_append_only(engine)

    downgrade(engine, "0009")
    assert _revision(engine) == "0009"
    assert not TABLES & _tables(engine)
    assert "consults" in _tables(engine)

    upgrade(engine, "0010")
    assert _tables(engine) >= TABLES
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM consults"))
    _history_is_append_only(engine)


def test_the_migration_creates_the_tables_as_declared(engine: Engine) -> None:
    upgrade(engine)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [diff for diff in diffs if "referral" in repr(diff)] == []
