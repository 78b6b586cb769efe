"""evidence checks of attribution maps: evidence_checks

Revision ID: 0014_evidence_checks
Revises: 0013_review_blinding
Create Date: 2026-12-05 11:00:00.000000
"""

import sqlalchemy as sa

from alembic import op

revision = "0014_evidence_checks"
down_revision = "0013_review_blinding"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evidence_checks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("attribution_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("verdict", sa.String(length=8), nullable=True),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["attribution_id"], ["attribution_maps.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("evidence_checks", schema=None) as batch_op:
        batch_op.create_index("ix_evidence_checks_attribution_id", ["attribution_id"])
        batch_op.create_index("ix_evidence_checks_run_id", ["run_id"])
        batch_op.create_index("ix_evidence_checks_job_id", ["job_id"])


def downgrade() -> None:
    op.drop_table("evidence_checks")
