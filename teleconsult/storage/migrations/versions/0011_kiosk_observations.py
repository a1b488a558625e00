"""health kiosk patients and their append-only observations

``kiosk_patients`` holds one row per villager a kiosk measured, found by the
HMAC of the resident ID number (never stored in clear: encrypted and
masked), with an optional link to the patient index. ``kiosk_observations``
holds each measurement in its canonical unit; it is append-only in the
database, as the audit trail (0005) and referral history (0010) are: on
SQLite ``BEFORE UPDATE`` / ``BEFORE DELETE`` triggers, on PostgreSQL a
statement-level trigger that also refuses ``TRUNCATE``. A wrong reading is
corrected by a new measurement, never by editing the old one.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

APPEND_ONLY = "kiosk_observations"


def upgrade() -> None:
    op.create_table(
        "kiosk_patients",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("patient_key", sa.String(length=32), nullable=False),
        sa.Column("resident_id_hmac", sa.String(length=64), nullable=False),
        sa.Column("resident_id_encrypted", sa.Text(), nullable=False),
        sa.Column("resident_id_masked", sa.String(length=18), nullable=False),
        sa.Column("organisation", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=True),
        sa.Column("birth_date", sa.String(length=8), nullable=False),
        sa.Column("sex", sa.String(length=8), nullable=False),
        sa.Column("index_patient_pk", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["index_patient_pk"], ["patients.pk"], name=op.f("fk_kiosk_patients_index_patient_pk_patients")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_kiosk_patients")),
        sa.UniqueConstraint("patient_key", name=op.f("uq_kiosk_patients_patient_key")),
        sa.UniqueConstraint("resident_id_hmac", name=op.f("uq_kiosk_patients_resident_id_hmac")),
    )
    op.create_table(
        "kiosk_observations",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("observation_id", sa.String(length=36), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("organisation", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("result_json", sa.Text(), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("context", sa.String(length=16), nullable=True),
        sa.Column("reported_json", sa.Text(), nullable=False),
        sa.Column("alerts_json", sa.Text(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_pk"],
            ["kiosk_patients.pk"],
            name=op.f("fk_kiosk_observations_patient_pk_kiosk_patients"),
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_kiosk_observations")),
        sa.UniqueConstraint("observation_id", name=op.f("uq_kiosk_observations_observation_id")),
        sa.UniqueConstraint(
            "device_id", "measured_at", "kind", name=op.f("uq_kiosk_observations_device_id_measured_at_kind")
        ),
    )
    with op.batch_alter_table("kiosk_observations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_kiosk_observations_patient_pk_measured_at", ["patient_pk", "measured_at"], unique=False
        )
        batch_op.create_index(
            "ix_kiosk_observations_organisation_measured_at", ["organisation", "measured_at"], unique=False
        )

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION kiosk_observations_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '% rows are append-only: a correction is a new measurement', TG_TABLE_NAME;
            END $$
            """
        )
        op.execute(
            f"CREATE TRIGGER {APPEND_ONLY}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {APPEND_ONLY} "
            "FOR EACH STATEMENT EXECUTE FUNCTION kiosk_observations_append_only()"
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
        op.execute("DROP FUNCTION kiosk_observations_append_only()")
    else:
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER {APPEND_ONLY}_no_{verb}")

    with op.batch_alter_table("kiosk_observations", schema=None) as batch_op:
        batch_op.drop_index("ix_kiosk_observations_organisation_measured_at")
        batch_op.drop_index("ix_kiosk_observations_patient_pk_measured_at")
    op.drop_table("kiosk_observations")
    op.drop_table("kiosk_patients")
