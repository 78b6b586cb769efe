"""issue 20: imported runs (a TorchScript model or a MONAI bundle with its input spec)

Revision ID: 0016_imported_runs
Revises: 0015_shortcut_cohort
Create Date: 2026-12-06 10:00:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0016_imported_runs"
down_revision = "0015_shortcut_cohort"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("source", sa.String(length=16), nullable=False, server_default="trained")
        )
        batch_op.add_column(sa.Column("model_format", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("input_spec", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("input_spec")
        batch_op.drop_column("model_format")
        batch_op.drop_column("source")
