"""issue 18: shortcut reports and cohort maps of a run

Revision ID: 0015_shortcut_cohort
Revises: 0013_review_blinding
Create Date: 2026-12-05 11:00:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0015_shortcut_cohort"
down_revision = "0014_evidence_checks"
branch_labels = None
depends_on = None


def _owner_columns(table: str) -> list[sa.Column | sa.ForeignKeyConstraint]:
    """The job and author columns both tables share, with their foreign keys."""
    return [
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f(f"fk_{table}_run_id_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f(f"fk_{table}_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f(f"fk_{table}_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
    ]


def upgrade() -> None:
    op.create_table(
        "shortcut_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("split", sa.String(length=8), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("flags", sa.JSON(), nullable=False),
        *_owner_columns("shortcut_reports"),
    )
    op.create_table(
        "cohort_maps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("split", sa.String(length=8), nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("reference_subject_id", sa.Integer(), nullable=True),
        sa.Column("n_subjects", sa.Integer(), nullable=False),
        sa.Column("mean_path", sa.String(length=512), nullable=True),
        sa.Column("t_path", sa.String(length=512), nullable=True),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["reference_subject_id"],
            ["subjects.id"],
            name=op.f("fk_cohort_maps_reference_subject_id_subjects"),
            ondelete="SET NULL",
        ),
        *_owner_columns("cohort_maps"),
    )
    for table in ("shortcut_reports", "cohort_maps"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f"ix_{table}_run_id"), ["run_id"], unique=False)
            batch_op.create_index(batch_op.f(f"ix_{table}_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    for table in ("cohort_maps", "shortcut_reports"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_job_id"))
            batch_op.drop_index(batch_op.f(f"ix_{table}_run_id"))
        op.drop_table(table)
