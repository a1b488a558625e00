"""consults, their history, departments, report versions, signatures and signing keys

Report versions and signatures are append-only, enforced by the database as
for the audit trail (0005): on SQLite ``BEFORE UPDATE`` / ``BEFORE DELETE``
triggers, on PostgreSQL a statement-level trigger that also refuses
``TRUNCATE``. A signed report then cannot be rewritten by a bug or a careless
query; a change made behind the application's back (after dropping the
triggers) is what signature verification finds.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

APPEND_ONLY = ("report_versions", "report_signatures")


def upgrade() -> None:
    op.create_table(
        "consults",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("consult_id", sa.String(length=36), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("issuer_of_patient_id", sa.String(length=64), nullable=False),
        sa.Column("source_organisation", sa.String(length=64), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("urgency", sa.String(length=16), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target_organisation", sa.String(length=64), nullable=False),
        sa.Column("target_department", sa.String(length=64), nullable=True),
        sa.Column("target_specialist", sa.String(length=64), nullable=True),
        sa.Column("assignee", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.String(length=1024), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("overdue_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_consults")),
        sa.UniqueConstraint("consult_id", name=op.f("uq_consults_consult_id")),
    )
    with op.batch_alter_table("consults", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consults_assignee"), ["assignee"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_consults_source_organisation"), ["source_organisation"], unique=False
        )
        batch_op.create_index("ix_consults_status_due_at", ["status", "due_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_consults_study_instance_uid"), ["study_instance_uid"], unique=False
        )
        batch_op.create_index(
            "ix_consults_target_organisation_status", ["target_organisation", "status"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_consults_target_specialist"), ["target_specialist"], unique=False
        )

    op.create_table(
        "consult_history",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("consult_pk", sa.Integer(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=True),
        sa.Column("target_organisation", sa.String(length=64), nullable=True),
        sa.Column("target_department", sa.String(length=64), nullable=True),
        sa.Column("target_specialist", sa.String(length=64), nullable=True),
        sa.Column("assignee", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=1024), nullable=True),
        sa.ForeignKeyConstraint(
            ["consult_pk"], ["consults.pk"], name=op.f("fk_consult_history_consult_pk_consults")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_consult_history")),
    )
    with op.batch_alter_table("consult_history", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consult_history_consult_pk"), ["consult_pk"], unique=False)

    op.create_table(
        "department_members",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("organisation", sa.String(length=64), nullable=False),
        sa.Column("department", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("lead", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_department_members")),
        sa.UniqueConstraint(
            "organisation",
            "department",
            "username",
            name=op.f("uq_department_members_organisation_department_username"),
        ),
    )
    with op.batch_alter_table("department_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_department_members_username"), ["username"], unique=False)

    op.create_table(
        "report_versions",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("consult_pk", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("template", sa.String(length=32), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("author_organisation", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["consult_pk"], ["consults.pk"], name=op.f("fk_report_versions_consult_pk_consults")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_report_versions")),
        sa.UniqueConstraint("consult_pk", "version", name=op.f("uq_report_versions_consult_pk_version")),
    )
    with op.batch_alter_table("report_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_report_versions_consult_pk"), ["consult_pk"], unique=False)

    op.create_table(
        "report_signatures",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("consult_pk", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("signer", sa.String(length=64), nullable=False),
        sa.Column("signer_name", sa.String(length=128), nullable=False),
        sa.Column("signer_organisation", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("key_fingerprint", sa.String(length=80), nullable=False),
        sa.Column("signature", sa.String(length=256), nullable=False),
        sa.Column("payload_sha256", sa.String(length=64), nullable=False),
        sa.Column("refers_to_version", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["consult_pk"], ["consults.pk"], name=op.f("fk_report_signatures_consult_pk_consults")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_report_signatures")),
        sa.UniqueConstraint(
            "consult_pk", "version", "role", name=op.f("uq_report_signatures_consult_pk_version_role")
        ),
    )
    with op.batch_alter_table("report_signatures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_report_signatures_consult_pk"), ["consult_pk"], unique=False)

    op.create_table(
        "signing_keys",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("fingerprint", sa.String(length=80), nullable=False),
        sa.Column("public_key", sa.String(length=128), nullable=False),
        sa.Column("sealed_private_key", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_signing_keys")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_signing_keys_fingerprint")),
    )
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.create_index(
            "uq_signing_keys_username_active",
            ["username"],
            unique=True,
            sqlite_where=sa.text("retired_at IS NULL"),
            postgresql_where=sa.text("retired_at IS NULL"),
        )

    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute(
            """
            CREATE FUNCTION report_rows_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '% rows are append-only: a signed report changes only by an addendum',
                    TG_TABLE_NAME;
            END $$
            """
        )
    for table in APPEND_ONLY:
        if postgresql:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION report_rows_append_only()"
            )
        else:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} rows are append-only'); END"
                )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in APPEND_ONLY:
        if postgresql:
            op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
        else:
            for verb in ("update", "delete"):
                op.execute(f"DROP TRIGGER {table}_no_{verb}")
    if postgresql:
        op.execute("DROP FUNCTION report_rows_append_only()")

    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.drop_index("uq_signing_keys_username_active")
    op.drop_table("signing_keys")
    with op.batch_alter_table("report_signatures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_report_signatures_consult_pk"))
    op.drop_table("report_signatures")
    with op.batch_alter_table("report_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_report_versions_consult_pk"))
    op.drop_table("report_versions")
    with op.batch_alter_table("department_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_department_members_username"))
    op.drop_table("department_members")
    with op.batch_alter_table("consult_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consult_history_consult_pk"))
    op.drop_table("consult_history")
    with op.batch_alter_table("consults", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consults_target_specialist"))
        batch_op.drop_index("ix_consults_target_organisation_status")
        batch_op.drop_index(batch_op.f("ix_consults_study_instance_uid"))
        batch_op.drop_index("ix_consults_status_due_at")
        batch_op.drop_index(batch_op.f("ix_consults_source_organisation"))
        batch_op.drop_index(batch_op.f("ix_consults_assignee"))
    op.drop_table("consults")
