"""The Agora Cloud Recording dialect over HTTP, as an Agora client would drive it: a real
``cloudrec serve``, two users publishing from Debian's ffmpeg, the S3 server on loopback;
acquire → start → query → stop with the files downloaded from the bucket and probed, and
every example request of Agora's documents replayed as written but for the host and ids
(``update``'s example unsubscribes, which is not built: code 2 says so)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import av
import pytest

from tests.agora import Agora
from tests.s3server import FaultyS3
from tests.service import Service, ffmpeg_publish

APP = 20260
ROOM = "httpClient463224"  # the documents' channel
USERS = ("123", "456")  # the documents' subscribed UIDs
RECORDER = "527841"  # the documents' recorder UID
SPEC_DIR = next(
    p / "spec" / "agora"
    for p in (Path(__file__).resolve().parents[3] / "shared", Path("/work/shared"))
    if (p / "spec").is_dir()
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    s3 = FaultyS3().start()
    for bucket in ("agorabucket", "xxxxx"):  # ours, and the documents' examples'
        s3.client().create_bucket(Bucket=bucket)
    data_dir = tmp_path_factory.mktemp("agora")
    svc = Service(data_dir, env={"CLOUDREC_STORAGE_ENDPOINT_OVERRIDE": s3.url})
    svc.app = svc.create_app(APP)
    svc.start()
    pubs = [
        ffmpeg_publish(svc.publish_url(APP, ROOM, f"cam{u}", "--uid", u), 240, freq=400 + 300 * i)
        for i, u in enumerate(USERS)
    ]
    try:
        assert len(svc.wait_streams(svc.app, ROOM, 2)) == 2
        yield svc, s3, Agora(svc.http, APP, svc.app["server_secret"])
    finally:
        for p in pubs:
            p.kill()
            p.wait()
        assert svc.stop() == 0
        s3.stop()


def storage(bucket: str = "agorabucket") -> dict[str, Any]:
    return {
        "vendor": 11,
        "region": 0,
        "bucket": bucket,
        "accessKey": "AGORA-AK",
        "secretKey": "AGORA-SK",
        "fileNamePrefix": ["rec", "day1"],
        "extensionParams": {"endpoint": "s3.example.invalid"},
    }


def keys(s3: FaultyS3, bucket: str, prefix: str) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return [o["Key"] for o in listed]


def download(s3: FaultyS3, bucket: str, key: str, into: Path) -> Path:
    path = into / key.rsplit("/", 1)[-1]
    path.write_bytes(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    return path


def probe(path: Path) -> tuple[set[str], tuple[int, int], float]:
    """(stream kinds, picture size, seconds of video decoded at 25 fps) of a file."""
    with av.open(str(path)) as c:
        kinds = {s.type for s in c.streams}
        v = c.streams.video[0]
        size = (v.codec_context.width, v.codec_context.height)
        frames = sum(1 for _ in c.decode(video=0))
    return kinds, size, frames / 25


def test_two_users_recorded_individually_land_in_the_bucket_as_the_file_list_says(world, tmp_path):
    _, s3, agora = world
    rid = agora.acquire(ROOM, RECORDER)
    body = {
        "cname": ROOM,
        "uid": RECORDER,
        "clientRequest": {
            "recordingConfig": {
                "channelType": 0,
                "streamTypes": 2,
                "streamMode": "standard",
                "maxIdleTime": 30,
                "subscribeAudioUids": list(USERS),
                "subscribeVideoUids": list(USERS),
                "subscribeUidGroup": 0,
            },
            "recordingFileConfig": {"avFileType": ["hls", "mp4"]},
            "storageConfig": storage(),
        },
    }
    sid = agora.start(rid, "individual", body)
    assert re.fullmatch(r"[0-9a-f]{32}", sid)
    during = agora.wait_query(
        rid, sid, "individual", lambda s: s["status"] == 5 and len(s["fileList"]) == 4
    )
    assert during["fileListMode"] == "json" and during["sliceStartTime"] > 1.7e12
    for f in during["fileList"]:
        assert set(f) == {
            "fileName",
            "trackType",
            "uid",
            "mixedAllUser",
            "isPlayable",
            "sliceStartTime",
        }
        assert f["trackType"] == "audio_and_video" and f["mixedAllUser"] is False
        assert f["fileName"].startswith("rec/day1/") and f["sliceStartTime"] > 1.7e9
    assert sorted(f["uid"] for f in during["fileList"]) == ["123", "123", "456", "456"]
    time.sleep(4)
    r = agora.stop(rid, sid, "individual", ROOM, RECORDER)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["cname"], answer["uid"], answer["resourceId"], answer["sid"]) == (
        ROOM,
        RECORDER,
        rid,
        sid,
    )
    server = answer["serverResponse"]
    assert server["uploadingStatus"] == "uploaded" and server["fileListMode"] == "json"
    listed = {f["fileName"]: f for f in server["fileList"]}
    stored = keys(s3, "agorabucket", f"rec/day1/{sid}_")  # the tests run in any order
    assert set(listed) == {k for k in stored if k.endswith((".m3u8", ".mp4"))}
    assert all(f["isPlayable"] for f in listed.values())
    for name in listed:
        if name.endswith(".mp4"):
            kinds, size, seconds = probe(download(s3, "agorabucket", name, tmp_path))
            assert kinds == {"video", "audio"} and size == (320, 240), name
            assert seconds > 3.5, (name, seconds)
    # The HLS playlists play from the bucket's objects: every segment they name is there.
    hls = tmp_path / "hls"
    hls.mkdir()
    for key in stored:
        download(s3, "agorabucket", key, hls)
    for name in (n for n in listed if n.endswith(".m3u8")):
        kinds, size, seconds = probe(hls / name.rsplit("/", 1)[-1])
        assert kinds == {"video", "audio"} and size == (320, 240) and seconds > 3.5, name
    gone = agora.query(rid, sid, "individual")
    assert (gone.status_code, gone.json()) == (
        404,
        {"code": 404, "reason": "failed to find worker"},
    )


def _all(frame: Any, points: list[tuple[int, int]], colour: tuple[int, int, int]) -> bool:
    """Every point of ``frame`` (RGB) within 60 of ``colour`` on each channel."""
    return all(
        max(abs(int(v) - c) for v, c in zip(frame[y, x], colour, strict=True)) < 60
        for x, y in points
    )


def test_a_custom_mix_layout_changes_live_with_update_layout_as_the_pixels_show(world, tmp_path):
    _, s3, agora = world
    rid = agora.acquire(ROOM, "1001")
    region = {"uid": "123", "x_axis": 0, "y_axis": 0, "width": 0.5, "height": 1}
    body = {
        "cname": ROOM,
        "uid": "1001",
        "clientRequest": {
            "recordingConfig": {
                "streamTypes": 2,
                "subscribeAudioUids": ["123"],
                "subscribeVideoUids": ["123"],
                "transcodingConfig": {
                    "width": 640,
                    "height": 360,
                    "fps": 15,
                    "bitrate": 800,
                    "mixedVideoLayout": 3,
                    "backgroundColor": "#0000FF",
                    "layoutConfig": [region],
                },
            },
            "recordingFileConfig": {"avFileType": ["hls", "mp4"]},
            "storageConfig": {**storage(), "fileNamePrefix": ["mixrec"]},
        },
    }
    sid = agora.start(rid, "mix", body)
    agora.wait_query(rid, sid, "mix", lambda s: s["status"] == 5 and len(s["fileList"]) == 2)
    time.sleep(3)
    layout = {
        "mixedVideoLayout": 3,
        "backgroundColor": "#FF0000",
        "layoutConfig": [{**region, "x_axis": 0.5}],
    }
    path = f"resourceid/{rid}/sid/{sid}/mode/mix/updateLayout"
    answer = agora.ok("POST", path, {"cname": ROOM, "uid": "1001", "clientRequest": layout})
    assert answer == {"cname": ROOM, "uid": "1001", "resourceId": rid, "sid": sid}
    time.sleep(3)
    r = agora.stop(rid, sid, "mix", ROOM, "1001")
    assert r.status_code == 200, r.text
    server = r.json()["serverResponse"]
    assert server["uploadingStatus"] == "uploaded" and server["fileListMode"] == "json"
    listed = {f["fileName"]: f for f in server["fileList"]}
    assert all(f["uid"] == "0" and f["mixedAllUser"] for f in listed.values())
    stored = keys(s3, "agorabucket", f"mixrec/{sid}_")
    assert set(listed) == {k for k in stored if k.endswith((".m3u8", ".mp4"))}
    [mp4] = [n for n in listed if n.endswith(".mp4")]
    with av.open(str(download(s3, "agorabucket", mp4, tmp_path))) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.width, v.codec_context.height) == (640, 360)
        assert (a.codec_context.sample_rate, a.codec_context.channels) == (48000, 2)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    left = [(x, y) for x in (20, 160, 300) for y in (30, 180, 330)]
    right = [(x + 320, y) for x, y in left]
    blue, red = (0, 0, 255), (255, 0, 0)
    # Before the update: user 123 on the left, the blue background on the right; after it:
    # the red background on the left, the user on the right.
    before = [i for i, f in enumerate(frames) if _all(f, right, blue) and not _all(f, left, blue)]
    after = [i for i, f in enumerate(frames) if _all(f, left, red) and not _all(f, right, red)]
    assert before and after and max(before) < min(after), (len(frames), before[-3:], after[:3])
    assert len(before) > 15 * 2 and len(after) > 15 * 2


def test_a_vertical_mix_gives_the_large_window_to_max_resolution_uid(world, tmp_path):
    """layout.md: "If ... the specified user does not join the channel, the Large region
    shows the background color"; updateLayout then names a user who publishes."""
    _, s3, agora = world
    rid = agora.acquire(ROOM, "1004")
    vertical = {"mixedVideoLayout": 2, "backgroundColor": "#FF0000"}
    body = {
        "cname": ROOM,
        "uid": "1004",
        "clientRequest": {
            "recordingConfig": {
                "transcodingConfig": {
                    "width": 640,
                    "height": 360,
                    **vertical,
                    "maxResolutionUid": "999",
                },
            },
            "recordingFileConfig": {"avFileType": ["hls", "mp4"]},
            "storageConfig": {**storage(), "fileNamePrefix": ["vertical"]},
        },
    }
    sid = agora.start(rid, "mix", body)
    agora.wait_query(rid, sid, "mix", lambda s: s["status"] == 5 and len(s["fileList"]) == 2)
    time.sleep(3)
    layout = {**vertical, "maxResolutionUid": "123"}
    path = f"resourceid/{rid}/sid/{sid}/mode/mix/updateLayout"
    agora.ok("POST", path, {"cname": ROOM, "uid": "1004", "clientRequest": layout})
    time.sleep(3)
    r = agora.stop(rid, sid, "mix", ROOM, "1004")
    assert r.status_code == 200, r.text
    [mp4] = [
        f["fileName"] for f in r.json()["serverResponse"]["fileList"] if ".mp4" in f["fileName"]
    ]
    with av.open(str(download(s3, "agorabucket", mp4, tmp_path))) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    large = [(x, y) for x in (100, 280, 460) for y in (60, 180, 300)]  # left of the small column
    red = (255, 0, 0)
    empty = [i for i, f in enumerate(frames) if _all(f, large, red)]
    # User 123's test picture has one red bar of its seven: a few points may fall on it.
    shown = [i for i, f in enumerate(frames) if sum(_all(f, [p], red) for p in large) <= 3]
    assert len(empty) > 30 and len(shown) > 30, (len(frames), len(empty), len(shown))
    assert max(empty) < min(shown)


