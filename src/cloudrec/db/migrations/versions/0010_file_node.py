"""task_files.node: the machine (cluster node) whose attempt wrote the file, so that the
service knows a file it must bring from the fragment store rather than read from its own disk
(docs/cluster.md, "Files of a node")

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 22:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("node", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task_files", schema=None) as batch_op:
        batch_op.drop_column("node")
