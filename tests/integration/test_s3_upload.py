"""Uploads against a real S3-protocol server (moto, server mode) on loopback: each vendor's own
endpoint rules, taken to the loopback server by an injected resolver (not by the override),
with moto checking the signatures; the override; multipart; bytes checked by download and hash."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from cloudrec.core.errors import CloudrecError
from cloudrec.core.tasks import StorageTarget
from cloudrec.outbound import OutboundPolicy
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


# Each vendor as a user's request names it: (vendor, endpoint host, Region, the signing region
# and addressing style its rules give).  The scheme is http and the port moto's, so that the
# resolver below can take every name to the loopback server.
VENDOR_ENDPOINTS = [
    ("aliyun-oss", "oss-cn-hangzhou.aliyuncs.com", "", "cn-hangzhou", False),
    ("tencent-cos", "cos.ap-beijing-1.myqcloud.com", "", "ap-beijing-1", False),
    ("qiniu-kodo", "s3-cn-south-1.qiniucs.com", "", "cn-south-1", False),
    ("aws-s3", "s3.eu-west-1.amazonaws.com", "eu-west-1", "eu-west-1", False),
    ("huawei-obs", "obs.cn-north-4.myhuaweicloud.com", "", "cn-north-4", False),
    ("gcs", "storage.googleapis.com", "", "auto", False),
    ("cmcc-eos", "eos-wuxi-1.cmecloud.cn", "", "us-east-1", False),
    ("s3", "minio", "", "us-east-1", True),  # one label: moto takes it as path-style
]
assert sorted(v[0] for v in VENDOR_ENDPOINTS) == sorted(VENDORS)


class LoopbackDns:
    """An injected resolver that takes every name to 127.0.0.1 and records the names asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[tuple[Any, ...]]:
        self.asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]


@pytest.fixture(scope="module")
def iam_keys(s3) -> dict[str, dict[str, str]]:
    """An IAM user allowed s3:* and its access key, per moto partition (a cn-* signing region
    is the aws-cn partition, whose IAM is its own)."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    keys = {}
    for partition, region in (("aws", "us-east-1"), ("aws-cn", "cn-north-1")):
        iam = boto3.client(
            "iam",
            endpoint_url=f"http://127.0.0.1:{s3.moto_port}",
            region_name=region,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="recorder")
        iam.put_user_policy(UserName="recorder", PolicyName="s3", PolicyDocument=json.dumps(policy))
        keys[partition] = iam.create_access_key(UserName="recorder")["AccessKey"]
    return keys


@pytest.fixture
def signatures_checked(s3) -> Iterator[None]:
    """moto checks every request's signature against its IAM while the test runs (its
    ``INITIAL_NO_AUTH_ACTION_COUNT`` set to 0, and back to unlimited after)."""
    base = f"http://127.0.0.1:{s3.moto_port}/moto-api/reset-auth"
    httpx.post(base, content=b"0").raise_for_status()
    try:
        yield
    finally:
        httpx.post(base, content=b"inf").raise_for_status()


@pytest.mark.parametrize(("vendor", "host", "region", "signing", "path_style"), VENDOR_ENDPOINTS)
def test_each_vendors_own_endpoint_rules_upload_with_checked_credentials(
    s3, iam_keys, signatures_checked, tmp_path, vendor, host, region, signing, path_style
):
    """Issue 12: "every vendor's code path" ran one path (the override returns before any
    vendor branch) against a server that took any credentials."""
    endpoint = f"http://{host}:{s3.moto_port}"
    key = iam_keys["aws-cn" if signing.startswith("cn-") else "aws"]
    # path_style: what ZEGO's S3ForcePathStyle says (on by default for Vendor 10); only the
    # "s3" vendor reads it, the others have their own style.
    target = StorageTarget(
        vendor, endpoint, "bkt", key["AccessKeyId"], key["SecretAccessKey"], region, path_style
    )
    ep = resolve_endpoint(target)
    assert (ep.url, ep.region, ep.path_style) == (endpoint, signing, path_style)
    path = tmp_path / "f.bin"
    data = os.urandom(50_000)
    path.write_bytes(data)
    dns = LoopbackDns()
    store = S3ObjectStore(policy=OutboundPolicy(allow_private=True), resolver=dns)
    url = store.put(target, f"vendors/{vendor}.bin", str(path))
    connected = host if path_style else f"bkt.{host}"
    assert dns.asked == [connected]  # the name really connected to is the one checked
    assert url == (
        f"{endpoint}/bkt/vendors/{vendor}.bin"
        if path_style
        else f"http://{connected}:{s3.moto_port}/vendors/{vendor}.bin"
    )
    moto = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{s3.moto_port}",
        region_name="us-east-1",
        aws_access_key_id=iam_keys["aws"]["AccessKeyId"],
        aws_secret_access_key=iam_keys["aws"]["SecretAccessKey"],
    )
    got = moto.get_object(Bucket="bkt", Key=f"vendors/{vendor}.bin")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    for access_key, secret_key, code in [
        (key["AccessKeyId"], "not-the-secret", "SignatureDoesNotMatch"),
        ("AKIANOTAKEY00000000", key["SecretAccessKey"], "InvalidAccessKeyId"),
    ]:
        wrong = StorageTarget(vendor, endpoint, "bkt", access_key, secret_key, region, path_style)
        with pytest.raises(CloudrecError) as err:
            store.put(wrong, f"vendors/{vendor}-wrong.bin", str(path))
        assert err.value.reason == "access_denied"
        assert err.value.message.endswith(f"({code})")


@pytest.mark.parametrize("vendor", VENDORS)
def test_an_explicit_scheme_is_kept_for_every_vendor(vendor):
    """Issue 10 #9: an explicit http:// EndPoint was turned into https (ZEGO Vendor 10 on a
    self-hosted MinIO on :9000 never got a file)."""
    for endpoint, url in [
        ("http://store.example.com:9000", "http://store.example.com:9000"),
        ("HTTP://store.example.com:9000/", "http://store.example.com:9000"),
        ("https://store.example.com", "https://store.example.com"),
        ("store.example.com", "https://store.example.com"),
    ]:
        assert resolve_endpoint(StorageTarget(vendor, endpoint, "b", "k", "s")).url == url


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
