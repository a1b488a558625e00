"""forward_queue: the durable outbox of the C-STORE SCU

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forward_queue",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("file_key", sa.String(length=200), nullable=False),
        sa.Column("destination_ae_title", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("source_organisation", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=1024), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_forward_queue")),
    )
    with op.batch_alter_table("forward_queue", schema=None) as batch_op:
        batch_op.create_index(
            "ix_forward_queue_status_next_attempt_at", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            "ix_forward_queue_destination_ae_title_study_instance_uid",
            ["destination_ae_title", "study_instance_uid"],
            unique=False,
        )
        batch_op.create_index("ix_forward_queue_sop_instance_uid", ["sop_instance_uid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("forward_queue", schema=None) as batch_op:
        batch_op.drop_index("ix_forward_queue_sop_instance_uid")
        batch_op.drop_index("ix_forward_queue_destination_ae_title_study_instance_uid")
        batch_op.drop_index("ix_forward_queue_status_next_attempt_at")

    op.drop_table("forward_queue")
