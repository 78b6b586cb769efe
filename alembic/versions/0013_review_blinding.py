"""blinded review rounds: projects.review_blinded (default true)

Revision ID: 0013_review_blinding
Revises: 0012_brain_masks_predictions
Create Date: 2026-12-04 17:00:00.000000
"""

import sqlalchemy as sa

from alembic import op

revision = "0013_review_blinding"
down_revision = "0012_brain_masks_predictions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("review_blinded", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("review_blinded")
