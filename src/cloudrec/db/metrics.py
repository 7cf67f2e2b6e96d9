"""Aggregates of the task database for ``/metrics``: counts and sums, never a task or room id.

Every figure is read from the database, so it counts what every process did (the workers and
the delivery threads of every service on the database), and survives restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine, func, select

from cloudrec.db.models import (
    CallbackAttemptRow,
    StreamSessionRow,
    TaskEventRow,
    TaskFileRow,
    TaskRow,
    UploadAttemptRow,
)


@dataclass
class Aggregates:
    tasks_by_state: dict[str, int] = field(default_factory=dict)
    ended_by_reason: dict[tuple[str, str], int] = field(default_factory=dict)  # state, reason
    recorded_seconds: float = 0.0
    files_by_status: dict[str, int] = field(default_factory=dict)
    bytes_by_status: dict[str, int] = field(default_factory=dict)
    # (target, ok, error kind) -> attempts
    upload_attempts: dict[tuple[str, bool, str], int] = field(default_factory=dict)
    # (delivered, HTTP status class "2xx" … or "none") -> attempts
    callback_attempts: dict[tuple[bool, str], int] = field(default_factory=dict)
    task_events: dict[str, int] = field(default_factory=dict)
    live_streams: int = 0


COUNTED_EVENTS = ("worker_died", "worker_restarted", "worker_released", "files_merged")


def aggregates(engine: Engine) -> Aggregates:
    a = Aggregates()
    with engine.connect() as db:
        for state, n in db.execute(select(TaskRow.state, func.count()).group_by(TaskRow.state)):
            a.tasks_by_state[state] = n
        ended = select(TaskRow.state, TaskRow.end_reason, func.count()).where(
            TaskRow.state.in_(("completed", "failed"))
        )
        for state, reason, n in db.execute(ended.group_by(TaskRow.state, TaskRow.end_reason)):
            a.ended_by_reason[(state, reason or "")] = n
        files = select(
            TaskFileRow.status,
            func.count(),
            func.coalesce(func.sum(TaskFileRow.size), 0),
            func.coalesce(func.sum(TaskFileRow.duration_ms), 0),
        ).where(TaskFileRow.format.not_in(("ts", "sw", "jpg")))
        for status, n, size, ms in db.execute(files.group_by(TaskFileRow.status)):
            a.files_by_status[status] = n
            a.bytes_by_status[status] = int(size)
            if status != "recording":
                a.recorded_seconds += int(ms) / 1000
        uploads = select(
            UploadAttemptRow.target, UploadAttemptRow.ok, UploadAttemptRow.error_kind, func.count()
        ).group_by(UploadAttemptRow.target, UploadAttemptRow.ok, UploadAttemptRow.error_kind)
        for target, ok, kind, n in db.execute(uploads):
            a.upload_attempts[(target, bool(ok), kind or "")] = n
        callbacks = select(
            CallbackAttemptRow.http_status, CallbackAttemptRow.error.is_(None), func.count()
        ).group_by(CallbackAttemptRow.http_status, CallbackAttemptRow.error.is_(None))
        for http_status, delivered, n in db.execute(callbacks):
            key = (bool(delivered), f"{http_status // 100}xx" if http_status else "none")
            a.callback_attempts[key] = a.callback_attempts.get(key, 0) + n
        events = select(TaskEventRow.kind, func.count()).where(
            TaskEventRow.kind.in_(COUNTED_EVENTS)
        )
        for kind, n in db.execute(events.group_by(TaskEventRow.kind)):
            a.task_events[kind] = n
        live = select(func.count()).where(StreamSessionRow.ended_at.is_(None))
        a.live_streams = int(db.execute(live).scalar_one())
    return a
