"""The task database on real SQLite and PostgreSQL: migrations, apps, the room directory."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import inspect, text

from cloudrec.bootstrap import bootstrap
from cloudrec.config import load_settings
from cloudrec.core.errors import CloudrecError
from cloudrec.core.rooms import StreamMeta


@pytest.fixture
def container(database_url, data_dir):
    settings = load_settings({"data_dir": data_dir, "database_url": database_url}, env={})
    c = bootstrap(settings)
    yield c
    c.engine.dispose()


def test_migrations_create_every_table_and_are_idempotent(container):
    from cloudrec.db.engine import upgrade

    upgrade(container.engine)  # a second start changes nothing
    tables = set(inspect(container.engine).get_table_names())
    assert {"apps", "stream_sessions", "room_events", "alembic_version"} <= tables


def test_secrets_are_encrypted_at_rest_and_read_back(container):
    app = container.apps.create(1234)
    with container.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM apps")).mappings().one()
    stored = " ".join(str(v) for v in row.values())
    for secret in (app.server_secret, app.callback_secret, app.publish_secret):
        assert secret not in stored
    assert container.apps.get(1234) == app


def test_a_wrong_secret_key_cannot_read_the_secrets(container, database_url, tmp_path):
    from cryptography.fernet import Fernet

    container.apps.create(5)
    other_dir = tmp_path / "other"
    settings = load_settings(
        {"data_dir": other_dir, "database_url": database_url},
        env={"CLOUDREC_SECRET_KEY": Fernet.generate_key().decode()},
    )
    other = bootstrap(settings)
    with pytest.raises(CloudrecError, match="wrong secret_key"):
        other.apps.get(5)
    other.engine.dispose()


def test_the_directory_keeps_one_live_stream_per_id_and_history(container):
    container.apps.create(7)
    rooms = container.rooms
    t = rooms.understand(7, "room1", "s1?uid=alice")
    meta = StreamMeta(
        video_codec="h264",
        audio_codec="aac",
        width=640,
        height=360,
        fps=30.0,
        audio_rate=48000,
        audio_channels=2,
    )
    rooms.published(t, meta, "rtmp://127.0.0.1:1935/7/room1/s1", "embedded", "127.0.0.1")
    with pytest.raises(CloudrecError) as err:
        rooms.published(t, meta, "rtmp://127.0.0.1:1935/7/room1/s1", "embedded", "127.0.0.1")
    assert err.value.reason == "stream_live"
    [live] = rooms.live(7, "room1")
    assert live.meta == meta and live.user_id == "alice"
    assert live.started_at.tzinfo is not None
    assert rooms.unpublished(t, "publisher left")
    assert rooms.live(7) == []
    rooms.published(t, meta, "rtmp://127.0.0.1:1935/7/room1/s1", "embedded", "127.0.0.1")
    with container.engine.connect() as conn:
        kinds = conn.execute(text("SELECT kind FROM room_events ORDER BY id")).scalars().all()
        sessions = conn.execute(text("SELECT count(*) FROM stream_sessions")).scalar()
    assert kinds == ["published", "unpublished", "published"]
    assert sessions == 2


def test_hook_streams_are_found_by_pull_url_and_get_probed_meta(container):
    container.apps.create(7)
    rooms = container.rooms
    t = rooms.understand(7, "room1", "s1")
    rooms.published(t, StreamMeta(), "rtmp://nginx/live/s1", "hook", "10.0.0.9")
    rooms.update_meta(t, StreamMeta(video_codec="h264", width=320))
    assert rooms.live(7)[0].meta.width == 320
    assert rooms.unpublished_by_url("hook", "rtmp://nginx/live/s1", "publisher left", "")
    assert not rooms.unpublished_by_url("hook", "rtmp://nginx/live/s1", "publisher left", "")


def test_times_round_trip_as_utc(container):
    container.apps.create(8)
    created = container.apps.get(8)
    assert created is not None
    assert created.created_at.tzinfo is not None
    assert abs((datetime.now(UTC) - created.created_at).total_seconds()) < 60
