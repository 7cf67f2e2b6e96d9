"""zego_nonces: ZEGO SignatureNonces seen, kept in the database so that a replay is refused
after a restart and by every API process (issue 11, #8)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 21:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "zego_nonces",
        sa.Column("app_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "nonce"),
    )
    op.create_index("ix_zego_nonces_seen_at", "zego_nonces", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_zego_nonces_seen_at", table_name="zego_nonces")
    op.drop_table("zego_nonces")
