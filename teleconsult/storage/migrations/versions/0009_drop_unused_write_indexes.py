"""drop indexes no query uses: plain person-name groups, study updated_at

Every index is one more B-tree insert in the transaction that indexes an
instance of a new patient or study, the case of an ECG cart whose every
tracing is its own study. These four serve no query:

- ``ix_patients_patient_name_{alphabetic,ideographic,phonetic}`` (0001):
  names are matched case-insensitively (``teleconsult/storage/matching.py``),
  through the expression indexes of 0006; an equality on the raw column,
  the only form these could serve, is never written.
- ``ix_studies_updated_at`` (0001): no query orders or filters studies by it
  (the forwarder's stability check reads ``instances.received_at``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 04:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# (index name, table, column)
UNUSED_INDEXES = (
    ("ix_patients_patient_name_alphabetic", "patients", "patient_name_alphabetic"),
    ("ix_patients_patient_name_ideographic", "patients", "patient_name_ideographic"),
    ("ix_patients_patient_name_phonetic", "patients", "patient_name_phonetic"),
    ("ix_studies_updated_at", "studies", "updated_at"),
)


def upgrade() -> None:
    for name, table, _column in UNUSED_INDEXES:
        op.drop_index(name, table_name=table)


def downgrade() -> None:
    for name, table, column in reversed(UNUSED_INDEXES):
        op.create_index(name, table, [column], unique=False)
