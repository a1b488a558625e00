"""live sessions and the replica that holds each, so any replica can relay to it

A live exam's peer connections live in one process. With several HTTP
replicas (``TELECONSULT_REPLICA_URL`` set on each), a request or a
signalling socket for a session that another replica holds is relayed
there; this table says which. At most one running session per consult
(partial unique index on ``consult_id`` where ``ended_at`` is null).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "live_sessions",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("consult_id", sa.String(length=64), nullable=False),
        sa.Column("replica_url", sa.String(length=256), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_live_sessions")),
        sa.UniqueConstraint("session_id", name=op.f("uq_live_sessions_session_id")),
    )
    op.create_index(
        "uq_live_sessions_consult_id_running",
        "live_sessions",
        ["consult_id"],
        unique=True,
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_index("ix_live_sessions_replica_url_ended_at", "live_sessions", ["replica_url", "ended_at"])


def downgrade() -> None:
    op.drop_index("ix_live_sessions_replica_url_ended_at", table_name="live_sessions")
    op.drop_index("uq_live_sessions_consult_id_running", table_name="live_sessions")
    op.drop_table("live_sessions")
