"""Files of recordings without storage stay on this server for ``kept_retention_s`` after the
recording ended, then are removed and marked ``expired`` (real database, real spool files)."""

from __future__ import annotations

from datetime import timedelta

from cloudrec.bootstrap import bootstrap
from cloudrec.config import load_settings
from cloudrec.core.rooms import StreamMeta
from cloudrec.core.tasks import (
    FileFormat,
    FileStatus,
    RecordedFile,
    RecordingSpec,
    StorageTarget,
    TaskState,
    TrackType,
)
from tests.fakes import FakeClock, FakeExecutor

APP = 77


def test_kept_files_are_removed_after_the_retention_and_no_others(database_url, data_dir):
    clock = FakeClock()
    settings = load_settings(
        {"data_dir": data_dir, "database_url": database_url, "kept_retention_s": 3600}, env={}
    )
    c = bootstrap(settings, clock=clock, executor=FakeExecutor())
    try:
        c.apps.create(APP)
        target = c.rooms.understand(APP, "r1", "s1")
        c.rooms.published(target, StreamMeta(), "rtmp://127.0.0.1/x", "embedded", "")

        def task_with_file(name: str, storage: StorageTarget | None, state: TaskState):
            task = c.tasks.start(APP, RecordingSpec(room_id="r1"), storage)
            path = data_dir / f"{name}.mp4"
            path.write_bytes(b"media")
            f = RecordedFile(
                task.task_id,
                f"{name}.mp4",
                str(path),
                FileFormat.MP4,
                FileStatus.RECORDED,
                "s1",
                "u1",
                TrackType.AUDIO_VIDEO,
                1,
            )
            with c.uow() as uow:
                uow.tasks.add_file(f)
                if state is TaskState.RECORDING:
                    uow.tasks.update(task.task_id, state=state)
                else:  # the recording is over (an uploading task has ended recording too)
                    uow.tasks.update(task.task_id, state=state, ended_at=clock())
                uow.commit()
            return task.task_id, path

        kept, kept_path = task_with_file("kept", None, TaskState.COMPLETED)
        bucket = StorageTarget("s3", "http://127.0.0.1:9", "b", "AK", "SK")
        waiting, waiting_path = task_with_file("waiting", bucket, TaskState.UPLOADING)
        running, running_path = task_with_file("running", None, TaskState.RECORDING)
        clock.advance(3599)
        assert c.delivery.expire_kept() == 0 and kept_path.exists()
        clock.advance(2)
        assert c.delivery.expire_kept() == 1
        assert not kept_path.exists() and waiting_path.exists() and running_path.exists()
        [f] = c.tasks.files(kept)
        assert f.status is FileStatus.EXPIRED
        assert ("file_expired", "kept.mp4") in [(k, d) for k, _, d in c.tasks.events(kept)]
        assert [x.status for x in c.tasks.files(waiting)] == [FileStatus.RECORDED]
        assert [x.status for x in c.tasks.files(running)] == [FileStatus.RECORDED]
        assert c.delivery.expire_kept() == 0  # once
        clock.advance(timedelta(days=30).total_seconds())
        assert c.delivery.expire_kept() == 0  # a running recording's files are never due
    finally:
        c.engine.dispose()