def test_screenshots_only_write_jpgs_of_the_subscribed_user(world, tmp_path):
    _, s3, agora = world
    rid = agora.acquire(ROOM, "1002")
    body = {
        "cname": ROOM,
        "uid": "1002",
        "clientRequest": {
            "recordingConfig": {"streamTypes": 1, "subscribeVideoUids": ["456"]},
            "snapshotConfig": {"captureInterval": 5, "fileType": ["jpg"]},
            "storageConfig": {**storage(), "fileNamePrefix": ["shots"]},
        },
    }
    sid = agora.start(rid, "individual", body)
    during = agora.wait_query(rid, sid, "individual", lambda s: s["status"] == 5)
    assert set(during) == {"status", "sliceStartTime"}  # no fileList with screenshots
    time.sleep(7)
    r = agora.stop(rid, sid, "individual", ROOM, "1002")
    assert r.status_code == 200, r.text
    assert r.json()["serverResponse"] == {"uploadingStatus": "uploaded"}
    shots = keys(s3, "agorabucket", f"shots/{sid}_")
    assert len(shots) >= 2 and all(k.endswith(".jpg") and "_456_" in k for k in shots), shots
    with av.open(str(download(s3, "agorabucket", shots[0], tmp_path))) as c:
        frame = next(c.decode(video=0))
    assert (frame.width, frame.height) == (320, 240)


