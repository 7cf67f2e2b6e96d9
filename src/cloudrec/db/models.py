"""SQLAlchemy 2 tables of the task database.  Portable: SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class AppRow(Base):
    __tablename__ = "apps"

    app_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    # Fernet tokens (see cloudrec.secretbox); never the clear secret.
    server_secret_enc: Mapped[str] = mapped_column(Text)
    callback_secret_enc: Mapped[str] = mapped_column(Text)
    publish_secret_enc: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StreamSessionRow(Base):
    """One publish of one stream, from publish to unpublish; live while ``ended_at`` is null."""

    __tablename__ = "stream_sessions"

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
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(200))


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
