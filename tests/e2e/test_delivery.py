"""Delivery end to end: recordings land in the app's bucket (a real S3-protocol server on
loopback), survive a storage that fails (500, 403, hanging), and the app's callback server is
told, with retries; nothing recorded is lost and no secret leaks."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import av
import pytest

from tests.jocloud import JoCloud
from tests.receiver import Receiver
from tests.s3server import FaultyS3
from tests.service import Service, ffmpeg_publish

APP = 10034
ROOM = "deliv"
ACCESS_KEY, SECRET_KEY = "AKID-SECRET-ACCESS-0001", "SK-SECRET-KEY-0002"


def storage(**over):
    cfg = {
        "vender": 2,
        "endpoint": "s3-cn-south-1.qiniucs.com",
        "bucket": "recs",
        "accesskey": ACCESS_KEY,
        "secretkey": SECRET_KEY,
        "fileprefix": ["class1"],
    }
    cfg.update(over)
    return cfg


def make_world(tmp_path, **env):
    s3 = FaultyS3().start()
    s3.client().create_bucket(Bucket="recs")
    receiver = Receiver()
    svc = Service(
        tmp_path,
        env={
            "CLOUDREC_STORAGE_ENDPOINT_OVERRIDE": s3.url,
            "CLOUDREC_ALLOW_PRIVATE_TARGETS": "1",
            "CLOUDREC_UPLOAD_ATTEMPTS": "3",
            "CLOUDREC_UPLOAD_BACKOFF_S": "0.2",
            "CLOUDREC_BACKUP_RETRY_S": "1",
            "CLOUDREC_STORAGE_TIMEOUT_S": "1",
            "CLOUDREC_CALLBACK_BACKOFF_S": "0.5",
            "CLOUDREC_CALLBACK_ATTEMPTS": "30",
            "CLOUDREC_CALLBACK_BACKOFF_MAX_S": "2",
            **env,
        },
    )
    svc.app = svc.create_app(APP)
    svc.start()
    pub = ffmpeg_publish(svc.publish_url(APP, ROOM, "cam", "--uid", "u1"), 300)
    assert len(svc.wait_streams(svc.app, ROOM, 1)) == 1
    jo = JoCloud(svc.http, APP, svc.app["server_secret"])
    return s3, receiver, svc, pub, jo


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    s3, receiver, svc, pub, jo = make_world(tmp_path_factory.mktemp("deliv"))
    yield s3, receiver, svc, jo
    pub.kill()
    pub.wait()
    assert svc.stop() == 0
    receiver.stop()
    s3.stop()


def task_of(svc: Service, record_id: str) -> dict:
    return svc.get(f"/v1/apps/{APP}/tasks/{record_id}", svc.app).json()


def wait_until(svc: Service, record_id: str, check, timeout_s: float = 40) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        task = task_of(svc, record_id)
        if check(task):
            return task
        assert time.monotonic() < deadline, task
        time.sleep(0.2)


def record(jo: JoCloud, seconds: float, callback_url: str | None, **cfg) -> str:
    over = {"storagecfg": storage(**cfg)}
    if callback_url:
        over["callbackurl"] = callback_url
    resid, record_id = jo.start(ROOM, "u1", **over)
    time.sleep(seconds)
    assert jo.stop(resid, ROOM, record_id)["code"] == 0
    return record_id


def object_duration_s(s3: FaultyS3, key: str, tmp: Path) -> float:
    path = tmp / Path(key).name
    path.write_bytes(s3.client().get_object(Bucket="recs", Key=key)["Body"].read())
    with av.open(str(path)) as c:
        frames = [f for f in c.decode(video=0)]
    return len(frames) / 25


def test_a_recording_lands_in_the_bucket_and_the_app_is_told(world, tmp_path):
    s3, receiver, svc, jo = world
    record_id = record(jo, 4, receiver.url)
    task = wait_until(svc, record_id, lambda t: t["state"] == "completed")
    [f] = task["files"]
    assert f["status"] == "uploaded" and f["name"].startswith("class1/")
    assert f["url"] == f"{s3.url}/recs/{f['name']}"
    assert [a["ok"] for a in f["upload_attempts"]] == [True]
    assert abs(object_duration_s(s3, f["name"], tmp_path) - f["duration_ms"] / 1000) < 0.2
    spool = svc.data_dir / "spool" / str(APP) / record_id / f["name"]
    assert not spool.exists()  # deleted only after the confirmed upload
    receiver.wait_for("task_completed")
    assert receiver.events() == ["task_started", "task_stopped", "file_uploaded", "task_completed"]
    uploaded = receiver.wait_for("file_uploaded")
    assert uploaded["product"] == "recordoss" and uploaded["msgtype"] == 2
    ctx = uploaded["context"]
    assert (ctx["appid"], ctx["roomid"], ctx["recordid"], ctx["uid"]) == (
        APP,
        ROOM,
        record_id,
        ["u1"],
    )
    assert ctx["fileaddress"] == f["url"] and ctx["filetype"] == "mp4"
    assert ctx["duration"] == f["duration_ms"] and ctx["starttime"] == f["begin_ms"]
    for headers, body in receiver.received:
        expected = hmac.new(svc.app["callback_secret"].encode(), body, hashlib.sha256)
        assert headers["X-Cloudrec-Signature"] == "sha256=" + expected.hexdigest()
    ids = [b["msgid"] for b in receiver.bodies()]
    assert len(set(ids)) == len(ids)
    receiver.received.clear()


@pytest.mark.parametrize("mode", ["500", "403", "hang"])
def test_storage_down_goes_to_backup_then_is_reuploaded_when_back(world, tmp_path, mode):
    s3, receiver, svc, jo = world
    s3.mode = mode
    try:
        record_id = record(jo, 3, receiver.url)
        # Backed up counts as delivered: the task completes.
        task = wait_until(
            svc,
            record_id,
            lambda t: (
                t["files"] and t["files"][0]["status"] == "backed_up" and t["state"] == "completed"
            ),
        )
        [f] = task["files"]
        failures = [a for a in f["upload_attempts"] if not a["ok"]]
        assert len(failures) >= 3
        kind = {"500": "server_error", "403": "access_denied", "hang": "timeout"}[mode]
        assert {a["error_kind"] for a in failures if a["target"] == "bucket"} == {kind}
        assert any(a["target"] == "backup" and a["ok"] for a in f["upload_attempts"])
        backed = svc.data_dir / "backup" / str(APP) / record_id / f["name"]
        assert backed.exists() and backed.stat().st_size == f["size"]
        receiver.wait_for("file_backed_up")
    finally:
        s3.mode = "ok"
    task = wait_until(svc, record_id, lambda t: t["files"][0]["status"] == "uploaded")
    [f] = task["files"]
    assert not backed.exists()
    assert abs(object_duration_s(s3, f["name"], tmp_path) - f["duration_ms"] / 1000) < 0.2
    receiver.wait_for("file_uploaded")
    receiver.received.clear()


def test_a_callback_receiver_that_is_down_for_a_while_gets_the_event_later(world):
    _s3, receiver, svc, jo = world
    receiver.mode = "500"
    try:
        record_id = record(jo, 2, receiver.url)
        wait_until(svc, record_id, lambda t: t["state"] == "completed")
        time.sleep(1.5)
        assert receiver.received == []
    finally:
        receiver.mode = "ok"
    for event in ("task_started", "task_stopped", "file_uploaded", "task_completed"):
        receiver.wait_for(event, timeout_s=40)
    task = task_of(svc, record_id)
    started = next(c for c in task["callbacks"] if c["event"] == "task_started")
    assert started["status"] == "delivered"
    assert next(a["http_status"] for a in started["attempts"]) == 500
    assert started["attempts"][-1]["http_status"] == 200
    receiver.received.clear()


def test_a_blackholed_callback_url_costs_bounded_time_and_blocks_nothing(world):
    _s3, _receiver, svc, jo = world
    hole = Receiver()
    hole.mode = "blackhole"
    try:
        t0 = time.monotonic()
        record_id = record(jo, 2, hole.url)
        task = wait_until(svc, record_id, lambda t: t["state"] == "completed")
        assert task["files"][0]["status"] == "uploaded"
        assert time.monotonic() - t0 < 20
        task = wait_until(
            svc, record_id, lambda t: any(c["attempts"] for c in t["callbacks"]), timeout_s=30
        )
        attempt = next(c for c in task["callbacks"] if c["attempts"])["attempts"][0]
        assert attempt["http_status"] is None and attempt["duration_ms"] <= 12_000
    finally:
        hole.stop()


def test_no_secret_reaches_an_answer_a_callback_or_a_log(world):
    _s3, receiver, svc, jo = world
    record_id = record(jo, 2, receiver.url)
    wait_until(svc, record_id, lambda t: t["state"] == "completed")
    receiver.wait_for("task_completed")
    texts = [json.dumps(task_of(svc, record_id))]
    texts += [b.decode() for _, b in receiver.received]
    texts += [json.dumps(jo.call("GET", "applyrecord"))]
    texts += [p.read_text(errors="replace") for p in svc.data_dir.rglob("*.log")]
    for text in texts:
        for secret in (
            ACCESS_KEY,
            SECRET_KEY,
            svc.app["server_secret"],
            svc.app["callback_secret"],
            svc.app["publish_secret"],
        ):
            assert secret not in text
    receiver.received.clear()


def test_storage_that_never_comes_back_fails_the_file_after_the_retention(tmp_path):
    s3, receiver, svc, pub, jo = make_world(tmp_path, CLOUDREC_BACKUP_RETENTION_S="3")
    try:
        s3.mode = "500"
        record_id = record(jo, 2, receiver.url)
        task = wait_until(
            svc,
            record_id,
            lambda t: t["files"] and t["files"][0]["status"] == "failed",
            timeout_s=40,
        )
        [f] = task["files"]
        assert not (svc.data_dir / "backup" / str(APP) / record_id / f["name"]).exists()
        receiver.wait_for("file_upload_failed")
    finally:
        pub.kill()
        pub.wait()
        assert svc.stop() == 0
        receiver.stop()
        s3.stop()
