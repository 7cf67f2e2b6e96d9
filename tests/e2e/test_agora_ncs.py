"""Agora's notifications (NCS) end to end, as an Agora customer meets them: the app's
callback URL set with ``cloudrec app set-callback-url`` (Agora's console setting), a real
``cloudrec serve``, a user publishing from ffmpeg, the S3 server on loopback as the
recording's ``storageConfig`` (vendor 11, its endpoint), and a real HTTP server on loopback
receiving the callbacks of an acquire → start → stop: their event types in ``sequence``
order, their envelope and payload fields, and both signatures checked as
ncs-signature-verification-python.mdx does."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.agora import Agora, ncs_signatures_verify
from tests.receiver import Receiver
from tests.s3server import FaultyS3
from tests.service import Service, cli, ffmpeg_publish

APP = 20261
ROOM = "ncsroom"
USER = "123"
RECORDER = "527841"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    s3 = FaultyS3().start()
    s3.client().create_bucket(Bucket="ncsbucket")
    receiver = Receiver()
    data_dir = tmp_path_factory.mktemp("agora-ncs")
    svc = Service(
        data_dir,
        env={
            "CLOUDREC_ALLOW_PRIVATE_TARGETS": "1",  # the S3 server and receiver: loopback
            "CLOUDREC_UPLOAD_ATTEMPTS": "2",
            "CLOUDREC_UPLOAD_BACKOFF_S": "0.2",
            "CLOUDREC_BACKUP_RETRY_S": "1",
            "CLOUDREC_STORAGE_TIMEOUT_S": "1",
        },
    )
    svc.app = svc.create_app(APP)
    out = cli(
        data_dir, "app", "set-callback-url", "--app-id", str(APP), "--url", receiver.url, "--json"
    ).stdout
    assert json.loads(out)["callback_url"] == receiver.url
    svc.start()
    pub = ffmpeg_publish(svc.publish_url(APP, ROOM, "cam", "--uid", USER), 240)
    try:
        assert len(svc.wait_streams(svc.app, ROOM, 1)) == 1
        yield svc, s3, receiver, Agora(svc.http, APP, svc.app["server_secret"])
    finally:
        pub.kill()
        pub.wait()
        assert svc.stop() == 0
        receiver.stop()
        s3.stop()


def storage(s3: FaultyS3) -> dict[str, Any]:
    return {
        "vendor": 11,
        "region": 0,
        "bucket": "ncsbucket",
        "accessKey": "AGORA-AK",
        "secretKey": "AGORA-SK",
        "fileNamePrefix": ["ncs"],
        "extensionParams": {"endpoint": s3.url},
    }


def record(agora: Agora, s3: FaultyS3, seconds: float) -> tuple[str, str, dict[str, Any]]:
    rid = agora.acquire(ROOM, RECORDER)
    body = {
        "cname": ROOM,
        "uid": RECORDER,
        "clientRequest": {
            "recordingConfig": {"streamTypes": 2, "streamMode": "standard", "maxIdleTime": 30},
            "recordingFileConfig": {"avFileType": ["hls", "mp4"]},
            "storageConfig": storage(s3),
        },
    }
    sid = agora.start(rid, "individual", body)
    agora.wait_query(rid, sid, "individual", lambda s: s["status"] == 5)
    time.sleep(seconds)
    r = agora.stop(rid, sid, "individual", ROOM, RECORDER)
    assert r.status_code == 200, r.text
    return rid, sid, r.json()["serverResponse"]


def notifications(receiver: Receiver, sid: str, last: int, timeout_s: float = 60) -> list[Any]:
    """(headers, raw body, body) of the recording's notifications in ``sequence`` order, once
    one of type ``last`` has arrived."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = [(h, raw, json.loads(raw)) for h, raw in list(receiver.received)]
        mine = [g for g in got if g[2].get("sid") == sid]
        if any(b["eventType"] == last for _, _, b in mine):
            time.sleep(1.0)  # anything sent after it, out of order, arrives too
            got = [(h, raw, json.loads(raw)) for h, raw in list(receiver.received)]
            mine = [g for g in got if g[2].get("sid") == sid]
            return sorted(mine, key=lambda g: g[2]["payload"]["sequence"])
        assert time.monotonic() < deadline, [b["eventType"] for _, _, b in mine]
        time.sleep(0.2)


