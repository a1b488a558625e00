"""worklist: scheduled procedure steps for the Modality Worklist SCP

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worklist",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("patient_name", sa.String(length=324), nullable=False),
        sa.Column("patient_name_alphabetic", sa.String(length=324), nullable=False),
        sa.Column("patient_name_ideographic", sa.String(length=324), nullable=False),
        sa.Column("patient_name_phonetic", sa.String(length=324), nullable=False),
        sa.Column("patient_birth_date", sa.String(length=8), nullable=False),
        sa.Column("patient_sex", sa.String(length=16), nullable=False),
        sa.Column("accession_number", sa.String(length=16), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("requested_procedure_id", sa.String(length=16), nullable=False),
        sa.Column("procedure_description", sa.String(length=64), nullable=False),
        sa.Column("scheduled_procedure_step_id", sa.String(length=16), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("scheduled_station_ae_title", sa.String(length=16), nullable=False),
        sa.Column("scheduled_start_date", sa.String(length=8), nullable=False),
        sa.Column("scheduled_start_time", sa.String(length=16), nullable=False),
        sa.Column("organisation", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_worklist")),
    )
    with op.batch_alter_table("worklist", schema=None) as batch_op:
        batch_op.create_index(
            "ix_worklist_status_scheduled_start_date", ["status", "scheduled_start_date"], unique=False
        )
        batch_op.create_index("ix_worklist_accession_number", ["accession_number"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("worklist", schema=None) as batch_op:
        batch_op.drop_index("ix_worklist_accession_number")
        batch_op.drop_index("ix_worklist_status_scheduled_start_date")

    op.drop_table("worklist")
