"""Ownership: a task's attempt (fencing token) and lease, the moment a new attempt resumes
from; each file's attempt; claims on files and callbacks (who delivers them, until when)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 21:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("resume_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("attempt_started_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("deaths", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("task_files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("claim_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("callbacks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claim_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("callbacks", schema=None) as batch_op:
        batch_op.drop_column("claim_until")
    with op.batch_alter_table("task_files", schema=None) as batch_op:
        batch_op.drop_column("claim_until")
        batch_op.drop_column("attempt")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("deaths")
        batch_op.drop_column("attempt_started_at")
        batch_op.drop_column("resume_at")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("attempt")
