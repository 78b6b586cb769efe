"""issue 15: subjects' brain masks, runs' preset, best epoch and metric, per-subject predictions

Subjects imported before this revision have no brain mask (``brain_path`` NULL): one is
computed from the image the first time something needs it (the brain mask route, map
statistics, a training run) and stored then (``backend.services.brainmasks``), rather than
by a data migration that would have to read every image.

Revision ID: 0012_brain_masks_predictions
Revises: 0010_segmentation_region
Create Date: 2026-12-04 17:00:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0012_brain_masks_predictions"
down_revision = "0010_segmentation_region"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("brain_path", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("brain_source", sa.String(length=16), nullable=True))
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("preset", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("best_epoch", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("best_metric", sa.String(length=64), nullable=True))
    op.create_table(
        "run_predictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("subject_key", sa.String(length=128), nullable=False),
        sa.Column("split", sa.String(length=8), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.Column("logit", sa.Float(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_predictions_run_id_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"],
            ["subjects.id"],
            name=op.f("fk_run_predictions_subject_id_subjects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_predictions")),
        sa.UniqueConstraint("run_id", "subject_id", name=op.f("uq_run_predictions_run_id")),
    )
    with op.batch_alter_table("run_predictions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_run_predictions_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run_predictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_predictions_run_id"))
    op.drop_table("run_predictions")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("best_metric")
        batch_op.drop_column("best_epoch")
        batch_op.drop_column("preset")
    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.drop_column("brain_source")
        batch_op.drop_column("brain_path")
