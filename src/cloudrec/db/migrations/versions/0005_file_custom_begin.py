"""task_files.custom_begin_ms: the publisher's own timestamp from the stream's SEI (ZEGO
CustomBeginTimestamp)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_files", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("custom_begin_ms", sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("task_files", schema=None) as batch_op:
        batch_op.drop_column("custom_begin_ms")
