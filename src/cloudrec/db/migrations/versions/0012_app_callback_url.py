"""apps.callback_url: where the callbacks go of tasks whose dialect's requests name no URL
(Agora's notifications are configured per project, not per request: docs/agora.md,
"Notifications")

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 10:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callback_url", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.drop_column("callback_url")
