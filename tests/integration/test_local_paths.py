"""Where a task may write and what media it may open, on a real filesystem (issue 11)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloudrec.config import load_settings
from cloudrec.core.errors import CloudrecError
from cloudrec.core.tasks import Desired, FileFormat, Media, RecordingSpec, Task, TaskState
from cloudrec.media.probe import probe_stream
from cloudrec.media.recorder.pipeline import out_dir
from cloudrec.media.recorder.remux import RecorderPlan, StreamRecorder
from cloudrec.storage.backup import LocalBackupStore
from tests.media import write_flv


def _task(prefix: tuple[str, ...]) -> Task:
    return Task(
        task_id="task1",
        app_id=7,
        spec=RecordingSpec(room_id="r", output_prefix=prefix),
        state=TaskState.RECORDING,
        desired=Desired.RUNNING,
        created_at=datetime.now(UTC),
    )


def test_the_worker_refuses_an_output_directory_a_symlink_leads_out_of_the_spool(tmp_path):
    """Bug (issue 11): the worker joined the output prefix to the task's spool directory
    without checking where the result led."""
    settings = load_settings({"data_dir": tmp_path / "data"}, env={})
    home = settings.spool_dir / "7" / "task1"
    assert out_dir(settings, _task(("rec", "day1"))) == home / "rec" / "day1"
    outside = tmp_path / "outside"
    outside.mkdir()
    home.mkdir(parents=True)
    (home / "rec").symlink_to(outside)  # planted: every part is a plain name
    with pytest.raises(CloudrecError, match="outside the task's spool"):
        out_dir(settings, _task(("rec", "day1")))


def test_a_backup_stays_inside_the_backup_directory(tmp_path):
    """Bug (issue 11): the backup store joined the object key to its directory unchecked, so
    a key with '..' parts moved a recording out of it."""
    spool_file = tmp_path / "spool" / "a.mp4"
    spool_file.parent.mkdir()
    spool_file.write_bytes(b"media")
    store = LocalBackupStore(tmp_path / "backup")
    with pytest.raises(CloudrecError, match="would leave"):
        store.keep(7, "task1", "../../../escaped.mp4", str(spool_file))
    assert spool_file.read_bytes() == b"media"  # left where it was
    assert not (tmp_path / "escaped.mp4").exists()
    with pytest.raises(CloudrecError):
        store.keep(7, "..", "a.mp4", str(spool_file))
    kept = store.keep(7, "task1", "rec/a.mp4", str(spool_file))
    assert Path(kept) == tmp_path / "backup" / "7" / "task1" / "rec" / "a.mp4"


@pytest.fixture(scope="module")
def local_flv(tmp_path_factory) -> Path:
    return write_flv(tmp_path_factory.mktemp("media") / "local.flv", duration_s=1.0)


@pytest.mark.parametrize("scheme", ["", "file:", "concat:"])
def test_a_probe_opens_no_local_file(local_flv, scheme):
    """Bug (issue 11): media was opened with no protocol whitelist: a pull URL could name
    file:, concat: or http: and FFmpeg read it."""
    with pytest.raises(CloudrecError, match="cannot probe"):
        probe_stream(f"{scheme}{local_flv}", timeout_s=5)


def test_a_recorder_opens_no_local_file(local_flv, tmp_path):
    """issue 11: the recorder's input is whitelisted too (rtmp over tcp only)."""
    plan = RecorderPlan(
        url=f"file:{local_flv}",
        media=Media.AUDIO_VIDEO,
        formats=(FileFormat.MP4,),
        directory=tmp_path / "out",
        name=lambda fmt, track, begin_ms: f"x.{fmt.extension}",
        start_at=time.time() - 60,
    )
    opened: list[Path] = []

    def on_open(fmt, path, track, begin_ms, size):  # type: ignore[no-untyped-def]
        opened.append(path)
        return len(opened)

    recorder = StreamRecorder(plan, on_open, lambda file_id, fields: None, name="rec-test")
    recorder.start()
    recorder.join(timeout=30)
    assert not recorder.is_alive()
    assert recorder.ended_by == "error" and "Invalid argument" in (recorder.error or "")
    assert opened == []
