"""The task repository: tasks, files, events and resources in the task database."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Engine, Table, Update, bindparam, delete, func, select, text, update
from sqlalchemy.orm import Session

from cloudrec.core.ports import SecretBox
from cloudrec.core.tasks import (
    Desired,
    FileFormat,
    FileStatus,
    RecordedFile,
    RecordingSpec,
    StorageTarget,
    Task,
    TaskState,
    TrackType,
)
from cloudrec.db.models import AppRow, ResourceRow, TaskEventRow, TaskFileRow, TaskRow, utc

_TERMINAL = [TaskState.COMPLETED.value, TaskState.FAILED.value]
# Recording is over (files may still be uploading).
_ENDED = [*_TERMINAL, TaskState.UPLOADING.value]


def _opt(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def _to_task(r: TaskRow) -> Task:
    return Task(
        task_id=r.task_id,
        app_id=r.app_id,
        spec=RecordingSpec.from_json(json.loads(r.spec_json)),
        state=TaskState(r.state),
        desired=Desired(r.desired),
        created_at=utc(r.created_at),
        started_at=_opt(r.started_at),
        ended_at=_opt(r.ended_at),
        stop_requested_at=_opt(r.stop_requested_at),
        heartbeat_at=_opt(r.heartbeat_at),
        worker=r.worker,
        end_reason=r.end_reason,
        error=r.error,
        resource_id=r.resource_id,
        snapshot_requests=r.snapshot_requests or 0,
        attempt=r.attempt or 1,
        lease_until=_opt(r.lease_until),
        resume_at=_opt(r.resume_at),
        attempt_started_at=_opt(r.attempt_started_at),
        deaths=r.deaths or 0,
        node=r.node,
        units=r.units or 1,
    )


def _to_file(r: TaskFileRow) -> RecordedFile:
    return RecordedFile(
        task_id=r.task_id,
        name=r.name,
        path=r.path,
        format=FileFormat(r.format),
        status=FileStatus(r.status),
        stream_id=r.stream_id,
        user_id=r.user_id,
        track_type=TrackType(r.track_type),
        begin_ms=r.begin_ms,
        size=r.size,
        duration_ms=r.duration_ms,
        width=r.width,
        height=r.height,
        id=r.id,
        complete=r.complete,
        backup_path=r.backup_path,
        url=r.url,
        retry_at=_opt(r.retry_at),
        keep_until=_opt(r.keep_until),
        custom_begin_ms=r.custom_begin_ms,
        attempt=r.attempt or 1,
        node=r.node,
    )


def _plain(fields: dict[str, object]) -> dict[str, object]:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in fields.items()}


# The columns whose change the task's worker must see: a write to any of them bumps
# ``version``, which the worker reads every tick (:class:`SqlTaskWatch`).
WATCHED = frozenset({"desired", "stop_requested_at", "spec_json", "snapshot_requests"})


def _values(fields: dict[str, object]) -> dict[str, object]:
    values = _plain(fields)
    if WATCHED & values.keys():
        values["version"] = TaskRow.version + 1
    return values


def _renewal_statement() -> Update:
    """The lease renewal, built once (on the table, not the ORM class: the heartbeat runs it
    bare, many times a second in a recorder host)."""
    table = cast(Table, TaskRow.__table__)
    t = table.c
    return (
        update(table)
        .where(
            t.task_id == bindparam("b_task_id"),
            t.attempt == bindparam("b_attempt"),
            t.state.not_in(_ENDED),
        )
        .values(heartbeat_at=bindparam("b_now"), lease_until=bindparam("b_until"))
    )


_RENEWAL = _renewal_statement()


def _renewal_params(task_id: str, attempt: int, now: datetime, until: datetime) -> dict[str, Any]:
    return {"b_task_id": task_id, "b_attempt": attempt, "b_now": now, "b_until": until}


class SqlTaskRepository:
    def __init__(self, session: Session, box: SecretBox) -> None:
        self._s = session
        self._box = box

    def add(self, task: Task, storage: StorageTarget | None) -> None:
        sealed = None if storage is None else self._box.seal(json.dumps(vars(storage)))
        self._s.add(
            TaskRow(
                task_id=task.task_id,
                app_id=task.app_id,
                room_id=task.spec.room_id,
                spec_json=json.dumps(task.spec.to_json()),
                storage_enc=sealed,
                state=task.state.value,
                desired=task.desired.value,
                created_at=task.created_at,
                resource_id=task.resource_id,
                attempt=task.attempt,
                lease_until=task.lease_until,
                attempt_started_at=task.created_at,
                units=task.units,
            )
        )
        self._s.flush()

    def get(self, task_id: str) -> Task | None:
        row = self._s.get(TaskRow, task_id)
        return None if row is None else _to_task(row)

    def storage(self, task_id: str) -> StorageTarget | None:
        row = self._s.get(TaskRow, task_id)
        if row is None or row.storage_enc is None:
            return None
        return StorageTarget(**json.loads(self._box.open(row.storage_enc)))

    def update(self, task_id: str, **fields: object) -> None:
        self._s.execute(update(TaskRow).where(TaskRow.task_id == task_id).values(**_values(fields)))

    def update_if(
        self,
        task_id: str,
        *,
        attempt: int | None = None,
        states: tuple[TaskState, ...] | None = None,
        desired_in: tuple[Desired, ...] | None = None,
        unstarted: bool = False,
        **fields: object,
    ) -> bool:
        """Compare-and-set: change the task only if its attempt, state, desired state and
        (``unstarted``) the absence of a worker are still the ones the caller saw; True if it
        did (the caller won)."""
        q = update(TaskRow).where(TaskRow.task_id == task_id)
        if attempt is not None:
            q = q.where(TaskRow.attempt == attempt)
        if states is not None:
            q = q.where(TaskRow.state.in_([s.value for s in states]))
        if desired_in is not None:
            q = q.where(TaskRow.desired.in_([d.value for d in desired_in]))
        if unstarted:
            q = q.where(TaskRow.worker.is_(None))
        if "new_attempt" in fields:  # the column compared (``attempt``) is also set
            fields["attempt"] = fields.pop("new_attempt")
        result = self._s.execute(q.values(**_values(fields)))
        return bool(getattr(result, "rowcount", 0))

    def renew_lease(self, task_id: str, attempt: int, now: datetime, until: datetime) -> bool:
        """The fence of every write of a worker: extend attempt ``attempt``'s lease, which
        holds only while that attempt owns a task still being recorded.  On PostgreSQL the
        update also locks the row until the transaction ends."""
        result = self._s.execute(_RENEWAL, _renewal_params(task_id, attempt, now, until))
        return bool(getattr(result, "rowcount", 0))

    def lock_app(self, app_id: int) -> None:
        """Serialise the transactions that start tasks of one app until this one ends (a
        write to the app's row: a row lock on PostgreSQL, the write lock on SQLite), so that
        a limit or a client's task id checked in it cannot be passed by a concurrent start."""
        self._s.execute(update(AppRow).where(AppRow.app_id == app_id).values(app_id=AppRow.app_id))

    def by_client_ref(self, app_id: int, ref: str, since: datetime) -> Task | None:
        row = self._s.scalars(
            select(TaskRow)
            .where(
                TaskRow.app_id == app_id,
                TaskRow.resource_id == ref,
                TaskRow.created_at >= since,
            )
            .order_by(TaskRow.created_at.desc())
        ).first()
        return None if row is None else _to_task(row)

    def request_snapshot(self, task_id: str) -> None:
        # In the database, not read-modify-write: two requests at once count as two.
        self._s.execute(
            update(TaskRow)
            .where(TaskRow.task_id == task_id)
            .values(snapshot_requests=TaskRow.snapshot_requests + 1, version=TaskRow.version + 1)
        )

    def active(self) -> list[Task]:
        rows = self._s.scalars(select(TaskRow).where(TaskRow.state.not_in(_TERMINAL)))
        return [_to_task(r) for r in rows]

    def count_active(self, app_id: int) -> int:
        q = (
            select(func.count())
            .select_from(TaskRow)
            .where(TaskRow.app_id == app_id, TaskRow.state.not_in(_TERMINAL))
        )
        return int(self._s.scalar(q) or 0)

    def add_file(self, file: RecordedFile) -> int:
        row = TaskFileRow(
            task_id=file.task_id,
            name=file.name,
            path=file.path,
            format=file.format.value,
            status=file.status.value,
            stream_id=file.stream_id,
            user_id=file.user_id,
            track_type=int(file.track_type),
            begin_ms=file.begin_ms,
            size=file.size,
            duration_ms=file.duration_ms,
            width=file.width,
            height=file.height,
            attempt=file.attempt,
            node=file.node,
        )
        self._s.add(row)
        self._s.flush()
        return row.id

    def update_file(self, file_id: int, **fields: object) -> None:
        self._s.execute(
            update(TaskFileRow).where(TaskFileRow.id == file_id).values(**_plain(fields))
        )

    def update_file_if(
        self, file_id: int, statuses: tuple[FileStatus, ...], **fields: object
    ) -> bool:
        """Compare-and-set on a file's status; True if the file was in one of ``statuses``."""
        result = self._s.execute(
            update(TaskFileRow)
            .where(
                TaskFileRow.id == file_id,
                TaskFileRow.status.in_([s.value for s in statuses]),
            )
            .values(**_plain(fields))
        )
        return bool(getattr(result, "rowcount", 0))

    def claim_file(self, file_id: int, now: datetime, until: datetime) -> RecordedFile | None:
        """Take the file for delivery until ``until`` unless someone else holds it; the file
        as it is now (re-read after the claim: never a status read before it), or None."""
        result = self._s.execute(
            update(TaskFileRow)
            .where(
                TaskFileRow.id == file_id,
                (TaskFileRow.claim_until.is_(None)) | (TaskFileRow.claim_until < now),
            )
            .values(claim_until=until)
        )
        if not getattr(result, "rowcount", 0):
            return None
        row = self._s.get(TaskFileRow, file_id, populate_existing=True)
        return None if row is None else _to_file(row)

    def renew_file_claims(self, file_ids: list[int], until: datetime) -> None:
        if file_ids:
            self._s.execute(
                update(TaskFileRow)
                .where(TaskFileRow.id.in_(file_ids), TaskFileRow.claim_until.is_not(None))
                .values(claim_until=until)
            )

    def remove_file(self, file_id: int) -> None:
        self._s.execute(delete(TaskFileRow).where(TaskFileRow.id == file_id))

    def files(self, task_id: str) -> list[RecordedFile]:
        rows = self._s.scalars(
            select(TaskFileRow).where(TaskFileRow.task_id == task_id).order_by(TaskFileRow.id)
        )
        return [_to_file(r) for r in rows]

    def file(self, file_id: int) -> RecordedFile | None:
        row = self._s.get(TaskFileRow, file_id)
        return None if row is None else _to_file(row)

    def files_to_deliver(self, now: datetime) -> list[RecordedFile]:
        """Recorded files of tasks with a storage target (and uploading ones: an upload cut
        short by a restart starts again), and backed-up files due a retry; none that an
        uploader holds (a candidate list: each is claimed before anything is done with it)."""
        q = (
            select(TaskFileRow)
            .join(TaskRow, TaskRow.task_id == TaskFileRow.task_id)
            .where(
                TaskRow.storage_enc.is_not(None),
                (
                    TaskFileRow.status.in_([FileStatus.RECORDED.value, FileStatus.UPLOADING.value])
                    & (TaskFileRow.retry_at.is_(None) | (TaskFileRow.retry_at <= now))
                )
                | (
                    (TaskFileRow.status == FileStatus.BACKED_UP.value)
                    & (TaskFileRow.retry_at <= now)
                ),
                (TaskFileRow.claim_until.is_(None)) | (TaskFileRow.claim_until < now),
            )
            .order_by(TaskFileRow.id)
        )
        return [_to_file(r) for r in self._s.scalars(q)]

    def kept_past(self, ended_before: datetime) -> list[RecordedFile]:
        """Files kept on this server (recorded, their task has no storage) of recordings
        that ended before ``ended_before``."""
        q = (
            select(TaskFileRow)
            .join(TaskRow, TaskRow.task_id == TaskFileRow.task_id)
            .where(
                TaskRow.storage_enc.is_(None),
                TaskRow.state.in_([TaskState.COMPLETED.value, TaskState.FAILED.value]),
                TaskRow.ended_at < ended_before,
                TaskFileRow.status == FileStatus.RECORDED.value,
            )
            .order_by(TaskFileRow.id)
        )
        return [_to_file(r) for r in self._s.scalars(q)]

    def page(
        self,
        app_id: int,
        room_id: str | None,
        active: bool,
        since: datetime,
        until: datetime,
        offset: int,
        limit: int,
    ) -> tuple[int, list[Task]]:
        q = select(TaskRow).where(
            TaskRow.app_id == app_id,
            TaskRow.created_at >= since,
            TaskRow.created_at < until,
            TaskRow.state.not_in(_ENDED) if active else TaskRow.state.in_(_ENDED),
        )
        if room_id:
            q = q.where(TaskRow.room_id == room_id)
        total = int(self._s.scalar(select(func.count()).select_from(q.subquery())) or 0)
        rows = self._s.scalars(q.order_by(TaskRow.created_at.desc()).offset(offset).limit(limit))
        return total, [_to_task(r) for r in rows]

    def by_resource(self, app_id: int, resource_id: str) -> Task | None:
        row = self._s.scalars(
            select(TaskRow)
            .where(TaskRow.app_id == app_id, TaskRow.resource_id == resource_id)
            .order_by(TaskRow.created_at.desc())
        ).first()
        return None if row is None else _to_task(row)

    def in_state(self, state: TaskState) -> list[Task]:
        rows = self._s.scalars(select(TaskRow).where(TaskRow.state == state.value))
        return [_to_task(r) for r in rows]

    def add_event(self, task_id: str, kind: str, at: datetime, detail: str = "") -> None:
        self._s.add(TaskEventRow(task_id=task_id, kind=kind, at=at, detail=detail))

    def events(self, task_id: str) -> list[tuple[str, datetime, str]]:
        rows = self._s.scalars(
            select(TaskEventRow).where(TaskEventRow.task_id == task_id).order_by(TaskEventRow.id)
        )
        return [(r.kind, utc(r.at), r.detail) for r in rows]

    def add_resource(
        self, resource_id: str, app_id: int, at: datetime, expires_at: datetime
    ) -> None:
        self._s.add(
            ResourceRow(
                resource_id=resource_id, app_id=app_id, created_at=at, expires_at=expires_at
            )
        )

    def resource(self, resource_id: str) -> tuple[int, datetime, str | None] | None:
        row = self._s.get(ResourceRow, resource_id)
        return None if row is None else (row.app_id, utc(row.expires_at), row.task_id)

    def use_resource(self, resource_id: str, task_id: str) -> bool:
        result = self._s.execute(
            update(ResourceRow)
            .where(ResourceRow.resource_id == resource_id, ResourceRow.task_id.is_(None))
            .values(task_id=task_id)
        )
        return bool(getattr(result, "rowcount", 0))


# One statement: the task's version and its room's live set (how many, and the sum of their
# ids: a session that opens adds a new, larger id; one that closes takes its id away).
_WATCH = text(
    "SELECT t.version,"
    " (SELECT COUNT(*) FROM stream_sessions s WHERE s.app_id = t.app_id"
    " AND s.room_id = :room AND s.live_key IS NOT NULL),"
    " (SELECT COALESCE(SUM(s.id), 0) FROM stream_sessions s WHERE s.app_id = t.app_id"
    " AND s.room_id = :room AND s.live_key IS NOT NULL)"
    " FROM tasks t WHERE t.task_id = :task"
)


class SqlTaskWatch:
    """What a worker reads every tick (:class:`cloudrec.core.ports.TaskWatch`): one small
    statement on a pooled connection, no ORM session, no row built."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def read(self, task_id: str, room_id: str) -> tuple[int, int, int] | None:
        with self._engine.connect() as conn:
            row = conn.execute(_WATCH, {"task": task_id, "room": room_id}).first()
        return None if row is None else (int(row[0]), int(row[1]), int(row[2]))

    def renew(self, task_id: str, attempt: int, now: datetime, until: datetime) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(_RENEWAL, _renewal_params(task_id, attempt, now, until))
        return bool(result.rowcount)
