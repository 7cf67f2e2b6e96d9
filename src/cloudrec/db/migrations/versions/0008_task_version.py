"""tasks.version: bumped by every change a task's worker must see (its desired state, its
spec, a screenshot asked for), so that the worker reads one small value per tick and the
whole row only when it moved; stream_sessions indexed by room for the worker's room read

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 00:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="0", nullable=False))
    op.create_index("ix_stream_sessions_room", "stream_sessions", ["app_id", "room_id"])


def downgrade() -> None:
    op.drop_index("ix_stream_sessions_room", table_name="stream_sessions")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("version")
