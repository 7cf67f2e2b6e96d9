"""A task that records a whole room (what the ZEGO dialect asks for): every stream gets its
own file, including a stream that joins after the task started."""

from __future__ import annotations

import time

from cloudrec.bootstrap import bootstrap
from cloudrec.config import load_settings
from cloudrec.core.tasks import FileFormat, RecordingSpec
from tests.service import Service, ffmpeg_publish

APP = 77


def test_every_stream_of_the_room_is_recorded_including_one_that_joins_later(data_dir):
    svc = Service(data_dir)
    svc.app = svc.create_app(APP)
    svc.start()
    pubs = [
        ffmpeg_publish(
            svc.publish_url(APP, "hall", f"s{i}", "--uid", f"u{i}"), 30, freq=300 + 200 * i
        )
        for i in (1, 2)
    ]
    # The service's own container, as a dialect would use it (same database and settings).
    settings = load_settings({"data_dir": data_dir, "rtmp_port": svc.rtmp_port}, env={})
    container = bootstrap(settings)
    try:
        assert len(svc.wait_streams(svc.app, "hall", 2)) == 2
        spec = RecordingSpec(room_id="hall", formats=(FileFormat.MP4,), output_prefix=("r",))
        task = container.tasks.start(APP, spec, storage=None)
        time.sleep(3)
        pubs.append(ffmpeg_publish(svc.publish_url(APP, "hall", "s3", "--uid", "u3"), 30))
        assert len(svc.wait_streams(svc.app, "hall", 3)) == 3
        time.sleep(4)
        container.tasks.stop(APP, task.task_id)
        deadline = time.monotonic() + 20
        while not container.tasks.get(APP, task.task_id).state.terminal:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        done = container.tasks.get(APP, task.task_id)
        files = container.tasks.files(task.task_id)
    finally:
        for p in pubs:
            p.kill()
            p.wait()
        container.engine.dispose()
        assert svc.stop() == 0
    assert done.state.value == "completed"
    assert sorted(f.user_id for f in files) == ["u1", "u2", "u3"]
    by_user = {f.user_id: f for f in files}
    assert by_user["u3"].begin_ms - by_user["u1"].begin_ms >= 2500
    for f in files:
        assert f.status.value == "recorded" and f.size > 0 and f.duration_ms >= 3000
        assert f.name.startswith("r/") and f.name.endswith(".mp4")
