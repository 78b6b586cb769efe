"""regression target: the name of a dataset's continuous target

Subjects have carried an optional continuous ``target`` since 0001; regression runs (issue 9)
need to say what it is (the viewer's legend: red "raises predicted <target name>").

Revision ID: 0009_regression_target
Revises: 0005
Create Date: 2026-11-25 22:40:00
"""

import sqlalchemy as sa

from alembic import op

revision = "0009_regression_target"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("target_name", sa.String(length=100), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("target_name")
