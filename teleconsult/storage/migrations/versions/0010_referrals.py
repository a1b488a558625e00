"""referrals issued from consults, and their append-only history

A referral's current state is a column of ``referrals``; every step (issued,
accepted, declined, cancelled, completed) is a row of ``referral_history``
with its actor, organisation, time and note. The history is append-only in
the database, as the audit trail (0005) and signed reports (0007) are: on
SQLite ``BEFORE UPDATE`` / ``BEFORE DELETE`` triggers, on PostgreSQL a
statement-level trigger that also refuses ``TRUNCATE``. Who accepted a
green-channel transfer, and when, then stays on record whatever a later
query does.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

APPEND_ONLY = "referral_history"


def upgrade() -> None:
    op.create_table(
        "referrals",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("referral_id", sa.String(length=36), nullable=False),
        sa.Column("consult_pk", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("green_channel", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=1024), nullable=False),
        sa.Column("clinical_summary", sa.Text(), nullable=True),
        sa.Column("instructions", sa.Text(), nullable=True),
        sa.Column("target_organisation", sa.String(length=64), nullable=False),
        sa.Column("target_department", sa.String(length=64), nullable=True),
        sa.Column("target_specialist", sa.String(length=64), nullable=True),
        sa.Column("issued_by", sa.String(length=64), nullable=False),
        sa.Column("issuing_organisation", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_note", sa.String(length=1024), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["consult_pk"], ["consults.pk"], name=op.f("fk_referrals_consult_pk_consults")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_referrals")),
        sa.UniqueConstraint("referral_id", name=op.f("uq_referrals_referral_id")),
    )
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_referrals_consult_pk"), ["consult_pk"], unique=False)
        batch_op.create_index(
            "ix_referrals_target_organisation_status", ["target_organisation", "status"], unique=False
        )
        batch_op.create_index(
            "ix_referrals_issuing_organisation_status", ["issuing_organisation", "status"], unique=False
        )

    op.create_table(
        "referral_history",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("referral_pk", sa.Integer(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("actor_organisation", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=1024), nullable=True),
        sa.ForeignKeyConstraint(
            ["referral_pk"], ["referrals.pk"], name=op.f("fk_referral_history_referral_pk_referrals")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_referral_history")),
    )
    with op.batch_alter_table("referral_history", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_referral_history_referral_pk"), ["referral_pk"], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION referral_history_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '% rows are append-only: a referral changes by a new step', TG_TABLE_NAME;
            END $$
            """
        )
        op.execute(
            f"CREATE TRIGGER {APPEND_ONLY}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {APPEND_ONLY} "
            "FOR EACH STATEMENT EXECUTE FUNCTION referral_history_append_only()"
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
        op.execute("DROP FUNCTION referral_history_append_only()")
    else:
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER {APPEND_ONLY}_no_{verb}")

    with op.batch_alter_table("referral_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_referral_history_referral_pk"))
    op.drop_table("referral_history")
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.drop_index("ix_referrals_issuing_organisation_status")
        batch_op.drop_index("ix_referrals_target_organisation_status")
        batch_op.drop_index(batch_op.f("ix_referrals_consult_pk"))
    op.drop_table("referrals")
