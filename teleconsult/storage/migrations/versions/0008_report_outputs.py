"""outputs of signed reports: one row per signed version (PDF, DICOM SR, Encapsulated PDF)

The row is the durable request for the outputs as well as the record of
what was made: it is written when the version is signed, so a crash of the
output worker loses nothing, and a failed attempt stays visible with its
reason until a later attempt succeeds.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_outputs",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("consult_pk", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("patient_key", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=1024), nullable=True),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("sr_series_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("sr_sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("pdf_series_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("pdf_sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("pdf_sha256", sa.String(length=64), nullable=True),
        sa.Column("pdf", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("produced_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["consult_pk"], ["consults.pk"], name=op.f("fk_report_outputs_consult_pk_consults")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_report_outputs")),
        sa.UniqueConstraint("consult_pk", "version", name=op.f("uq_report_outputs_consult_pk_version")),
    )
    with op.batch_alter_table("report_outputs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_report_outputs_consult_pk"), ["consult_pk"], unique=False)
        batch_op.create_index(batch_op.f("ix_report_outputs_patient_key"), ["patient_key"], unique=False)
        batch_op.create_index(
            "ix_report_outputs_status_next_attempt_at", ["status", "next_attempt_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("report_outputs", schema=None) as batch_op:
        batch_op.drop_index("ix_report_outputs_status_next_attempt_at")
        batch_op.drop_index(batch_op.f("ix_report_outputs_patient_key"))
        batch_op.drop_index(batch_op.f("ix_report_outputs_consult_pk"))
    op.drop_table("report_outputs")
