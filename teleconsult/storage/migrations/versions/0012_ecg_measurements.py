"""ECG triage: one append-only row of measurements and screen per stored ECG instance version

``ecg_measurements`` keeps what the analyser made of each version of each
12-lead or General ECG instance: the measurements and the screen as JSON,
or why it could not measure it, and the critical consult a positive screen
opened. Its unique key (SOP instance, version) makes a second analysis of
the same version fail to insert (so it cannot open a second consult) and
serves the analyser's start-up search for ECG instances without a row (an
anti-join from ``instances`` through ``ix_instances_sop_class_uid``).
Rows are append-only in the database, as the referral history (0010) is: a
screen that raised an alert stays on record as it was.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

APPEND_ONLY = "ecg_measurements"


def upgrade() -> None:
    op.create_table(
        "ecg_measurements",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("source_organisation", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=1024), nullable=True),
        sa.Column("algorithm", sa.String(length=128), nullable=False),
        sa.Column("measurements", sa.Text(), nullable=True),
        sa.Column("screen", sa.Text(), nullable=True),
        sa.Column("positive", sa.Boolean(), nullable=False),
        sa.Column("consult_id", sa.String(length=36), nullable=True),
        sa.Column("note", sa.String(length=1024), nullable=True),
        sa.Column("analysed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_ecg_measurements")),
        sa.UniqueConstraint(
            "sop_instance_uid", "version", name=op.f("uq_ecg_measurements_sop_instance_uid_version")
        ),
    )
    with op.batch_alter_table("ecg_measurements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ecg_measurements_study_instance_uid"), ["study_instance_uid"], unique=False
        )

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION ecg_measurements_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '% rows are append-only: a new version of the ECG gets a new row', TG_TABLE_NAME;
            END $$
            """
        )
        op.execute(
            f"CREATE TRIGGER {APPEND_ONLY}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {APPEND_ONLY} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ecg_measurements_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {APPEND_ONLY}_no_{verb.lower()} BEFORE {verb} ON {APPEND_ONLY} "
                f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY} rows are append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER {APPEND_ONLY}_append_only ON {APPEND_ONLY}")
        op.execute("DROP FUNCTION ecg_measurements_append_only()")
    else:
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER {APPEND_ONLY}_no_{verb}")
    with op.batch_alter_table("ecg_measurements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ecg_measurements_study_instance_uid"))
    op.drop_table("ecg_measurements")
