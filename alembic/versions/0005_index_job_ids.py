"""index job ids

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 21:28:25.749257
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attribution_maps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_attribution_maps_job_id"), ["job_id"], unique=False)

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runs_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_job_id"))

    with op.batch_alter_table("attribution_maps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attribution_maps_job_id"))
