"""SQLAlchemy 2 tables of the task database.  Portable: SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Index, Integer, String, Text, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes: every stored time is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class AppRow(Base):
    __tablename__ = "apps"

    app_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    # Fernet tokens (see cloudrec.secretbox); never the clear secret.
    server_secret_enc: Mapped[str] = mapped_column(Text)
    callback_secret_enc: Mapped[str] = mapped_column(Text)
    publish_secret_enc: Mapped[str] = mapped_column(Text)
    # Where the callbacks go of tasks whose requests name no URL (App.callback_url).
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StreamSessionRow(Base):
    """One publish of one stream, from publish to unpublish; live while ``ended_at`` is null."""

    __tablename__ = "stream_sessions"
    # A worker reads its room's live streams every tick: by room, not by the app's history.
    __table_args__ = (Index("ix_stream_sessions_room", "app_id", "room_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app_id: Mapped[int] = mapped_column(BigInteger, index=True)
    room_id: Mapped[str] = mapped_column(String(128))
    stream_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    # "app/room/stream" while live, NULL once ended: unique, so one stream id is live once
    # per room (NULLs are distinct in SQLite and PostgreSQL alike).
    live_key: Mapped[str | None] = mapped_column(String(400), unique=True, nullable=True)
    video_codec: Mapped[str | None] = mapped_column(String(32))
    audio_codec: Mapped[str | None] = mapped_column(String(32))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    fps: Mapped[float | None] = mapped_column(Float)
    audio_rate: Mapped[int | None] = mapped_column(Integer)
    audio_channels: Mapped[int | None] = mapped_column(Integer)
    video_bitrate_kbps: Mapped[float | None] = mapped_column(Float)
    audio_bitrate_kbps: Mapped[float | None] = mapped_column(Float)
    encoder: Mapped[str | None] = mapped_column(String(200))
    pull_url: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32))
    # The ingest node holding the publisher (embedded ingest); NULL: a media server's stream,
    # or a row from before there were several.
    node: Mapped[str | None] = mapped_column(String(200), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(200))


class IngestNodeRow(Base):
    """An ingest node's last beat: its live streams are its own while it beats."""

    __tablename__ = "ingest_nodes"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RoomEventRow(Base):
    __tablename__ = "room_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    app_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    room_id: Mapped[str | None] = mapped_column(String(128))
    stream_id: Mapped[str | None] = mapped_column(String(128))
    user_id: Mapped[str | None] = mapped_column(String(128))
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ResourceRow(Base):
    """A JoCloud ``resid``: valid for a while, starts one recording."""

    __tablename__ = "resources"

    resource_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    app_id: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class TaskRow(Base):
    __tablename__ = "tasks"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    app_id: Mapped[int] = mapped_column(BigInteger, index=True)
    room_id: Mapped[str] = mapped_column(String(128))
    spec_json: Mapped[str] = mapped_column(Text)
    # Fernet token of the storage target's JSON (keys included); never in clear.
    storage_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    state: Mapped[str] = mapped_column(String(32), index=True)
    desired: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stop_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(200))
    end_reason: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    resource_id: Mapped[str | None] = mapped_column(String(100))
    # Screenshots of the mix asked for (ZEGO TakeSnapshot): the worker takes one per increment.
    snapshot_requests: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Bumped by every change the task's worker must see (db/tasks.py, WATCHED): the worker
    # reads this (and its room's live set) every tick, the whole row only when it moved.
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Ownership (docs/reliability.md): the attempt is the fencing token of the worker that
    # owns the task; that worker renews ``lease_until`` about every second.  A new attempt
    # starts its files at ``resume_at`` (the last moment the previous one was known alive).
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resume_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the current attempt was started, and the deaths since the task last ran well
    # (restarts are limited by deaths, not by attempts: a worker that gave its task up on
    # SIGTERM did not die).
    attempt_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deaths: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The machine (its ``node_name``) the current attempt runs on, written at its claim.
    node: Mapped[str | None] = mapped_column(String(200))
    # What the recording costs a machine (core/cost.py), asked of the node of every attempt.
    units: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class TaskFileRow(Base):
    __tablename__ = "task_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(32))
    stream_id: Mapped[str | None] = mapped_column(String(128))
    user_id: Mapped[str | None] = mapped_column(String(128))
    track_type: Mapped[int] = mapped_column(Integer)
    begin_ms: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    duration_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    complete: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    backup_path: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    keep_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    custom_begin_ms: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # The machine (its ``node_name``) whose attempt wrote it; NULL before migration 0010.
    node: Mapped[str | None] = mapped_column(String(200))
    # An uploader holds the file until then (a claimed row: one uploader at a time).
    claim_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class UploadAttemptRow(Base):
    """Every try to put a file somewhere: the app's bucket or the backup store."""

    __tablename__ = "upload_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    file_id: Mapped[int] = mapped_column(Integer, index=True)
    target: Mapped[str] = mapped_column(String(16))  # "bucket" or "backup"
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool] = mapped_column(Boolean)
    error_kind: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)


class CallbackRow(Base):
    """A callback to an app's server: one event, delivered with retries."""

    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64), index=True)
    app_id: Mapped[int] = mapped_column(BigInteger)
    url: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claim_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CallbackAttemptRow(Base):
    __tablename__ = "callback_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    callback_id: Mapped[int] = mapped_column(Integer, index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)


class TaskEventRow(Base):
    __tablename__ = "task_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ZegoNonceRow(Base):
    """A ZEGO SignatureNonce seen in a correctly signed request (issue 11, #8).  The primary key
    is the replay check: a second insert of (app_id, nonce) loses it.  Rows older than the
    nonce window are purged."""

    __tablename__ = "zego_nonces"

    app_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
