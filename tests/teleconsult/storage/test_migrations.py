"""Index migrations on SQLite and PostgreSQL: up, down and up again, and what the indexes serve."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, Engine

from teleconsult.storage.matching import build_query
from teleconsult.storage.migrate import upgrade
from tests.migrations import downgrade

NAME_INDEXES = {
    "ix_patients_patient_name_alphabetic_ci",
    "ix_patients_patient_name_ideographic_ci",
    "ix_patients_patient_name_phonetic_ci",
}


def _revision(connection: Connection) -> str:
    return str(connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one())


def _patient_indexes(connection: Connection) -> set[str]:
    if connection.dialect.name == "postgresql":
        sql = (
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'patients'"
        )
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'patients'"
    return {str(name) for name in connection.exec_driver_sql(sql).scalars()}


def test_0006_upgrades_downgrades_and_upgrades_again(engine: Engine) -> None:
    upgrade(engine, "0005")
    with engine.connect() as conn:
        assert _revision(conn) == "0005"
        assert not NAME_INDEXES & _patient_indexes(conn)

    upgrade(engine, "0006")
    with engine.connect() as conn:
        assert _revision(conn) == "0006"
        assert _patient_indexes(conn) >= NAME_INDEXES

    downgrade(engine, "0005")
    with engine.connect() as conn:
        assert _revision(conn) == "0005"
        indexes = _patient_indexes(conn)
        assert not NAME_INDEXES & indexes
        assert "ix_patients_patient_name_alphabetic" in indexes  # 0001's stay

    upgrade(engine)  # to the head, through 0006 again
    with engine.connect() as conn:
        assert _patient_indexes(conn) >= NAME_INDEXES


@pytest.mark.parametrize("pattern", ["王小*", "WANG*", "wang^xiao*", "王小明"])
def test_a_name_query_can_be_answered_from_the_name_indexes(engine: Engine, pattern: str) -> None:
    """The planner may use the 0006 indexes for a prefix or a whole name, in every group."""
    upgrade(engine)
    stmt = build_query("STUDY", {"PatientName": pattern})
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # A handful of rows would be read whole anyway: ask whether the index *can* serve.
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            prefix = "EXPLAIN"
        else:
            prefix = "EXPLAIN QUERY PLAN"
        sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        plan = "\n".join(str(row) for row in conn.exec_driver_sql(f"{prefix} {sql}"))
    assert all(name in plan for name in NAME_INDEXES), plan


UNUSED_WRITE_INDEXES = {
    "ix_patients_patient_name_alphabetic",
    "ix_patients_patient_name_ideographic",
    "ix_patients_patient_name_phonetic",
}


def _study_indexes(connection: Connection) -> set[str]:
    if connection.dialect.name == "postgresql":
        sql = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'studies'"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'studies'"
    return {str(name) for name in connection.exec_driver_sql(sql).scalars()}


def test_0009_drops_the_unused_indexes_and_gives_them_back_ondowngrade(engine: Engine) -> None:
    upgrade(engine, "0008")
    with engine.connect() as conn:
        assert _patient_indexes(conn) >= UNUSED_WRITE_INDEXES | NAME_INDEXES
        assert "ix_studies_updated_at" in _study_indexes(conn)
    upgrade(engine, "0009")
    with engine.connect() as conn:
        assert _revision(conn) == "0009"
        patient_indexes = _patient_indexes(conn)
        assert not UNUSED_WRITE_INDEXES & patient_indexes
        assert patient_indexes >= NAME_INDEXES  # the ones name matching uses stay
        assert "ix_studies_updated_at" not in _study_indexes(conn)
        assert "ix_studies_study_date" in _study_indexes(conn)
    downgrade(engine, "0008")
    with engine.connect() as conn:
        assert _patient_indexes(conn) >= UNUSED_WRITE_INDEXES
        assert "ix_studies_updated_at" in _study_indexes(conn)
    upgrade(engine)
    with engine.connect() as conn:
        assert not UNUSED_WRITE_INDEXES & _patient_indexes(conn)
