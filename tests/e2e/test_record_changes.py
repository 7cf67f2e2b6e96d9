"""A publisher that changes under a single-stream recording, end to end (issue 10, items 11
and 12): ``cloudrec serve``, the JoCloud API over HTTP, a publisher that switches resolution
and then restarts its timestamps without reconnecting, the files fetched from the bucket
and decoded frame by frame as a user's player would."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.e2e.test_record_single import fetched, storage_service, wait_task
from tests.jocloud import JoCloud
from tests.media import decode_file, publish_tags, splice_flv, write_flv
from tests.s3server import FaultyS3

APP = 10034
ROOM = "class1"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("rec")
    s3 = FaultyS3().start()
    s3.client().create_bucket(Bucket="recbucket")
    svc = storage_service(data_dir, s3)
    yield svc, JoCloud(svc.http, APP, svc.app["server_secret"])
    assert svc.stop() == 0
    s3.stop()


def test_a_resolution_switch_and_a_timestamp_restart_leave_parts_that_all_decode(
    world, tmp_path: Path
) -> None:
    """Issue 10 items 11 and 12: a switch to 1280x720 was recorded as broken 640x360 pictures,
    and timestamps starting again from 0 ended the stream's recording while it was live."""
    svc, jo = world
    small = write_flv(tmp_path / "small.flv", duration_s=5.0, size=(640, 360), gop=5)
    large = write_flv(tmp_path / "large.flv", duration_s=5.0, size=(1280, 720), gop=5)
    splice_flv(small, large, tmp_path / "switch.flv")
    # 640x360, then 1280x720, then 640x360 again from an encoder restarted at timestamp 0.
    tags = splice_flv(tmp_path / "switch.flv", small, tmp_path / "all.flv", restart_at_s=0.0)
    url = svc.publish_url(APP, ROOM, "cam-alice", "--uid", "alice")
    publisher = threading.Thread(target=publish_tags, args=(url, tags))
    published_at = time.time()
    publisher.start()
    assert len(svc.wait_streams(svc.app, ROOM, 1)) == 1
    resid, record_id = jo.start(ROOM, "alice", fileformat=["mp4", "flv", "hls"])
    asked_at = time.time()
    publisher.join(60)
    # The publisher is done: what was published from the request on is in the files.
    stop = jo.stop(resid, ROOM, record_id)
    assert stop["code"] == 0, stop
    task = wait_task(svc, record_id, {"completed", "failed"}, timeout_s=60)
    assert task["state"] == "completed", task
    window = max(t.send_at for t in tags if t.type == 9) + 0.04 - (asked_at - published_at)

    for fmt, ext in (("mp4", ".mp4"), ("flv", ".flv"), ("hls", ".m3u8")):
        rows = sorted(
            (f for f in task["files"] if f["name"].endswith(ext)), key=lambda f: f["begin_ms"]
        )
        assert [(f["width"], f["height"]) for f in rows] == [
            (640, 360),
            (1280, 720),
            (640, 360),
        ], fmt
        parts = [decode_file(fetched(svc, task, f)) for f in rows]
        assert [d.errors for d in parts] == [[], [], []], fmt
        assert [d.sizes for d in parts] == [[(640, 360)], [(1280, 720)], [(640, 360)]], fmt
        assert all(d.audio_packets > 50 for d in parts), fmt
        assert sum(d.duration_s for d in parts) == pytest.approx(window, abs=0.6), fmt
