"""audit events

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 21:43:02.618233
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("interface", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("actor_organisation", sa.String(length=64), nullable=True),
        sa.Column("role", sa.String(length=32), nullable=True),
        sa.Column("source_address", sa.String(length=64), nullable=True),
        sa.Column("resource", sa.String(length=512), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.String(length=1024), nullable=False),
        sa.Column("chain_sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_actor"), ["actor"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_events_study_instance_uid"), ["study_instance_uid"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_audit_events_time"), ["time"], unique=False)

    # Append-only: the database itself refuses UPDATE and DELETE of audit rows,
    # whatever the application (or a compromised part of it) asks for.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit events are append-only';
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events "
                "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION audit_events_append_only()")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_time"))
        batch_op.drop_index(batch_op.f("ix_audit_events_study_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_audit_events_patient_id"))
        batch_op.drop_index(batch_op.f("ix_audit_events_actor"))

    op.drop_table("audit_events")
