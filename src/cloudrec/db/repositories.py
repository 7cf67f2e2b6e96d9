"""Repositories over the task database, and the unit of work that owns one transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Engine, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cloudrec.core.apps import App
from cloudrec.core.errors import CloudrecError
from cloudrec.core.ports import (
    AppRepository,
    DeliveryRepository,
    RoomDirectory,
    SecretBox,
    TaskRepository,
)
from cloudrec.core.rooms import LiveStream, RoomEvent, StreamMeta
from cloudrec.db.delivery import SqlDeliveryRepository
from cloudrec.db.models import AppRow, IngestNodeRow, RoomEventRow, StreamSessionRow, utc
from cloudrec.db.tasks import SqlTaskRepository


class SqlAppRepository:
    def __init__(self, session: Session, box: SecretBox) -> None:
        self._s = session
        self._box = box

    def _to_app(self, row: AppRow) -> App:
        return App(
            app_id=row.app_id,
            server_secret=self._box.open(row.server_secret_enc),
            callback_secret=self._box.open(row.callback_secret_enc),
            publish_secret=self._box.open(row.publish_secret_enc),
            created_at=utc(row.created_at),
            callback_url=row.callback_url,
        )

    def add(self, app: App) -> None:
        self._s.add(
            AppRow(
                app_id=app.app_id,
                server_secret_enc=self._box.seal(app.server_secret),
                callback_secret_enc=self._box.seal(app.callback_secret),
                publish_secret_enc=self._box.seal(app.publish_secret),
                callback_url=app.callback_url,
                created_at=app.created_at,
                updated_at=app.created_at,
            )
        )

    def get(self, app_id: int) -> App | None:
        row = self._s.get(AppRow, app_id)
        return None if row is None else self._to_app(row)

    def list(self) -> list[App]:
        rows = self._s.scalars(select(AppRow).order_by(AppRow.app_id))
        return [self._to_app(r) for r in rows]

    def set_secret(self, app_id: int, kind: str, secret: str) -> None:
        row = self._s.get(AppRow, app_id)
        if row is None:
            raise CloudrecError.not_found(f"app {app_id} does not exist")
        setattr(row, f"{kind}_secret_enc", self._box.seal(secret))
        row.updated_at = datetime.now(UTC)

    def set_callback_url(self, app_id: int, url: str | None) -> None:
        row = self._s.get(AppRow, app_id)
        if row is None:
            raise CloudrecError.not_found(f"app {app_id} does not exist")
        row.callback_url = url
        row.updated_at = datetime.now(UTC)


def _live_key(app_id: int, room_id: str, stream_id: str) -> str:
    return f"{app_id}/{room_id}/{stream_id}"


class SqlRoomDirectory:
    def __init__(self, session: Session) -> None:
        self._s = session

    def open(self, stream: LiveStream) -> None:
        m = stream.meta
        row = StreamSessionRow(
            app_id=stream.app_id,
            room_id=stream.room_id,
            stream_id=stream.stream_id,
            user_id=stream.user_id,
            live_key=_live_key(stream.app_id, stream.room_id, stream.stream_id),
            video_codec=m.video_codec,
            audio_codec=m.audio_codec,
            width=m.width,
            height=m.height,
            fps=m.fps,
            audio_rate=m.audio_rate,
            audio_channels=m.audio_channels,
            video_bitrate_kbps=m.video_bitrate_kbps,
            audio_bitrate_kbps=m.audio_bitrate_kbps,
            encoder=m.encoder,
            pull_url=stream.pull_url,
            source=stream.source,
            node=stream.node or None,
            started_at=stream.started_at,
        )
        try:
            self._s.add(row)
            self._s.flush()
        except IntegrityError as exc:
            raise CloudrecError.conflict(
                f"stream {stream.stream_id!r} is already live in room {stream.room_id!r}",
                reason="stream_live",
            ) from exc

    def close(
        self,
        app_id: int,
        room_id: str,
        stream_id: str,
        at: datetime,
        reason: str,
        node: str | None = None,
    ) -> bool:
        query = update(StreamSessionRow).where(
            StreamSessionRow.live_key == _live_key(app_id, room_id, stream_id)
        )
        if node is not None:
            query = query.where(_held_by(node))
        result = self._s.execute(query.values(live_key=None, ended_at=at, end_reason=reason))
        return bool(getattr(result, "rowcount", 0))

    def close_all(self, source: str, node: str, at: datetime, reason: str) -> int:
        result = self._s.execute(
            update(StreamSessionRow)
            .where(
                StreamSessionRow.live_key.is_not(None),
                StreamSessionRow.source == source,
                or_(_held_by(node), StreamSessionRow.node.is_(None)),
            )
            .values(live_key=None, ended_at=at, end_reason=reason)
        )
        return int(getattr(result, "rowcount", 0))

    def beat(self, node: str, at: datetime) -> None:
        seen = update(IngestNodeRow).where(IngestNodeRow.name == node).values(seen_at=at)
        if not getattr(self._s.execute(seen), "rowcount", 0):
            self._s.add(IngestNodeRow(name=node, seen_at=at))
            self._s.flush()

    def lost(self, source: str, before: datetime, alive: str) -> list[LiveStream]:
        rows = self._s.scalars(
            select(StreamSessionRow)
            .join(IngestNodeRow, IngestNodeRow.name == StreamSessionRow.node)
            .where(
                StreamSessionRow.live_key.is_not(None),
                StreamSessionRow.source == source,
                IngestNodeRow.seen_at < before,
                IngestNodeRow.name != alive,
            )
        )
        return [_to_live(r) for r in rows]

    def live_keys(self, source: str, node: str) -> set[tuple[int, str, str]]:
        rows = self._s.execute(
            select(StreamSessionRow.app_id, StreamSessionRow.room_id, StreamSessionRow.stream_id)
            .where(StreamSessionRow.live_key.is_not(None), StreamSessionRow.source == source)
            .where(_held_by(node))
        )
        return {(int(a), str(r), str(s)) for a, r, s in rows}

    def is_live(self, app_id: int, room_id: str, stream_id: str) -> bool:
        key = _live_key(app_id, room_id, stream_id)
        found = self._s.scalar(select(StreamSessionRow.id).where(StreamSessionRow.live_key == key))
        return found is not None

    def live(self, app_id: int, room_id: str | None = None) -> list[LiveStream]:
        q = select(StreamSessionRow).where(
            StreamSessionRow.app_id == app_id, StreamSessionRow.live_key.is_not(None)
        )
        if room_id is not None:
            q = q.where(StreamSessionRow.room_id == room_id)
        rows = self._s.scalars(q.order_by(StreamSessionRow.room_id, StreamSessionRow.started_at))
        return [_to_live(r) for r in rows]

    def live_by_url(self, source: str, pull_url: str) -> LiveStream | None:
        row = self._s.scalars(
            select(StreamSessionRow).where(
                StreamSessionRow.live_key.is_not(None),
                StreamSessionRow.source == source,
                StreamSessionRow.pull_url == pull_url,
            )
        ).first()
        return None if row is None else _to_live(row)

    def update_meta(self, app_id: int, room_id: str, stream_id: str, meta: StreamMeta) -> None:
        self._s.execute(
            update(StreamSessionRow)
            .where(StreamSessionRow.live_key == _live_key(app_id, room_id, stream_id))
            .values(**{k: v for k, v in vars(meta).items() if v is not None})
        )

    def add_event(self, event: RoomEvent) -> None:
        self._s.add(RoomEventRow(**vars(event)))


def _held_by(node: str) -> ColumnElement[bool]:
    if not node:
        return StreamSessionRow.node.is_(None)
    return StreamSessionRow.node == node


def _to_live(r: StreamSessionRow) -> LiveStream:
    return LiveStream(
        app_id=r.app_id,
        room_id=r.room_id,
        stream_id=r.stream_id,
        user_id=r.user_id,
        meta=StreamMeta(
            video_codec=r.video_codec,
            audio_codec=r.audio_codec,
            width=r.width,
            height=r.height,
            fps=r.fps,
            audio_rate=r.audio_rate,
            audio_channels=r.audio_channels,
            video_bitrate_kbps=r.video_bitrate_kbps,
            audio_bitrate_kbps=r.audio_bitrate_kbps,
            encoder=r.encoder,
        ),
        started_at=utc(r.started_at),
        pull_url=r.pull_url,
        source=r.source,
        node=r.node or "",
    )


class SqlUnitOfWork:
    """One session and transaction; leaving without ``commit`` rolls back."""

    apps: AppRepository
    rooms: RoomDirectory
    tasks: TaskRepository
    delivery: DeliveryRepository
    session: Session

    def __init__(self, sessions: sessionmaker[Session], box: SecretBox) -> None:
        self._sessions = sessions
        self._box = box

    def __enter__(self) -> SqlUnitOfWork:
        self.session = self._sessions()
        self.apps = SqlAppRepository(self.session, self._box)
        self.rooms = SqlRoomDirectory(self.session)
        self.tasks = SqlTaskRepository(self.session, self._box)
        self.delivery = SqlDeliveryRepository(self.session)
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.rollback()
        self.session.close()

    def commit(self) -> None:
        self.session.commit()


def uow_factory(engine: Engine, box: SecretBox) -> Callable[[], SqlUnitOfWork]:
    sessions = sessionmaker(engine, expire_on_commit=False)
    return lambda: SqlUnitOfWork(sessions, box)