def test_update_moves_the_recording_from_one_user_to_another(world, tmp_path):
    _, s3, agora = world
    rid = agora.acquire(ROOM, "1003")

    def lists(user: str) -> dict[str, Any]:
        return {"subscribeAudioUids": [user], "subscribeVideoUids": [user]}

    body = {
        "cname": ROOM,
        "uid": "1003",
        "clientRequest": {
            "recordingConfig": {"streamTypes": 2, "streamMode": "standard", **lists("123")},
            "recordingFileConfig": {"avFileType": ["hls", "mp4"]},
            "storageConfig": {**storage(), "fileNamePrefix": ["moved"]},
        },
    }
    sid = agora.start(rid, "individual", body)
    agora.wait_query(rid, sid, "individual", lambda s: len(s["fileList"]) == 2)
    time.sleep(3)
    updated_at = time.time()
    subscribe = {
        "audioUidList": {"subscribeAudioUids": ["456"]},
        "videoUidList": {"subscribeVideoUids": ["456"]},
    }
    path = f"resourceid/{rid}/sid/{sid}/mode/individual/update"
    update = {"cname": ROOM, "uid": "1003", "clientRequest": {"streamSubscribe": subscribe}}
    assert agora.ok("POST", path, update) == {
        "cname": ROOM,
        "uid": "1003",
        "resourceId": rid,
        "sid": sid,
    }
    agora.wait_query(rid, sid, "individual", lambda s: len(s["fileList"]) == 4)
    time.sleep(3)
    r = agora.stop(rid, sid, "individual", ROOM, "1003")
    assert r.status_code == 200, r.text
    server = r.json()["serverResponse"]
    assert server["uploadingStatus"] == "uploaded"
    mp4s = {f["uid"]: f for f in server["fileList"] if f["fileName"].endswith(".mp4")}
    assert set(mp4s) == {"123", "456"}
    assert mp4s["456"]["sliceStartTime"] >= int(updated_at) - 1
    seconds = {}
    for user, f in mp4s.items():
        _, _, seconds[user] = probe(download(s3, "agorabucket", f["fileName"], tmp_path))
    # 123's file ends at the update (about 3 s after its first picture), 456's begins there.
    assert 2 < seconds["123"] < 9 and 2 < seconds["456"] < 9, seconds
    ended = mp4s["123"]["sliceStartTime"] + seconds["123"]
    assert abs(ended - mp4s["456"]["sliceStartTime"]) < 2, (ended, mp4s)


