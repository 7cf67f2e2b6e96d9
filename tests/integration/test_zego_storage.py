"""A ZEGO StartRecord's StorageParams taken the way a user's request takes them: through the
HTTP API (in-process), the task database and the delivery, to a real S3 server on loopback,
with no endpoint override."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cloudrec.api.app import create_app
from cloudrec.api.zego.auth import signature
from cloudrec.bootstrap import bootstrap
from cloudrec.config import load_settings
from cloudrec.core.tasks import FileFormat, FileStatus, RecordedFile, TrackType
from tests.fakes import NoWorkers
from tests.s3server import FaultyS3

APP = 777


@pytest.fixture
def s3() -> Iterator[FaultyS3]:
    server = FaultyS3().start()
    server.client().create_bucket(Bucket="minio-bucket")
    yield server
    server.stop()


def _signed(action: str, secret: str) -> dict[str, str]:
    ts, nonce = int(time.time()), os.urandom(8).hex()
    return {
        "Action": action,
        "AppId": str(APP),
        "SignatureNonce": nonce,
        "Timestamp": str(ts),
        "SignatureVersion": "2.0",
        "Signature": signature(APP, nonce, secret, ts),
    }


def test_a_vendor_10_http_endpoint_on_loopback_gets_the_file_over_http(s3, data_dir):
    """Issue 10 #9: ZEGO Vendor 10 with an explicit http:// EndPoint was turned into https, so
    a self-hosted S3 store on http (MinIO on :9000) never got a file; every test had used the
    endpoint override."""
    settings = load_settings(
        {"data_dir": data_dir}, env={"CLOUDREC_ALLOW_PRIVATE_TARGETS": "1"}
    )  # loopback is private: the deployment allows it, as a LAN MinIO needs
    assert settings.storage_endpoint_override == ""
    c = bootstrap(settings, executor=NoWorkers())
    secret = c.apps.create(APP).server_secret
    body = {
        "RoomId": "room1",
        "RecordInputParams": {"RecordMode": 1, "StreamType": 3},
        "RecordOutputParams": {"OutputFileFormat": "mp4", "OutputFolder": "record/"},
        "StorageParams": {
            "Vendor": 10,
            "Region": "us-east-1",
            "Bucket": "minio-bucket",
            "AccessKeyId": "minioadmin",
            "AccessKeySecret": "minioadmin",
            "EndPoint": s3.url,  # http://127.0.0.1:PORT
        },
    }
    with TestClient(create_app(c)) as http:
        answer = http.post("/", params=_signed("StartRecord", secret), json=body).json()
    assert answer["Code"] == 0, answer
    task_id = answer["Data"]["TaskId"]

    # The worker's part, done by hand: a finished recording in the spool.
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    spooled = settings.spool_dir / "stream1.mp4"
    data = os.urandom(20_000)
    spooled.write_bytes(data)
    with c.uow() as uow:
        uow.tasks.add_file(
            RecordedFile(
                task_id=task_id,
                name="record/stream1.mp4",
                path=str(spooled),
                format=FileFormat.MP4,
                status=FileStatus.RECORDED,
                stream_id="stream1",
                user_id="u1",
                track_type=TrackType.AUDIO_VIDEO,
                begin_ms=0,
                size=len(data),
            )
        )
        uow.commit()
    (file,) = c.tasks.files(task_id)
    before = s3.requests
    assert c.delivery.deliver_file(file) is FileStatus.UPLOADED
    assert s3.requests > before  # over plain http to the loopback server
    (file,) = c.tasks.files(task_id)
    assert file.url == f"{s3.url}/minio-bucket/record/stream1.mp4"
    got = s3.client().get_object(Bucket="minio-bucket", Key="record/stream1.mp4")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    c.engine.dispose()
