"""The task database on real SQLite and PostgreSQL: migrations, apps, the room directory."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import inspect, text

from cloudrec.bootstrap import bootstrap
from cloudrec.config import load_settings
from cloudrec.core.errors import CloudrecError
from cloudrec.core.rooms import StreamMeta
from tests.fakes import FakeExecutor


@pytest.fixture
def container(database_url, data_dir):
    settings = load_settings({"data_dir": data_dir, "database_url": database_url}, env={})
    c = bootstrap(settings)
    yield c
    c.engine.dispose()


def test_migrations_create_every_table_and_are_idempotent(container):
    from cloudrec.db.engine import upgrade
    from cloudrec.db.models import Base

    upgrade(container.engine)  # a second start changes nothing
    found = inspect(container.engine)
    # Every table of the models, with every column, and nothing else (the old test looked
    # for three of the ten tables).
    assert set(found.get_table_names()) == {*Base.metadata.tables, "alembic_version"}
    for name, table in Base.metadata.tables.items():
        columns = {c["name"] for c in found.get_columns(name)}
        assert columns == {c.name for c in table.columns}, name


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


def test_tasks_files_attempts_and_callbacks_round_trip(database_url, data_dir):
    from cloudrec.core.tasks import (
        FileFormat,
        FileStatus,
        RecordedFile,
        RecordingSpec,
        StorageTarget,
        TrackType,
        UploadAttempt,
    )

    settings = load_settings({"data_dir": data_dir, "database_url": database_url}, env={})
    c = bootstrap(settings, executor=FakeExecutor())
    try:
        c.apps.create(9)
        t = c.rooms.understand(9, "room1", "s1")
        c.rooms.published(t, StreamMeta(), "rtmp://x/9/room1/s1", "embedded", "127.0.0.1")
        spec = RecordingSpec(
            room_id="room1", callback_url="http://cb.example/x", mix={"width": 640}
        )
        storage = StorageTarget("s3", "e", "bucket", "AK-SECRET", "SK-SECRET")
        task = c.tasks.start(9, spec, storage)
        assert c.tasks.get(9, task.task_id).spec == spec
        with c.uow() as uow:
            assert uow.tasks.storage(task.task_id) == storage
            file_id = uow.tasks.add_file(
                RecordedFile(
                    task.task_id,
                    "a/b.mp4",
                    "/spool/b.mp4",
                    FileFormat.MP4,
                    FileStatus.RECORDED,
                    "s1",
                    "u1",
                    TrackType.AUDIO_VIDEO,
                    1_700_000_000_000,
                )
            )
            uow.delivery.add_upload_attempt(
                UploadAttempt(file_id, "bucket", c.clock(), False, "timeout", "slow", 1000)
            )
            c.callbacks.enqueue(uow, c.clock(), task, "task_started", [])
            uow.commit()
        due = c.delivery.files_due()
        assert [f.id for f in due] == [file_id]
        assert c.delivery.upload_attempts(file_id)[0].error_kind == "timeout"
        [cb] = c.delivery.callbacks_due()
        assert cb.event == "task_started" and "SECRET" not in cb.body
        with c.engine.connect() as conn:
            stored = " ".join(str(v) for v in conn.execute(text("SELECT * FROM tasks")).one())
        assert "AK-SECRET" not in stored and "SK-SECRET" not in stored
    finally:
        c.engine.dispose()


def test_take_snapshot_counts_the_requests_of_a_running_mix_and_refuses_the_rest(
    database_url, data_dir
):
    from cloudrec.core.tasks import Desired, Media, RecordingSpec, RecordMode, TaskState

    settings = load_settings({"data_dir": data_dir, "database_url": database_url}, env={})
    c = bootstrap(settings, executor=FakeExecutor())
    try:
        c.apps.create(9)
        mixed = RecordingSpec(room_id="room1", mode=RecordMode.MIXED, mix={"width": 640})
        task = c.tasks.start(9, mixed, None, require_live=False)

        def refused(task_id: str) -> CloudrecError:
            with pytest.raises(CloudrecError) as err:
                c.tasks.take_snapshot(9, task_id)
            return err.value

        assert "has not started mixing" in refused(task.task_id).message  # initialising
        with c.uow() as uow:
            uow.tasks.update(task.task_id, state=TaskState.RECORDING)
            uow.commit()
        c.tasks.take_snapshot(9, task.task_id)
        assert c.tasks.take_snapshot(9, task.task_id).snapshot_requests == 2
        c.tasks.pause(9, task.task_id)
        assert "paused" in refused(task.task_id).message
        c.tasks.resume(9, task.task_id)
        c.tasks.stop(9, task.task_id)
        assert refused(task.task_id).reason == "task_ended"
        assert refused("nope").reason == "task_unknown"
        single = c.tasks.start(9, RecordingSpec(room_id="room1"), None, require_live=False)
        assert "single streams" in refused(single.task_id).message
        sound = RecordingSpec(room_id="room1", mode=RecordMode.MIXED, media=Media.AUDIO, mix={})
        audio = c.tasks.start(9, sound, None, require_live=False)
        assert "no picture" in refused(audio.task_id).message
        kinds = [k for k, _, _ in c.tasks.events(task.task_id)]
        assert kinds.count("snapshot_requested") == 2
        assert c.tasks.get(9, single.task_id).desired is Desired.RUNNING
    finally:
        c.engine.dispose()


def test_a_mix_stored_before_the_auto_layout_rename_loads_as_it_recorded(database_url, data_dir):
    """Migration 0013: a mixed task stored by the code before ``zego_layout`` became
    ``auto_layout`` (and the worker keyed ZEGO layouts by stream from the task's dialect, and
    named the mix by ``extra["MixOutputStreamId"]``) loads after the upgrade with the same
    layout, keying and file name; the old rows' ``zego_layout`` key made ``MixSpec.from_json``
    raise, so a mixed task running across the upgrade could not go on."""
    import json

    from cloudrec.core.mixing import MixSpec
    from cloudrec.core.tasks import RecordingSpec, RecordMode
    from cloudrec.db.engine import upgrade

    settings = load_settings({"data_dir": data_dir, "database_url": database_url}, env={})
    c = bootstrap(settings, executor=FakeExecutor())
    try:
        c.apps.create(9)
        ids = {}
        for dialect in ("zego", "jocloud", "zego-views"):
            mix = MixSpec(auto_layout="vertical", main_stream_id="cam-2").to_json()
            vendor = dialect.split("-")[0]
            spec = RecordingSpec(room_id="room1", mode=RecordMode.MIXED, dialect=vendor, mix=mix)
            ids[dialect] = c.tasks.start(9, spec, None, require_live=False).task_id
        single = RecordingSpec(room_id="room1", dialect="zego")  # no mix: left as it is
        ids["single"] = c.tasks.start(9, single, None, require_live=False).task_id
        with c.engine.begin() as conn:  # the rows as the old code wrote them
            for dialect, task_id in ids.items():
                if dialect == "single":
                    continue
                raw = conn.execute(
                    text("SELECT spec_json FROM tasks WHERE task_id = :t"), {"t": task_id}
                ).scalar_one()
                old = json.loads(raw)
                mix = old["mix"]
                layout = mix.pop("auto_layout")
                if dialect != "zego-views":  # rows from before automatic layouts have no key
                    mix["zego_layout"] = layout
                del mix["by_stream"], mix["output_id"]
                if dialect.startswith("zego"):
                    out = "out-1" if dialect == "zego" else "out-2"
                    mix["extra"] = {"MixOutputStreamId": out, "MixMode": 4}
                conn.execute(
                    text("UPDATE tasks SET spec_json = :s WHERE task_id = :t"),
                    {"s": json.dumps(old), "t": task_id},
                )
            conn.execute(text("UPDATE alembic_version SET version_num = '0012'"))
        upgrade(c.engine)
        assert c.tasks.get(9, ids.pop("single")).spec == single
        loaded = {d: MixSpec.from_json(c.tasks.get(9, t).spec.mix or {}) for d, t in ids.items()}
        zego, jocloud, views = loaded["zego"], loaded["jocloud"], loaded["zego-views"]
        assert (views.auto_layout, views.by_stream, views.output_id) == (None, True, "out-2")
        assert (zego.auto_layout, zego.main_stream_id) == ("vertical", "cam-2")
        assert (zego.by_stream, zego.output_id, zego.extra) == (True, "out-1", {"MixMode": 4})
        assert (jocloud.auto_layout, jocloud.by_stream, jocloud.output_id) == (
            "vertical",
            False,
            "mix",
        )
    finally:
        c.engine.dispose()
