"""ZEGO single-stream options end to end: RealtimeUploadFragment (an HLS recording's segments
reach the bucket while it records, callback event 102 says where the playlist will be, and at
the end the playlist and every segment are there and play as one recording of the window
asked) and CustomBeginTimestamp read from the stream's SEI."""

from __future__ import annotations

import itertools
import subprocess
import time

import av
import numpy as np
import pytest

from tests.e2e.test_zego_api import download, start_body, wait_status, zego_service
from tests.receiver import Receiver
from tests.s3server import FaultyS3
from tests.service import ffmpeg_publish

APP = 1234567892
ROOM = "zlive"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("zlive")
    # ZEGO events 4 and 6 after 2 s, not 30.
    with zego_service(data_dir, APP, CLOUDREC_ROOM_NOTICE_S="2") as world:
        svc = world[0]
        pub = ffmpeg_publish(
            svc.publish_url(APP, ROOM, "live1", "--uid", "u1"), 120, size="320x240"
        )
        assert len(svc.wait_streams(svc.app, ROOM, 1)) == 1
        yield world
        pub.kill()
        pub.wait()


def keys(s3: FaultyS3) -> list[str]:
    listing = s3.client().list_objects_v2(Bucket="zegobucket", Prefix="live/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_segments_are_uploaded_while_recording_and_the_playlist_at_the_end(world, tmp_path):
    svc, s3, zego = world
    receiver = Receiver()
    body = start_body()
    body["RoomId"] = ROOM
    body["RecordOutputParams"] = {
        "OutputFileFormat": "hls",
        "OutputFolder": "live/",
        "FragmentSeconds": 2,
        "RealtimeUploadFragment": True,
        "ShortFragmentPath": True,
        "CallbackUrl": receiver.url,
    }
    requested = time.monotonic()  # the recording starts at the keyframe nearest this
    answer = zego.call("StartRecord", body)
    assert answer["Code"] == 0, answer
    task_id = answer["Data"]["TaskId"]
    try:
        wait_status(zego, task_id, 2, timeout_s=20)
    except AssertionError:  # say why, from cloudrec's own task API
        raise AssertionError(svc.get(f"/v1/apps/{APP}/tasks/{task_id}", svc.app).text) from None
    started = time.monotonic()
    # While it records: segments arrive, the playlist does not yet.
    deadline = started + 15
    while len([k for k in keys(s3) if k.endswith(".ts")]) < 2:
        assert time.monotonic() < deadline, keys(s3)
        time.sleep(0.3)
    during = keys(s3)
    assert not [k for k in during if k.endswith(".m3u8")], during
    assert zego.call("DescribeRecordStatus", {"TaskId": task_id})["Data"]["Status"] == 2
    time.sleep(max(0.0, 8 - (time.monotonic() - started)))
    assert zego.call("StopRecord", {"TaskId": task_id})["Code"] == 0
    window = time.monotonic() - requested
    [f] = wait_status(zego, task_id, 3)["RecordFiles"]  # the playlist stands for its segments
    assert f["OutputFileFormat"] == "hls" and f["FileId"].endswith(".m3u8"), f
    assert f["Status"] == 3
    # Event 102 named the playlist, before the end.
    bodies = receiver.bodies()
    [named] = [b for b in bodies if b["event_type"] == 102]
    assert named["detail"] == {
        "stream_id": "live1",
        "file_id": f["FileId"],
        "file_url": f["FileUrl"],
        "media_track_type": 3,
    }
    assert bodies.index(named) < next(i for i, b in enumerate(bodies) if b["event_type"] == 5)
    receiver.stop()
    # Everything is in the bucket: download it all and play the playlist.
    for key in keys(s3):
        obj = s3.client().get_object(Bucket="zegobucket", Key=key)["Body"].read()
        (tmp_path / key.rsplit("/", 1)[-1]).write_bytes(obj)
    playlist = (tmp_path / f["FileId"]).read_text()
    listed = [line for line in playlist.splitlines() if line and not line.startswith("#")]
    assert "#EXT-X-ENDLIST" in playlist
    assert sorted(listed) == sorted(k.rsplit("/", 1)[-1] for k in keys(s3) if k.endswith(".ts"))
    with av.open(str(tmp_path / f["FileId"])) as c:
        first = last = None
        for frame in c.decode(video=0):
            first = frame.time if first is None else first
            last = frame.time
    assert first is not None and last is not None
    assert abs((last - first) - window) < 1.5, (last - first, window)


def sei_publish(url: str, millis: int) -> subprocess.Popen[bytes]:
    """testsrc2 + a tone whose keyframes carry an SEI (user data unregistered, any UUID) with
    the publisher's own Unix time in ms, as 13 ASCII digits (h264_metadata puts it on every
    keyframe)."""
    return subprocess.Popen(
        [
            *("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re"),
            *("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=60"),
            *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=60"),
            *("-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p"),
            "-bsf:v",
            f"h264_metadata=sei_user_data=086f3693-b7b3-4f2c-9653-21492feee5b8+{millis}",
            *("-c:a", "aac", "-f", "flv", url),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_custom_begin_timestamp_comes_from_the_streams_sei(world):
    svc, _, zego = world
    millis = 1795000000123
    pub = sei_publish(svc.publish_url(APP, ROOM, "seicam", "--uid", "u2"), millis)
    try:
        assert len(svc.wait_streams(svc.app, ROOM, 2)) == 2
        body = start_body(RecordStreamList=[{"StreamId": "seicam"}, {"StreamId": "live1"}])
        body["RoomId"] = ROOM
        task_id = zego.record(body, 3)
    finally:
        pub.kill()
        pub.wait()
    files = wait_status(zego, task_id, 3)["RecordFiles"]
    by_stream = {f["StreamId"]: f["CustomBeginTimestamp"] for f in files}
    assert by_stream == {"seicam": millis, "live1": 0}, files


@pytest.mark.parametrize(
    ("option", "fill"), [("ResumeWithoutInterruption", False), ("FillBlank", True)]
)
def test_a_stream_that_leaves_and_comes_back_is_one_file(world, tmp_path, option, fill):
    """ResumeWithoutInterruption: one file, the absence left out; FillBlank: one file that
    keeps the absence, its sound silent there."""
    svc, s3, zego = world
    room = f"zback{int(fill)}"

    def publish() -> subprocess.Popen[bytes]:
        url = svc.publish_url(APP, room, "back1", "--uid", "ub")
        return ffmpeg_publish(url, 60, size="320x240")

    pub = publish()
    try:
        assert len(svc.wait_streams(svc.app, room, 1)) == 1
        body = start_body(RecordStreamList=[{"StreamId": "back1"}], **{option: True})
        body["RoomId"] = room
        answer = zego.call("StartRecord", body)
        assert answer["Code"] == 0, answer
        task_id = answer["Data"]["TaskId"]
        wait_status(zego, task_id, 2, timeout_s=20)
        time.sleep(4)
        pub.kill()
        pub.wait()
        assert svc.wait_streams(svc.app, room, 0) == []
        time.sleep(2)
        pub = publish()
        assert len(svc.wait_streams(svc.app, room, 1)) == 1
        time.sleep(4)
        assert zego.call("StopRecord", {"TaskId": task_id})["Code"] == 0
    finally:
        pub.kill()
        pub.wait()
    files = wait_status(zego, task_id, 3)["RecordFiles"]
    assert [f["StreamId"] for f in files] == ["back1"], files
    path = download(s3, files[0], tmp_path)
    with av.open(str(path)) as c:
        times = [float(f.time) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        sound = [(float(f.time), float(np.abs(f.to_ndarray()).max())) for f in c.decode(audio=0)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    widest = max(gaps)
    i = gaps.index(widest)
    assert abs(files[0]["Duration"] / 1000 - times[-1]) < 1.0, (files[0], times[-1])
    if not fill:
        assert widest < 0.5, widest  # the timeline closes over the absence
        assert 6 < times[-1] < 11, times[-1]
    else:
        assert widest > 1.5, widest  # the absence is kept ...
        quiet = [a for t, a in sound if times[i] + 0.3 < t < times[i + 1] - 0.3]
        loud = [a for t, a in sound if t < times[i] - 0.3]
        assert quiet and max(quiet) < 0.01 and max(loud) > 0.05  # ... with silent sound


def test_zego_notices_a_missing_stream_an_empty_room_and_the_upload(world):
    """Callback event 6 for a RecordStreamList stream that is not there, 4 for a room left
    without streams (again every notice period), then 5 (stopped), 7 (uploading), 1."""
    svc, _, zego = world
    room = "znotice"
    receiver = Receiver()
    pub = ffmpeg_publish(svc.publish_url(APP, room, "here", "--uid", "un"), 60, size="160x120")
    try:
        assert len(svc.wait_streams(svc.app, room, 1)) == 1
        body = start_body(RecordStreamList=[{"StreamId": "here"}, {"StreamId": "nothere"}])
        body["RoomId"] = room
        body["RecordOutputParams"]["CallbackUrl"] = receiver.url
        answer = zego.call("StartRecord", body)
        assert answer["Code"] == 0, answer
        task_id = answer["Data"]["TaskId"]
        wait_status(zego, task_id, 2, timeout_s=20)
        time.sleep(2.5)
    finally:
        pub.kill()
        pub.wait()
    deadline = time.monotonic() + 20
    while [b["event_type"] for b in receiver.bodies()].count(4) < 2:
        assert time.monotonic() < deadline, receiver.bodies()
        time.sleep(0.2)
    assert zego.call("StopRecord", {"TaskId": task_id})["Code"] == 0
    wait_status(zego, task_id, 3)
    deadline = time.monotonic() + 20
    while 1 not in [b["event_type"] for b in receiver.bodies()]:
        assert time.monotonic() < deadline, receiver.bodies()
        time.sleep(0.2)
    # Callbacks are sent concurrently: their order is their sequence number.
    bodies = sorted(receiver.bodies(), key=lambda b: b["sequence"])
    receiver.stop()
    assert [b["sequence"] for b in bodies] == list(range(len(bodies)))
    kinds = [b["event_type"] for b in bodies]
    [missing] = [b for b in bodies if b["event_type"] == 6]
    assert missing["detail"] == {"stream_id": "nothere"}
    assert all(b["task_id"] == task_id for b in bodies)
    after = kinds[kinds.index(5) :]
    assert after == [5, 7, 1], kinds
