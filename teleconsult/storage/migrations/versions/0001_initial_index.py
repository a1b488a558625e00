"""initial index of patients, studies, series, instances

Revision ID: 0001
Revises:
Create Date: 2026-11-23 21:13:09.855391
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instance_versions",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("file_key", sa.String(length=200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=False),
        sa.Column("source_organisation", sa.String(length=64), nullable=False),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_instance_versions")),
    )
    with op.batch_alter_table("instance_versions", schema=None) as batch_op:
        batch_op.create_index("ix_instance_versions_sop_instance_uid", ["sop_instance_uid"], unique=False)

    op.create_table(
        "patients",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("issuer_of_patient_id", sa.String(length=64), nullable=False),
        sa.Column("patient_name", sa.String(length=324), nullable=False),
        sa.Column("patient_name_alphabetic", sa.String(length=324), nullable=False),
        sa.Column("patient_name_ideographic", sa.String(length=324), nullable=False),
        sa.Column("patient_name_phonetic", sa.String(length=324), nullable=False),
        sa.Column("patient_birth_date", sa.String(length=8), nullable=False),
        sa.Column("patient_sex", sa.String(length=16), nullable=False),
        sa.Column("specific_character_set", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_patients")),
        sa.UniqueConstraint(
            "patient_id", "issuer_of_patient_id", name=op.f("uq_patients_patient_id_issuer_of_patient_id")
        ),
    )
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_patients_patient_name_alphabetic"), ["patient_name_alphabetic"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_patients_patient_name_ideographic"), ["patient_name_ideographic"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_patients_patient_name_phonetic"), ["patient_name_phonetic"], unique=False
        )

    op.create_table(
        "studies",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("study_date", sa.String(length=8), nullable=False),
        sa.Column("study_time", sa.String(length=16), nullable=False),
        sa.Column("accession_number", sa.String(length=16), nullable=False),
        sa.Column("study_id", sa.String(length=16), nullable=False),
        sa.Column("study_description", sa.String(length=64), nullable=False),
        sa.Column("referring_physician_name", sa.String(length=324), nullable=False),
        sa.Column("institution_name", sa.String(length=64), nullable=False),
        sa.Column("modalities_in_study", sa.String(length=128), nullable=False),
        sa.Column("source_organisation", sa.String(length=64), nullable=False),
        sa.Column("specific_character_set", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patient_pk"], ["patients.pk"], name=op.f("fk_studies_patient_pk_patients")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_studies")),
        sa.UniqueConstraint("study_instance_uid", name=op.f("uq_studies_study_instance_uid")),
    )
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_studies_accession_number"), ["accession_number"], unique=False)
        batch_op.create_index(batch_op.f("ix_studies_patient_pk"), ["patient_pk"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_studies_source_organisation"), ["source_organisation"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_studies_study_date"), ["study_date"], unique=False)
        batch_op.create_index(batch_op.f("ix_studies_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "series",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("series_description", sa.String(length=64), nullable=False),
        sa.Column("series_date", sa.String(length=8), nullable=False),
        sa.Column("series_time", sa.String(length=16), nullable=False),
        sa.Column("body_part_examined", sa.String(length=16), nullable=False),
        sa.Column("source_organisation", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["study_pk"], ["studies.pk"], name=op.f("fk_series_study_pk_studies")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_series")),
        sa.UniqueConstraint("series_instance_uid", name=op.f("uq_series_series_instance_uid")),
    )
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_series_modality"), ["modality"], unique=False)
        batch_op.create_index(batch_op.f("ix_series_study_pk"), ["study_pk"], unique=False)

    op.create_table(
        "instances",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("series_pk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("number_of_frames", sa.Integer(), nullable=True),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("specific_character_set", sa.String(length=128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("file_key", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=False),
        sa.Column("source_organisation", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["series_pk"], ["series.pk"], name=op.f("fk_instances_series_pk_series")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_instances")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_instances_sop_instance_uid")),
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instances_received_at"), ["received_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_instances_series_pk"), ["series_pk"], unique=False)
        batch_op.create_index(batch_op.f("ix_instances_sop_class_uid"), ["sop_class_uid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instances_sop_class_uid"))
        batch_op.drop_index(batch_op.f("ix_instances_series_pk"))
        batch_op.drop_index(batch_op.f("ix_instances_received_at"))

    op.drop_table("instances")
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_series_study_pk"))
        batch_op.drop_index(batch_op.f("ix_series_modality"))

    op.drop_table("series")
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_studies_updated_at"))
        batch_op.drop_index(batch_op.f("ix_studies_study_date"))
        batch_op.drop_index(batch_op.f("ix_studies_source_organisation"))
        batch_op.drop_index(batch_op.f("ix_studies_patient_pk"))
        batch_op.drop_index(batch_op.f("ix_studies_accession_number"))

    op.drop_table("studies")
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patients_patient_name_phonetic"))
        batch_op.drop_index(batch_op.f("ix_patients_patient_name_ideographic"))
        batch_op.drop_index(batch_op.f("ix_patients_patient_name_alphabetic"))

    op.drop_table("patients")
    with op.batch_alter_table("instance_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_instance_versions_sop_instance_uid")

    op.drop_table("instance_versions")
