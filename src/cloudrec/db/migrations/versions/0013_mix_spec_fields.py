"""Stored mix specs in the fields of today's MixSpec: ``zego_layout`` renamed ``auto_layout``,
and a ZEGO task's per-stream layout and mix file name (``by_stream``, ``output_id``) that the
worker used to derive from the task's dialect and ``extra["MixOutputStreamId"]``; a running
mixed task survives the upgrade unchanged.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 02:20:00.000000
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TASKS = sa.table("tasks", sa.column("task_id", sa.String), sa.column("spec_json", sa.Text))


def upgrade_spec(spec: dict[str, Any]) -> bool:
    """``spec`` (a stored RecordingSpec) brought up to date in place; whether it changed."""
    mix = spec.get("mix")
    if not isinstance(mix, dict) or "by_stream" in mix:
        return False  # no mix, or one stored by this code
    if "zego_layout" in mix:  # rows from before the automatic layouts have neither key
        mix["auto_layout"] = mix.pop("zego_layout")
    zego = spec.get("dialect") == "zego"
    mix.setdefault("by_stream", zego)
    extra = mix.get("extra") or {}
    mix.setdefault("output_id", str(extra.pop("MixOutputStreamId", "") or "mix"))
    return True


def upgrade() -> None:
    conn = op.get_bind()
    ids = conn.execute(
        sa.select(TASKS.c.task_id).where(~TASKS.c.spec_json.like('%"mix": null%'))
    ).scalars()
    for task_id in list(ids):  # one row at a time: every mixed task ever recorded
        raw = conn.execute(
            sa.select(TASKS.c.spec_json).where(TASKS.c.task_id == task_id)
        ).scalar_one()
        spec = json.loads(raw)
        if upgrade_spec(spec):
            conn.execute(
                TASKS.update().where(TASKS.c.task_id == task_id).values(spec_json=json.dumps(spec))
            )


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(TASKS.c.task_id, TASKS.c.spec_json).where(
            TASKS.c.spec_json.like('%"auto_layout"%')
        )
    ).all()
    for task_id, raw in rows:
        spec = json.loads(raw)
        mix = spec.get("mix")
        if not isinstance(mix, dict) or "auto_layout" not in mix:
            continue
        mix["zego_layout"] = mix.pop("auto_layout")
        mix.pop("by_stream", None)
        output_id = mix.pop("output_id", "mix")
        if spec.get("dialect") == "zego":
            mix.setdefault("extra", {})["MixOutputStreamId"] = output_id
        conn.execute(
            TASKS.update().where(TASKS.c.task_id == task_id).values(spec_json=json.dumps(spec))
        )
