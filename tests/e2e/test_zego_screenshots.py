"""ZEGO screenshots as a ZEGO client drives them: OutputFileFormat jpg in RecordMode 1 (a JPG of
each stream every SnapshotInterval) and 2 (a JPG of the mix), and TakeSnapshot on a running
mix; each JPG lands in the bucket, is announced by its own callback (event 1), and shows the
publisher's colour at the stream's (or the mix's) size."""

from __future__ import annotations

import io
import itertools
import subprocess
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.e2e.test_record_mixed import colour_at
from tests.e2e.test_zego_api import (
    check_response,
    mix_body,
    start_body,
    wait_status,
    zego_service,
)
from tests.receiver import Receiver
from tests.s3server import FaultyS3
from tests.service import lavfi_publish

APP = 1234567890
ROOM = "zshots"
# user -> (colour, picture size): pixels and size tell the streams apart.
PUBLISHERS = {"red": ("red", (320, 240)), "blue": ("blue", (256, 144))}


def solid_publish(url: str, colour: str, size: tuple[int, int]) -> subprocess.Popen[bytes]:
    w, h = size
    return lavfi_publish(
        url,
        f"color=c={colour}:size={w}x{h}:rate=25:duration=180",
        "sine=frequency=500:sample_rate=48000:duration=180",
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with zego_service(tmp_path_factory.mktemp("zshots"), APP) as world:
        svc = world[0]
        pubs = [
            solid_publish(svc.publish_url(APP, ROOM, f"cam-{user}", "--uid", user), colour, size)
            for user, (colour, size) in PUBLISHERS.items()
        ]
        assert len(svc.wait_streams(svc.app, ROOM, 2)) == 2
        yield world
        for p in pubs:
            p.kill()
            p.wait()


def jpg_body(receiver: Receiver, **inp: Any) -> dict[str, Any]:
    body = start_body(**inp)
    body["RoomId"] = ROOM
    body["RecordOutputParams"] = {
        "OutputFileFormat": "jpg",
        "OutputFolder": "record/",
        "SnapshotInterval": 5,
        "CallbackUrl": receiver.url,
    }
    return body


def screenshot_callbacks(receiver: Receiver, count: int, timeout_s: float = 40) -> list[dict]:
    """The event 1 callbacks, once ``count`` have come."""
    deadline = time.monotonic() + timeout_s
    while True:
        ones = [b for b in receiver.bodies() if b["event_type"] == 1]
        if len(ones) >= count:
            return sorted(ones, key=lambda b: b["sequence"])
        assert time.monotonic() < deadline, receiver.bodies()
        time.sleep(0.2)


def objects(s3: FaultyS3, task_id: str) -> dict[str, bytes]:
    client = s3.client()
    listed = client.list_objects_v2(Bucket="zegobucket", Prefix=f"record/{task_id}_")
    return {
        o["Key"]: client.get_object(Bucket="zegobucket", Key=o["Key"])["Body"].read()
        for o in listed.get("Contents", [])
    }


def picture(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG"
        return np.asarray(im.convert("RGB"))


def stamp_ms(file_id: str) -> int:
    """The UTC stamp (yyyyMMddHHmmssSSS) of a file name, in Unix ms."""
    from datetime import UTC, datetime

    s = file_id.rsplit("_", 1)[1].split(".")[0]
    at = datetime.strptime(s[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    return int(at.timestamp()) * 1000 + int(s[14:])


def test_jpg_in_record_mode_1_takes_each_stream_every_interval_and_calls_back_per_picture(world):
    _svc, s3, zego = world
    receiver = Receiver()
    started = time.time()
    answer = zego.call("StartRecord", jpg_body(receiver))
    assert answer["Code"] == 0, answer
    task_id = answer["Data"]["TaskId"]
    # Moments 0, 5 and 10 s after the start, per stream; stopped before the one at 15 s.
    time.sleep(started + 12.5 - time.time())
    assert zego.call("StopRecord", {"TaskId": task_id})["Code"] == 0
    data = wait_status(zego, task_id, 3)
    # video-screenshot.mdx: no file list for a screenshot task.
    assert "RecordFiles" not in data
    check_response(
        "DescribeRecordStatus", {"Code": 0, "Message": "succeed", "RequestId": "r", "Data": data}
    )
    ones = screenshot_callbacks(receiver, 6)
    time.sleep(1)  # no more
    stored = objects(s3, task_id)
    receiver.stop()
    assert len(stored) == len(ones) == 6, (sorted(stored), ones)
    assert sorted(b["event_type"] for b in receiver.bodies()) == [1] * 6 + [5, 7]
    by_user: dict[str, list[int]] = {}
    for b in sorted(ones, key=lambda b: b["detail"]["file_info"][0]["begin_timestamp"]):
        [info] = b["detail"]["file_info"]  # one callback per screenshot
        assert b["detail"]["upload_status"] == 1
        user = info["user_id"]
        colour, size = PUBLISHERS[user]
        assert info["stream_id"] == f"cam-{user}"
        assert info["file_id"].startswith(f"{task_id}_{ROOM}_{user}_cam-{user}_V_")
        assert info["file_id"].endswith(".jpg")
        assert (info["output_file_format"], info["media_track_type"], info["status"]) == (
            "jpg",
            2,
            3,
        )
        assert (info["resolution_width"], info["resolution_height"]) == size
        assert info["file_url"].endswith("/zegobucket/record/" + info["file_id"])
        assert stamp_ms(info["file_id"]) == info["begin_timestamp"]
        data = stored["record/" + info["file_id"]]
        assert info["file_size"] == len(data)
        rgb = picture(data)
        assert rgb.shape[:2] == (size[1], size[0])
        assert colour_at(rgb, size[0] // 2, size[1] // 2) == colour
        by_user.setdefault(user, []).append(info["begin_timestamp"])
    # Both streams were live before the task: both from the moment it was asked for.
    assert sorted(by_user) == ["blue", "red"] and by_user["red"] == by_user["blue"]
    for moments in by_user.values():
        assert [b - a for a, b in itertools.pairwise(moments)] == [5000, 5000]


def shot_mix_body(receiver: Receiver, fmt: str) -> dict[str, Any]:
    """A grid mix (MixMode 2) of red and blue at 640x360: two columns."""
    body = mix_body(ROOM, MixMode=2)
    body["RecordOutputParams"].update(OutputFileFormat=fmt, CallbackUrl=receiver.url)
    if fmt == "jpg":
        body["RecordOutputParams"]["SnapshotInterval"] = 5
    return body


def assert_mix_picture(data: bytes) -> None:
    """640x360, red and blue side by side (in the order they joined)."""
    rgb = picture(data)
    assert rgb.shape[:2] == (360, 640)
    assert {colour_at(rgb, 160, 180), colour_at(rgb, 480, 180)} == {"red", "blue"}


def test_jpg_in_record_mode_2_takes_the_mix_every_interval(world):
    _svc, s3, zego = world
    receiver = Receiver()
    answer = zego.call("StartRecord", shot_mix_body(receiver, "jpg"))
    assert answer["Code"] == 0, answer
    task_id = answer["Data"]["TaskId"]
    # The first screenshot once both inputs show; stop half an interval after another one.
    [first] = screenshot_callbacks(receiver, 1)
    first_s = first["detail"]["file_info"][0]["begin_timestamp"] / 1000
    shots = 2 + max(0, int((time.time() - first_s - 7.5) // 5) + 1)
    time.sleep(first_s + 5 * (shots - 1) + 2.5 - time.time())
    assert zego.call("StopRecord", {"TaskId": task_id})["Code"] == 0
    data = wait_status(zego, task_id, 3)
    assert "RecordFiles" not in data and data["RecordMode"] == 2
    ones = screenshot_callbacks(receiver, shots)
    time.sleep(1)  # no more
    stored = objects(s3, task_id)
    receiver.stop()
    assert len(stored) == len(ones) == shots, (sorted(stored), ones)  # and no video file
    moments = []
    for b in ones:
        [info] = b["detail"]["file_info"]
        # OutputFileRule 1 for a mix: TaskId_RoomId_MixOutputStreamId_Type_UTC.
        assert info["file_id"].startswith(f"{task_id}_{ROOM}_mixout_V_")
        assert info["stream_id"] == info["user_id"] == "mixout"
        assert (info["resolution_width"], info["resolution_height"]) == (640, 360)
        assert_mix_picture(stored["record/" + info["file_id"]])
        moments.append(info["begin_timestamp"])
    # Each the first composed frame after its moment (the worker looks 4 times a second).
    moments.sort()
    assert all(4000 < b - a < 6000 for a, b in itertools.pairwise(moments)), moments


def test_take_snapshot_writes_the_next_picture_of_a_running_mix(world):
    _svc, s3, zego = world
    receiver = Receiver()
    answer = zego.call("StartRecord", shot_mix_body(receiver, "mp4"))
    assert answer["Code"] == 0, answer
    task_id = answer["Data"]["TaskId"]
    wait_status(zego, task_id, 2, timeout_s=15)
    snap = zego.call("TakeSnapshot", {"TaskId": task_id})
    assert snap["Code"] == 0, snap
    check_response("TakeSnapshot", snap)
    [one] = screenshot_callbacks(receiver, 1)
    [info] = one["detail"]["file_info"]
    assert info["file_id"].startswith(f"{task_id}_{ROOM}_mixout_V_")
    assert (info["output_file_format"], info["media_track_type"], info["status"]) == ("jpg", 2, 3)
    stored = objects(s3, task_id)
    assert list(stored) == ["record/" + info["file_id"]]
    assert_mix_picture(stored["record/" + info["file_id"]])
    time.sleep(1)
    assert zego.call("StopRecord", {"TaskId": task_id})["Code"] == 0
    # The recording's files are the mix alone; the screenshot was announced on its own.
    [f] = wait_status(zego, task_id, 3)["RecordFiles"]
    assert f["OutputFileFormat"] == "mp4"
    deadline = time.monotonic() + 20
    while len(screenshot_callbacks(receiver, 1)) < 2:
        assert time.monotonic() < deadline, receiver.bodies()
        time.sleep(0.2)
    final = screenshot_callbacks(receiver, 2)[-1]
    receiver.stop()
    assert [i["file_id"] for i in final["detail"]["file_info"]] == [f["FileId"]]
    ended = zego.call("TakeSnapshot", {"TaskId": task_id})
    assert ended["Code"] == 300001001, ended
    check_response("TakeSnapshot", ended)


def test_take_snapshot_is_refused_for_what_is_no_running_mix(world):
    _svc, _s3, zego = world
    unknown = zego.call("TakeSnapshot", {"TaskId": "NoSuchTask000000"})
    assert unknown["Code"] == 300001000, unknown
    single = zego.call("StartRecord", start_body(MaxIdleTime=5) | {"RoomId": ROOM})
    task_id = single["Data"]["TaskId"]
    refused = zego.call("TakeSnapshot", {"TaskId": task_id})
    assert refused["Code"] == 300000004 and "single streams" in refused["Message"], refused
    missing = zego.call("TakeSnapshot", {})
    assert missing["Code"] == 300000004 and "TaskId" in missing["Message"], missing
    for answer in (unknown, refused, missing):
        check_response("TakeSnapshot", answer)
    assert zego.call("StopRecord", {"TaskId": task_id})["Code"] == 0
    audio_jpg = start_body(StreamType=1) | {"RoomId": ROOM}
    audio_jpg["RecordOutputParams"] = {"OutputFileFormat": "jpg"}
    answer = zego.call("StartRecord", audio_jpg)
    assert answer["Code"] == 300000004 and "StreamType 1" in answer["Message"], answer
    bad = start_body() | {"RoomId": ROOM}
    bad["RecordOutputParams"] = {"OutputFileFormat": "jpg", "SnapshotInterval": 4}
    answer = zego.call("StartRecord", bad)
    assert answer["Code"] == 300000004 and "SnapshotInterval" in answer["Message"], answer
