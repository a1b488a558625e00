"""per-study and per-series counts kept by the database

QIDO-RS and C-FIND return NumberOfStudyRelatedSeries/Instances and
NumberOfSeriesRelatedInstances with every study or series. Counting them in
correlated subqueries cost PostgreSQL about as much as the rest of a year's
study search (2,400 studies: two index probes per study, one per series).
The counts are now columns, kept by triggers of the database itself on every
insert, move (a re-sent instance whose series changed) and delete, so no
writer can forget them and the ingest path runs no extra statement: the
trigger's update touches rows the same transaction usually has in hand.
Existing rows are counted once here.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27 07:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_BACKFILL = (
    "UPDATE series SET number_of_instances = "
    "(SELECT count(*) FROM instances WHERE instances.series_pk = series.pk)",
    "UPDATE studies SET "
    "number_of_series = (SELECT count(*) FROM series WHERE series.study_pk = studies.pk), "
    "number_of_instances = (SELECT coalesce(sum(series.number_of_instances), 0) "
    "FROM series WHERE series.study_pk = studies.pk)",
)


def _instances_moved(sign: str, series_pk: str) -> str:
    """The two updates that add ``sign``1 for one instance of series ``series_pk``.

    Only this module's constants go into the text (``+``/``-``, ``NEW``/``OLD`` columns).
    """
    return (
        f"UPDATE series SET number_of_instances = number_of_instances {sign} 1 WHERE pk = {series_pk}; "  # noqa: S608
        f"UPDATE studies SET number_of_instances = number_of_instances {sign} 1 "
        f"WHERE pk = (SELECT study_pk FROM series WHERE pk = {series_pk});"
    )


def _series_moved(sign: str, study_pk: str) -> str:
    return f"UPDATE studies SET number_of_series = number_of_series {sign} 1 WHERE pk = {study_pk};"  # noqa: S608


_SQLITE_TRIGGERS = {
    "instances_counted_insert": (
        f"AFTER INSERT ON instances BEGIN {_instances_moved('+', 'NEW.series_pk')} END"
    ),
    "instances_counted_move": (
        "AFTER UPDATE OF series_pk ON instances WHEN OLD.series_pk <> NEW.series_pk BEGIN "
        f"{_instances_moved('-', 'OLD.series_pk')} {_instances_moved('+', 'NEW.series_pk')} END"
    ),
    "instances_counted_delete": (
        f"AFTER DELETE ON instances BEGIN {_instances_moved('-', 'OLD.series_pk')} END"
    ),
    "series_counted_insert": f"AFTER INSERT ON series BEGIN {_series_moved('+', 'NEW.study_pk')} END",
    "series_counted_delete": f"AFTER DELETE ON series BEGIN {_series_moved('-', 'OLD.study_pk')} END",
}

_POSTGRESQL_FUNCTIONS = {
    "instances_counted": (
        "BEGIN "
        "IF TG_OP IN ('UPDATE', 'DELETE') THEN "
        f"{_instances_moved('-', 'OLD.series_pk')} "
        "END IF; "
        "IF TG_OP IN ('INSERT', 'UPDATE') THEN "
        f"{_instances_moved('+', 'NEW.series_pk')} "
        "END IF; "
        "RETURN NULL; END"
    ),
    "series_counted": (
        "BEGIN "
        f"IF TG_OP = 'DELETE' THEN {_series_moved('-', 'OLD.study_pk')} "
        f"ELSE {_series_moved('+', 'NEW.study_pk')} END IF; "
        "RETURN NULL; END"
    ),
}
_POSTGRESQL_TRIGGERS = {
    "instances_counted_insert_delete": ("instances_counted", "AFTER INSERT OR DELETE ON instances"),
    "instances_counted_move": (
        "instances_counted",
        "AFTER UPDATE OF series_pk ON instances FOR EACH ROW WHEN (OLD.series_pk <> NEW.series_pk)",
    ),
    "series_counted": ("series_counted", "AFTER INSERT OR DELETE ON series"),
}


def upgrade() -> None:
    zero = sa.text("0")
    op.add_column("studies", sa.Column("number_of_series", sa.Integer(), nullable=False, server_default=zero))
    op.add_column(
        "studies", sa.Column("number_of_instances", sa.Integer(), nullable=False, server_default=zero)
    )
    op.add_column(
        "series", sa.Column("number_of_instances", sa.Integer(), nullable=False, server_default=zero)
    )
    for statement in _BACKFILL:
        op.execute(statement)
    if op.get_bind().dialect.name == "postgresql":
        for name, body in _POSTGRESQL_FUNCTIONS.items():
            op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ {body} $$")
        for name, (function, when) in _POSTGRESQL_TRIGGERS.items():
            each_row = "" if "FOR EACH ROW" in when else " FOR EACH ROW"
            op.execute(f"CREATE TRIGGER {name} {when}{each_row} EXECUTE FUNCTION {function}()")
    else:
        for name, body in _SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, (_function, when) in _POSTGRESQL_TRIGGERS.items():
            table = when.split(" ON ")[1].split()[0]
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        for name in _POSTGRESQL_FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    else:
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table("series") as batch:
        batch.drop_column("number_of_instances")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("number_of_instances")
        batch.drop_column("number_of_series")
