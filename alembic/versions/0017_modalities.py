"""issue 20: several modalities per subject (a dataset's channel order, a subject's channels)

Revision ID: 0017_modalities
Revises: 0016_imported_runs
Create Date: 2026-12-06 12:00:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0017_modalities"
down_revision = "0016_imported_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("modalities", sa.JSON(), nullable=True))
    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("channel_paths", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.drop_column("channel_paths")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("modalities")