# -- the documents' own examples -----------------------------------------------------------


def curl_bodies(name: str) -> list[dict[str, Any]]:
    """The JSON of each ``--data '…'`` of a document's curl examples."""
    text = (SPEC_DIR / name).read_text(encoding="utf-8")
    return [json.loads(m) for m in re.findall(r"--data '(\{.*?\})'\n", text, re.S)]


def json_bodies(name: str) -> list[dict[str, Any]]:
    """The request bodies (```json blocks holding a cname) of a guide, in order."""
    text = (SPEC_DIR / name).read_text(encoding="utf-8")
    bodies = []
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        try:
            body = json.loads(block)
        except json.JSONDecodeError:
            continue  # a URL, or a fragment with "......"
        if isinstance(body, dict) and "cname" in body:
            bodies.append(body)
    return bodies


def _strings(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def check_answer(endpoint: str, answer: dict[str, Any]) -> None:
    """The 200 answer's shape, as the endpoint's document lists its fields."""
    fields = {
        "acquire": {"cname", "uid", "resourceId"},
        "start": {"cname", "uid", "resourceId", "sid"},
        "updateLayout": {"cname", "uid", "resourceId", "sid"},
        "query": {"cname", "uid", "resourceId", "sid", "serverResponse"},
        "stop": {"cname", "uid", "resourceId", "sid", "serverResponse"},
    }[endpoint]
    assert set(answer) == fields, answer
    assert all(_strings(answer[f]) for f in fields - {"serverResponse"}), answer
    server = answer.get("serverResponse")
    if endpoint == "query":
        assert server["status"] in (0, 1, 2, 3, 4, 5, 6, 7, 8, 20)
    if endpoint == "stop":
        assert server["uploadingStatus"] in ("uploaded", "backuped", "unknown")
    if server is not None and "fileListMode" in server:
        if server["fileListMode"] == "string":
            assert isinstance(server["fileList"], str)
        else:
            assert server["fileListMode"] == "json"
            for f in server["fileList"]:
                assert f["trackType"] in ("audio", "video", "audio_and_video")
                assert _strings(f["fileName"]) and _strings(f["uid"])
                assert isinstance(f["mixedAllUser"], bool) and isinstance(f["isPlayable"], bool)
                assert isinstance(f["sliceStartTime"], int)


def replay(
    agora: Agora,
    acquire: dict[str, Any],
    start: dict[str, Any],
    stop: dict[str, Any],
    mode: str,
    layout: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """One session of examples: acquire, start, query once it records, updateLayout (when
    given), stop."""
    answers = {"acquire": agora.ok("POST", "acquire", acquire)}
    rid = answers["acquire"]["resourceId"]
    answers["start"] = agora.ok("POST", f"resourceid/{rid}/mode/{mode}/start", start)
    sid = answers["start"]["sid"]
    agora.wait_query(rid, sid, mode, lambda s: s["status"] == 5 and s.get("fileList"))
    answers["query"] = agora.ok("GET", f"resourceid/{rid}/sid/{sid}/mode/{mode}/query")
    if layout is not None:
        path = f"resourceid/{rid}/sid/{sid}/mode/{mode}/updateLayout"
        answers["updateLayout"] = agora.ok("POST", path, layout)
    time.sleep(2)
    answers["stop"] = agora.ok("POST", f"resourceid/{rid}/sid/{sid}/mode/{mode}/stop", stop)
    for endpoint, answer in answers.items():
        check_answer(endpoint, answer)
        assert (answer["cname"], answer["uid"]) == (start["cname"], start["uid"])
    return answers


def test_the_rest_api_references_examples_get_the_documented_answers(world):
    _, s3, agora = world
    [acquire] = curl_bodies("acquire.mdx")
    [start] = curl_bodies("start.mdx")
    [stop] = curl_bodies("stop.mdx")
    assert acquire["cname"] == start["cname"] == "<your_channel_name>"  # the ids we replace
    acquire["cname"] = start["cname"] = ROOM
    answers = replay(agora, acquire, start, stop, "individual")
    # start.mdx subscribes UIDs 123 and 456 with streamMode "default": an audio file and a
    # video file of each, in the example's bucket under its prefix.
    server = answers["stop"]["serverResponse"]
    assert server["uploadingStatus"] == "uploaded"
    tracks = sorted((f["uid"], f["trackType"]) for f in server["fileList"])
    assert tracks == [("123", "audio"), ("123", "video"), ("456", "audio"), ("456", "video")]
    sid = answers["stop"]["sid"]  # the guides' examples write under the same prefix
    stored = keys(s3, "xxxxx", f"directory1/directory2/{sid}_")
    assert {f["fileName"] for f in server["fileList"]} == {k for k in stored if k.endswith(".m3u8")}


def test_the_individual_and_composite_guides_examples_get_the_documented_answers(world):
    _, _, agora = world
    acquire, start, stop = json_bodies("individual-mode.md")
    # As written, the guide's cname is a URL: not a channel name cloudrec can record.
    r = agora.request("POST", "acquire", acquire)
    assert (r.status_code, r.json()) == (400, {"code": 401, "reason": "invalid_channel_name"})
    acquire["cname"] = ROOM
    answers = replay(agora, acquire, start, stop, "individual")
    assert answers["stop"]["serverResponse"]["uploadingStatus"] == "uploaded"
    acquire, start, stop = json_bodies("composite-mode.md")
    [layout] = curl_bodies("update-layout.mdx")  # the mode of its URL is mix
    answers = replay(agora, acquire, start, stop, "mix", layout)
    # A mix of HLS only: fileList is the M3U8's name; the one file of every user.
    for endpoint in ("query", "stop"):
        server = answers[endpoint]["serverResponse"]
        assert server["fileListMode"] == "string", server
        assert server["fileList"].startswith("directory1/directory2/")
        assert server["fileList"].endswith(".m3u8")


def test_the_update_example_is_refused_for_its_unsubscribe_list_not_built_yet(world):
    _, _, agora = world
    [body] = curl_bodies("update.mdx")
    rid = agora.acquire(body["cname"], body["uid"])
    start = {
        "cname": body["cname"],
        "uid": body["uid"],
        "clientRequest": {"storageConfig": storage()},
    }
    sid = agora.start(rid, "individual", start)
    agora.wait_query(rid, sid, "individual", lambda s: s["status"] == 5)
    r = agora.request("POST", f"resourceid/{rid}/sid/{sid}/mode/individual/update", body)
    assert r.status_code == 400 and r.json()["code"] == 2, r.text
    assert "unsubscribeVideoUids is not built" in r.json()["reason"]
    stop = agora.request(
        "POST",
        f"resourceid/{rid}/sid/{sid}/mode/individual/stop",
        {"cname": body["cname"], "uid": body["uid"], "clientRequest": {}},
    )
    assert stop.status_code == 200, stop.text
