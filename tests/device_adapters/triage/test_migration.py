"""Migration 0012 on SQLite and PostgreSQL: the table as declared, down and up, a cheap catch-up query."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select

from device_adapters.ecg.triage import ECG_SOP_CLASS_UIDS
from teleconsult.storage.ecg_measurements import EcgMeasurementStore
from teleconsult.storage.migrate import upgrade
from teleconsult.storage.tables import Base, EcgMeasurementRow, Instance
from tests.migrations import downgrade


def test_0012_makes_the_table_as_declared_and_goes_down_and_up_again(engine: Engine) -> None:
    upgrade(engine)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [diff for diff in diffs if "ecg_measurements" in repr(diff)] == []
    downgrade(engine, "0011")
    assert "ecg_measurements" not in inspect(engine).get_table_names()
    upgrade(engine)
    assert "ecg_measurements" in inspect(engine).get_table_names()


def test_the_catch_up_query_uses_the_indexes(engine: Engine) -> None:
    """ECG instances by their class index, each checked against the row's unique key: no table scan."""
    upgrade(engine)
    assert EcgMeasurementStore(engine).unanalysed(ECG_SOP_CLASS_UIDS) == []
    rows, instances = EcgMeasurementRow.__table__, Instance.__table__
    stmt = (
        select(instances.c.pk)
        .select_from(
            instances.outerjoin(
                rows,
                (rows.c.sop_instance_uid == instances.c.sop_instance_uid)
                & (rows.c.version == instances.c.version),
            )
        )
        .where(instances.c.sop_class_uid.in_(sorted(ECG_SOP_CLASS_UIDS)), rows.c.pk.is_(None))
    )
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # A handful of rows would be read whole anyway: ask whether the indexes *can* serve.
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            prefix = "EXPLAIN"
        else:
            prefix = "EXPLAIN QUERY PLAN"
        sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        plan = "\n".join(str(row) for row in conn.exec_driver_sql(f"{prefix} {sql}"))
    assert "ix_instances_sop_class_uid" in plan, plan
    if engine.dialect.name == "postgresql":
        assert "uq_ecg_measurements_sop_instance_uid_version" in plan, plan
    else:  # SQLite serves a unique constraint with its own automatic index
        assert "SEARCH ecg_measurements USING COVERING INDEX" in plan, plan
