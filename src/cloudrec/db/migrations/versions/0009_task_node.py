"""tasks.node: the name of the machine (cluster node) the task's current attempt runs on,
written by the attempt's worker when it claims the task; tasks.units: what the recording costs a
machine, decided at its start (core/cost.py; docs/cluster.md)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 17:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("node", sa.String(200), nullable=True))
        batch_op.add_column(sa.Column("units", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("units")
        batch_op.drop_column("node")
