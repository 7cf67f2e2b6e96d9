"""stream_sessions.node and ingest_nodes: a live stream belongs to the ingest node that holds
its publisher; a node that starts again closes only its own, and the streams of a node that
stopped beating are closed by the others (docs/cluster.md, "Ingest nodes")

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 07:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stream_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("node", sa.String(200), nullable=True))
    op.create_table(
        "ingest_nodes",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ingest_nodes")
    with op.batch_alter_table("stream_sessions", schema=None) as batch_op:
        batch_op.drop_column("node")
