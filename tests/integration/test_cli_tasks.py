"""``cloudrec task list|show|stop`` and ``cloudrec room list`` as a user runs them: the CLI in a
subprocess over the data directory of a service (here: its database, built in the test)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cloudrec.bootstrap import bootstrap
from cloudrec.config import load_settings
from cloudrec.core.rooms import StreamMeta
from cloudrec.core.tasks import (
    FileFormat,
    FileStatus,
    RecordedFile,
    RecordingSpec,
    TaskState,
    TrackType,
)
from tests.fakes import FakeExecutor

APP = 4242


@pytest.fixture
def world(tmp_path):
    data = tmp_path / "data"
    c = bootstrap(load_settings({"data_dir": data}, env={}), executor=FakeExecutor())
    c.apps.create(APP)
    meta = StreamMeta(video_codec="h264", audio_codec="aac", width=640, height=360, fps=25.0)
    target = c.rooms.understand(APP, "class-7", "cam?uid=alice")
    c.rooms.published(target, meta, "rtmp://127.0.0.1:1935/x", "embedded", "")
    task = c.tasks.start(APP, RecordingSpec(room_id="class-7"), None)
    yield c, data, task.task_id
    c.engine.dispose()


def cli(data, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloudrec.cli", *args, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_task_list_shows_the_running_task_and_json_has_it_whole(world):
    _, data, task_id = world
    out = cli(data, "task", "list", "--app-id", str(APP))
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header.split()[:4] == ["TASK", "ROOM", "MODE", "STATE"]
    assert row.split()[:4] == [task_id, "class-7", "single", "initialising"]
    as_json = json.loads(cli(data, "task", "list", "--app-id", str(APP), "--json").stdout)
    assert as_json["total"] == 1 and as_json["tasks"][0]["task_id"] == task_id
    ended = cli(data, "task", "list", "--app-id", str(APP), "--ended")
    assert ended.stdout.splitlines()[1:] == []


def test_room_list_shows_the_live_stream(world):
    _, data, _ = world
    out = cli(data, "room", "list", "--app-id", str(APP))
    assert out.returncode == 0, out.stderr
    row = out.stdout.splitlines()[1].split()
    assert row[:6] == ["class-7", "cam", "alice", "h264/aac", "640x360", "25"]


def test_task_show_and_an_unknown_task(world):
    _, data, task_id = world
    shown = cli(data, "task", "show", "--app-id", str(APP), task_id)
    assert shown.returncode == 0 and f"task {task_id}  room class-7" in shown.stdout
    assert "created" in shown.stdout  # the events table
    missing = cli(data, "task", "show", "--app-id", str(APP), "nope")
    assert missing.returncode == 2 and "recording 'nope' does not exist" in missing.stderr


def test_task_stop_wait_follows_the_task_to_its_end(world):
    c, data, task_id = world
    args = ("task", "stop", "--app-id", str(APP), task_id, "--wait", "--timeout", "60")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudrec.cli", *args, "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    err = ""
    while "files: none yet" not in err:  # the progress line while the task stops
        ch = proc.stderr.read(1)
        assert ch, err
        err += ch
    with c.uow() as uow:  # what the worker and delivery would do
        uow.tasks.add_file(
            RecordedFile(
                task_id,
                "class-7/a.mp4",
                "/spool/a.mp4",
                FileFormat.MP4,
                FileStatus.UPLOADED,
                "cam",
                "alice",
                TrackType.AUDIO_VIDEO,
                1,
                size=1000,
                duration_ms=5000,
            )
        )
        uow.tasks.update(task_id, state=TaskState.COMPLETED, end_reason="stopped")
        uow.commit()
    out, rest = proc.communicate(timeout=60)
    assert proc.returncode == 0, err + rest
    assert "completed; files: 1 uploaded" in rest
    assert "class-7/a.mp4  uploaded  1000   5.0" in out
    again = cli(data, "task", "stop", "--app-id", str(APP), task_id)
    assert again.returncode == 2 and "already stopped" in again.stderr


def test_task_stop_wait_gives_up_at_its_timeout(world):
    _, data, task_id = world
    out = cli(data, "task", "stop", "--app-id", str(APP), task_id, "--wait", "--timeout", "1")
    assert out.returncode == 1 and "still initialising after 1 s" in out.stderr
