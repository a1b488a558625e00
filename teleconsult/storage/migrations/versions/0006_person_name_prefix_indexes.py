"""case-insensitive indexes on the person name component groups

C-FIND and QIDO-RS match a person name case-insensitively in any of its
three component groups (teleconsult/storage/matching.py). The plain indexes
on the group columns (0001) serve neither form that matching takes, so a
name query such as "王小*" read every patient.

PostgreSQL: ``upper(<group>) text_pattern_ops``. Matching writes
``upper(<group>) LIKE 'PREFIX%'``; under a non-C collation (C.UTF-8,
en_US.UTF-8) a default btree serves no LIKE prefix, while this operator
class lets the planner turn it into a range scan (an equality without
wildcards) on each group and OR the three.
SQLite: ``<group> COLLATE NOCASE``. SQLite uses no index on an expression for
LIKE, so matching writes ``<group> LIKE 'PREFIX%'`` there (SQLite's LIKE folds
case as its ``upper()`` does), and its LIKE optimisation needs a NOCASE index.

Measured effect (bench/query/README.md), 100,000 instances on PostgreSQL: the
SQL of a name-prefix C-FIND from 30.5 to 4.8 ms p50 (plan execution from 22 ms
of sequential scans to 0.6 ms); 20,000 instances on SQLite: ~7 to ~1.3 ms.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 01:10:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (index name, component group column) on the patients table
PERSON_NAME_INDEXES = (
    ("ix_patients_patient_name_alphabetic_ci", "patient_name_alphabetic"),
    ("ix_patients_patient_name_ideographic_ci", "patient_name_ideographic"),
    ("ix_patients_patient_name_phonetic_ci", "patient_name_phonetic"),
)


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, column in PERSON_NAME_INDEXES:
        key = f"upper({column}) text_pattern_ops" if postgresql else f"{column} COLLATE NOCASE"
        op.execute(f"CREATE INDEX {name} ON patients ({key})")


def downgrade() -> None:
    for name, _column in reversed(PERSON_NAME_INDEXES):
        op.execute(f"DROP INDEX {name}")
