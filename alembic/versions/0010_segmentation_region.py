"""attribution_maps.region: the explained region of a segmentation map

Revision ID: 0010_segmentation_region
Revises: 0011_corrected_targets
Create Date: 2026-11-25 23:00:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0010_segmentation_region"
down_revision = "0011_corrected_targets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attribution_maps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("region", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attribution_maps", schema=None) as batch_op:
        batch_op.drop_column("region")
