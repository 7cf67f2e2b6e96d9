"""Uploads against a real S3-protocol server (moto, server mode) on loopback: every vendor
through the endpoint override, signed with the target's keys; multipart; bytes checked by
download and hash; and each vendor's own endpoint rules."""

from __future__ import annotations

import hashlib
import os

import pytest

from cloudrec.core.errors import CloudrecError
from cloudrec.core.tasks import StorageTarget
from cloudrec.storage.s3 import MULTIPART_THRESHOLD, S3ObjectStore, resolve_endpoint
from tests.s3server import FaultyS3

VENDORS = [
    "aliyun-oss",
    "tencent-cos",
    "qiniu-kodo",
    "aws-s3",
    "huawei-obs",
    "gcs",
    "cmcc-eos",
    "s3",
]


@pytest.fixture(scope="module")
def s3():
    server = FaultyS3().start()
    server.client().create_bucket(Bucket="bkt")
    yield server
    server.stop()


def _target(vendor: str) -> StorageTarget:
    return StorageTarget(
        vendor=vendor,
        endpoint="example.invalid",
        bucket="bkt",
        access_key="AKIDTEST",
        secret_key="SECRETTEST",
    )


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_endpoint_override_takes_every_vendor_to_it_signed_with_the_targets_keys(
    s3, tmp_path, vendor
):
    """The override replaces each vendor's endpoint rules (those are checked by
    test_each_vendors_endpoint_rules); the upload is signed with the target's own access key
    (looked for in what reached the server, since moto accepts any credentials)."""
    path = tmp_path / "f.bin"
    data = os.urandom(100_000)
    path.write_bytes(data)
    store = S3ObjectStore(endpoint_override=s3.url)
    before = len(s3.authorizations)
    url = store.put(_target(vendor), f"rec/{vendor}/f.bin", str(path))
    signed = s3.authorizations[before:]
    assert signed and all(
        a.startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/") and "/us-east-1/s3/" in a
        for a in signed
    ), signed
    assert url == f"{s3.url}/bkt/rec/{vendor}/f.bin"
    got = s3.client().get_object(Bucket="bkt", Key=f"rec/{vendor}/f.bin")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_a_large_file_goes_up_in_parts_and_comes_back_whole(s3, tmp_path):
    path = tmp_path / "big.bin"
    data = os.urandom(2 * MULTIPART_THRESHOLD + 12345)
    path.write_bytes(data)
    S3ObjectStore(endpoint_override=s3.url).put(_target("s3"), "big.bin", str(path))
    head = s3.client().head_object(Bucket="bkt", Key="big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    got = s3.client().get_object(Bucket="bkt", Key="big.bin")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_each_object_carries_the_content_type_of_its_format(s3, tmp_path):
    store = S3ObjectStore(endpoint_override=s3.url)
    playlist = tmp_path / "rec.m3u8"
    playlist.write_text("#EXTM3U\n")
    (tmp_path / "rec_00000.ts").write_bytes(b"\x47" * 188)
    for name in ("rec.mp3", "rec.ogg", "rec.sw", "rec.mp4", "rec.bin"):
        (tmp_path / name).write_bytes(b"x")
        store.put(_target("s3"), f"ct/{name}", str(tmp_path / name))
    store.put(_target("s3"), "ct/rec.m3u8", str(playlist))
    listed = s3.client().list_objects_v2(Bucket="bkt", Prefix="ct/")["Contents"]
    types = {
        o["Key"][3:]: s3.client().head_object(Bucket="bkt", Key=o["Key"])["ContentType"]
        for o in listed
    }
    assert types == {
        "rec.mp3": "audio/mpeg",
        "rec.ogg": "audio/ogg",
        "rec.sw": "application/json",
        "rec.mp4": "video/mp4",
        "rec.bin": "application/octet-stream",
        "rec.m3u8": "application/vnd.apple.mpegurl",
        "rec_00000.ts": "video/mp2t",
    }


@pytest.mark.parametrize(("mode", "kind"), [("500", "server_error"), ("403", "access_denied")])
def test_storage_errors_are_classified_and_never_show_the_keys(s3, tmp_path, mode, kind):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    s3.mode = mode
    try:
        with pytest.raises(CloudrecError) as err:
            S3ObjectStore(endpoint_override=s3.url).put(_target("s3"), "f.bin", str(path))
    finally:
        s3.mode = "ok"
    assert err.value.reason == kind
    assert "SECRETTEST" not in err.value.message and "AKIDTEST" not in err.value.message


def test_a_storage_that_hangs_times_out(s3, tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    s3.mode = "hang"
    try:
        with pytest.raises(CloudrecError) as err:
            S3ObjectStore(endpoint_override=s3.url, read_timeout_s=1).put(
                _target("s3"), "f.bin", str(path)
            )
    finally:
        s3.mode = "ok"
    assert err.value.reason == "timeout"


@pytest.mark.parametrize(
    ("vendor", "endpoint", "url", "region"),
    [
        (
            "aliyun-oss",
            "oss-cn-hangzhou.aliyuncs.com",
            "https://oss-cn-hangzhou.aliyuncs.com",
            "cn-hangzhou",
        ),
        (
            "tencent-cos",
            "cos.ap-beijing-1.myqcloud.com",
            "https://cos.ap-beijing-1.myqcloud.com",
            "ap-beijing-1",
        ),
        (
            "qiniu-kodo",
            "s3-cn-south-1.qiniucs.com",
            "https://s3-cn-south-1.qiniucs.com",
            "cn-south-1",
        ),
        (
            "huawei-obs",
            "obs.cn-north-4.myhuaweicloud.com",
            "https://obs.cn-north-4.myhuaweicloud.com",
            "cn-north-4",
        ),
        ("gcs", "", "https://storage.googleapis.com", "auto"),
    ],
)
def test_each_vendors_endpoint_rules(vendor, endpoint, url, region):
    ep = resolve_endpoint(StorageTarget(vendor, endpoint, "b", "k", "s"))
    assert (ep.url, ep.region, ep.path_style) == (url, region, False)
