"""Upload attempts and callbacks in the task database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cloudrec.core.tasks import Callback, CallbackAttempt, UploadAttempt
from cloudrec.db.models import CallbackAttemptRow, CallbackRow, UploadAttemptRow, utc


def _to_callback(r: CallbackRow) -> Callback:
    return Callback(
        id=r.id,
        task_id=r.task_id,
        app_id=r.app_id,
        url=r.url,
        event=r.event,
        message_id=r.message_id,
        body=r.body,
        status=r.status,
        attempts=r.attempts,
        next_at=utc(r.next_at),
        created_at=utc(r.created_at),
        delivered_at=None if r.delivered_at is None else utc(r.delivered_at),
    )


class SqlDeliveryRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def add_upload_attempt(self, attempt: UploadAttempt) -> None:
        self._s.add(UploadAttemptRow(**vars(attempt)))

    def upload_attempts(self, file_id: int) -> list[UploadAttempt]:
        rows = self._s.scalars(
            select(UploadAttemptRow)
            .where(UploadAttemptRow.file_id == file_id)
            .order_by(UploadAttemptRow.id)
        )
        return [
            UploadAttempt(
                file_id=r.file_id,
                target=r.target,
                at=utc(r.at),
                ok=r.ok,
                error_kind=r.error_kind,
                error=r.error,
                duration_ms=r.duration_ms,
            )
            for r in rows
        ]

    def add_callback(self, callback: Callback) -> None:
        fields = {k: v for k, v in vars(callback).items() if k != "id"}
        self._s.add(CallbackRow(**fields))

    def due_callbacks(self, now: datetime) -> list[Callback]:
        rows = self._s.scalars(
            select(CallbackRow)
            .where(
                CallbackRow.status == "pending",
                CallbackRow.next_at <= now,
                (CallbackRow.claim_until.is_(None)) | (CallbackRow.claim_until < now),
            )
            .order_by(CallbackRow.id)
        )
        return [_to_callback(r) for r in rows]

    def claim_callback(self, callback_id: int, now: datetime, until: datetime) -> Callback | None:
        """Take a pending, due callback for sending until ``until`` unless someone holds it;
        the row as it is after the claim (its attempts count included)."""
        result = self._s.execute(
            update(CallbackRow)
            .where(
                CallbackRow.id == callback_id,
                CallbackRow.status == "pending",
                CallbackRow.next_at <= now,
                (CallbackRow.claim_until.is_(None)) | (CallbackRow.claim_until < now),
            )
            .values(claim_until=until)
        )
        if not getattr(result, "rowcount", 0):
            return None
        row = self._s.get(CallbackRow, callback_id, populate_existing=True)
        return None if row is None else _to_callback(row)

    def update_callback(self, callback_id: int, **fields: object) -> None:
        self._s.execute(update(CallbackRow).where(CallbackRow.id == callback_id).values(**fields))

    def add_callback_attempt(self, attempt: CallbackAttempt) -> None:
        self._s.add(CallbackAttemptRow(**vars(attempt)))

    def callback_count(self, task_id: str) -> int:
        query = select(func.count()).select_from(CallbackRow).where(CallbackRow.task_id == task_id)
        return int(self._s.scalar(query) or 0)

    def callbacks(self, task_id: str) -> list[tuple[Callback, list[CallbackAttempt]]]:
        rows = list(
            self._s.scalars(
                select(CallbackRow).where(CallbackRow.task_id == task_id).order_by(CallbackRow.id)
            )
        )
        out = []
        for r in rows:
            attempts = self._s.scalars(
                select(CallbackAttemptRow)
                .where(CallbackAttemptRow.callback_id == r.id)
                .order_by(CallbackAttemptRow.id)
            )
            out.append(
                (
                    _to_callback(r),
                    [
                        CallbackAttempt(
                            callback_id=a.callback_id,
                            at=utc(a.at),
                            http_status=a.http_status,
                            error=a.error,
                            duration_ms=a.duration_ms,
                        )
                        for a in attempts
                    ],
                )
            )
        return out