def test_a_recording_tells_the_apps_ncs_url_it_started_left_uploaded_and_exited(world):
    svc, s3, receiver, agora = world
    _, sid, server = record(agora, s3, 4)
    assert server["uploadingStatus"] == "uploaded"
    got = notifications(receiver, sid, last=11)
    types = [b["eventType"] for _, _, b in got]
    assert types == [40, 41, 31, 11]
    assert [b["payload"]["sequence"] for _, _, b in got] == [0, 1, 2, 3]
    names = [b["payload"]["details"]["msgName"] for _, _, b in got]
    assert names == ["recorder_started", "recorder_leave", "uploaded", "session_exit"]
    for headers, raw, b in got:
        assert ncs_signatures_verify(svc.app["callback_secret"], raw, headers), headers
        assert not ncs_signatures_verify(svc.app["server_secret"], raw, headers)
        assert headers["Content-Type"] == "application/json"
        assert list(b) == ["noticeId", "productId", "eventType", "notifyMs", "sid", "payload"]
        assert b["productId"] == 3 and b["sid"] == sid
        p = b["payload"]
        assert (p["cname"], p["uid"], p["sid"]) == (ROOM, RECORDER, sid)
        assert p["serviceType"] == {40: 1, 41: 1, 31: 2, 11: 0}[b["eventType"]]
        assert b["notifyMs"] >= p["sendts"] > 1.7e12
    sendts = [b["payload"]["sendts"] for _, _, b in got]
    assert sendts == sorted(sendts)
    assert len({b["noticeId"] for _, _, b in got}) == 4
    started, left, uploaded, exited = (b["payload"]["details"] for _, _, b in got)
    assert started == {"msgName": "recorder_started", "status": 0}
    assert left == {"msgName": "recorder_leave", "leaveCode": 2}  # a stop: LEAVE_CODE_SIG
    assert exited == {"msgName": "session_exit", "exitStatus": 0}
    assert uploaded["status"] == 0
    # The same files as the stop's answer, their start in milliseconds here.
    listed = {f["fileName"]: f for f in server["fileList"]}
    assert {f["fileName"] for f in uploaded["fileList"]} == set(listed)
    assert len(listed) == 2
    for f in uploaded["fileList"]:
        assert f["fileName"].startswith("ncs/") and f["fileName"].endswith((".m3u8", ".mp4"))
        assert (f["uid"], f["trackType"], f["mixedAllUser"], f["isPlayable"]) == (
            USER,
            "audio_and_video",
            False,
            True,
        )
        assert f["sliceStartTime"] // 1000 == listed[f["fileName"]]["sliceStartTime"]
        assert s3.client().head_object(Bucket="ncsbucket", Key=f["fileName"])


def test_a_bucket_that_fails_ends_with_a_warning_per_file_then_backuped(world):
    svc, s3, receiver, agora = world
    s3.mode = "500"
    try:
        _, sid, _ = record(agora, s3, 3)
        got = notifications(receiver, sid, last=11)
    finally:
        s3.mode = "ok"
    types = [b["eventType"] for _, _, b in got]
    # A file may go to the backup store before or after the recorder's leave is stored.
    assert types[0] == 40 and types[-2:] == [32, 11], types
    assert sorted(types[1:-2]) == [2] * (len(types) - 4) + [41], types
    warnings = [b["payload"]["details"] for _, _, b in got if b["eventType"] == 2]
    assert warnings and all(
        w == {"msgName": "cloud_recording_warning", "module": 1, "warnCode": 32} for w in warnings
    ), warnings
    backuped = got[-2][2]["payload"]["details"]
    assert backuped["status"] == 0 and len(backuped["fileList"]) == 2
    assert got[-1][2]["payload"]["details"]["exitStatus"] == 0
    for headers, raw, _ in got:
        assert ncs_signatures_verify(svc.app["callback_secret"], raw, headers)
