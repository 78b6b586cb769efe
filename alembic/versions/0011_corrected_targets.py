"""corrected targets from reviews, runs.from_reviews_of, epoch maps of watch subjects

Revision ID: 0011_corrected_targets
Revises: 0006_audit_log
Create Date: 2026-11-25 23:00:00.000000
"""

import sqlalchemy as sa

from alembic import op

revision = "0011_corrected_targets"
down_revision = "0006_audit_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("from_reviews_of", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_runs_from_reviews_of_runs"),
            "runs",
            ["from_reviews_of"],
            ["id"],
            ondelete="SET NULL",
        )
    op.create_table(
        "corrected_targets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("source_run_id", sa.Integer(), nullable=True),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("policy", sa.String(length=32), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_corrected_targets_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_run_id"],
            ["runs.id"],
            name=op.f("fk_corrected_targets_source_run_id_runs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"],
            ["subjects.id"],
            name=op.f("fk_corrected_targets_subject_id_subjects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corrected_targets")),
        sa.UniqueConstraint("run_id", "subject_id", name=op.f("uq_corrected_targets_run_id")),
    )
    op.create_index(
        op.f("ix_corrected_targets_run_id"), "corrected_targets", ["run_id"], unique=False
    )
    op.create_index(
        op.f("ix_corrected_targets_source_run_id"),
        "corrected_targets",
        ["source_run_id"],
        unique=False,
    )
    op.create_table(
        "epoch_maps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("scale", sa.Float(), nullable=False),
        sa.Column("shape", sa.JSON(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_epoch_maps_run_id_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"],
            ["subjects.id"],
            name=op.f("fk_epoch_maps_subject_id_subjects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_epoch_maps")),
        sa.UniqueConstraint("run_id", "subject_id", "epoch", name=op.f("uq_epoch_maps_run_id")),
    )
    op.create_index(op.f("ix_epoch_maps_run_id"), "epoch_maps", ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_epoch_maps_run_id"), table_name="epoch_maps")
    op.drop_table("epoch_maps")
    op.drop_index(op.f("ix_corrected_targets_source_run_id"), table_name="corrected_targets")
    op.drop_index(op.f("ix_corrected_targets_run_id"), table_name="corrected_targets")
    op.drop_table("corrected_targets")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_runs_from_reviews_of_runs"), type_="foreignkey")
        batch_op.drop_column("from_reviews_of")
