"""One S3-protocol client for every vendor the dialects name (boto3).

Each vendor's endpoint rules turn a request's ``endpoint``/``region`` into an endpoint URL, an
addressing style and a signing region.  ``storage_endpoint_override`` (a deployment setting)
sends every vendor to one endpoint, path-style: on-premises S3 servers and the tests.
botocore's default CRC32 checksum headers are turned off: several non-AWS vendors reject them.
Each object is uploaded with the Content-Type of its format (``core.tasks.content_type``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from cloudrec.core.errors import CloudrecError
from cloudrec.core.tasks import StorageTarget, content_type
from cloudrec.storage.backup import hls_segments

MULTIPART_THRESHOLD = 8 * 1024 * 1024
MULTIPART_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class Endpoint:
    url: str
    region: str
    path_style: bool


def _region_from(host: str, pattern: str, default: str) -> str:
    m = re.search(pattern, host)
    return m.group(1) if m else default


def _https(endpoint: str) -> str:
    return endpoint if "://" in endpoint else f"https://{endpoint}"


def resolve_endpoint(target: StorageTarget, override: str = "") -> Endpoint:
    """The endpoint URL, signing region and addressing style for a vendor's bucket."""
    if override:
        return Endpoint(override.rstrip("/"), target.region or "us-east-1", path_style=True)
    host = target.endpoint.split("://")[-1].strip("/")
    vendor = target.vendor
    if vendor == "aliyun-oss":  # oss-cn-hangzhou.aliyuncs.com
        return Endpoint(
            _https(host), _region_from(host, r"oss-([a-z0-9-]+)\.", "cn-hangzhou"), path_style=False
        )
    if vendor == "tencent-cos":  # cos.ap-beijing-1.myqcloud.com
        return Endpoint(
            _https(host),
            _region_from(host, r"cos\.([a-z0-9-]+)\.", "ap-guangzhou"),
            path_style=False,
        )
    if vendor == "qiniu-kodo":  # s3-cn-south-1.qiniucs.com
        return Endpoint(
            _https(host), _region_from(host, r"s3-([a-z0-9-]+)\.", "cn-east-1"), path_style=False
        )
    if vendor == "aws-s3":
        region = target.region or "us-east-1"
        return Endpoint(
            _https(host) if host else f"https://s3.{region}.amazonaws.com", region, path_style=False
        )
    if vendor == "huawei-obs":  # obs.cn-north-4.myhuaweicloud.com
        region = target.region or _region_from(host, r"obs\.([a-z0-9-]+)\.", "cn-north-4")
        return Endpoint(_https(host or f"obs.{region}.myhuaweicloud.com"), region, False)
    if vendor == "gcs":
        return Endpoint(_https(host or "storage.googleapis.com"), target.region or "auto", False)
    if vendor == "cmcc-eos":
        return Endpoint(_https(host), target.region or "us-east-1", path_style=False)
    # "s3": any S3-protocol store at an endpoint the request gives; path-style unless told.
    return Endpoint(_https(host), target.region or "us-east-1", path_style=target.path_style)


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, Boto3Error) and exc.__context__ is not None:
        return _error_kind(exc.__context__)  # S3UploadFailedError wraps the ClientError
    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
        return "timeout"
    if isinstance(exc, EndpointConnectionError):
        return "unreachable"
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            return "no_such_bucket"
        if status in (401, 403):
            return "access_denied"
        if status >= 500:
            return "server_error"
        return f"http_{status}" if status else "client_error"
    return "unreachable"


class S3ObjectStore:
    """``ObjectStore`` over boto3.  One client per (endpoint, keys), made on first use."""

    def __init__(
        self,
        endpoint_override: str = "",
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 20.0,
    ) -> None:
        self._override = endpoint_override
        self._config = dict(connect_timeout=connect_timeout_s, read_timeout=read_timeout_s)
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_CHUNK,
            use_threads=False,
        )

    def client(self, target: StorageTarget) -> Any:
        ep = resolve_endpoint(target, self._override)
        config = Config(
            s3={"addressing_style": "path" if ep.path_style else "virtual"},
            retries={"max_attempts": 1, "mode": "standard"},  # the uploader retries itself
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            **self._config,
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=ep.url,
            region_name=ep.region,
            config=config,
            aws_access_key_id=target.access_key,
            aws_secret_access_key=target.secret_key,
        )

    def put(self, target: StorageTarget, key: str, path: str, segments: bool = True) -> str:
        ep = resolve_endpoint(target, self._override)
        client = self.client(target)
        try:
            # HLS: the segments first (beside the playlist's key), then the playlist.
            folder = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
            for segment in hls_segments(Path(path)) if segments else []:
                client.upload_file(
                    str(segment),
                    target.bucket,
                    folder + segment.name,
                    ExtraArgs={"ContentType": content_type(segment.name)},
                    Config=self._transfer,
                )
            client.upload_file(
                path,
                target.bucket,
                key,
                ExtraArgs={"ContentType": content_type(key)},
                Config=self._transfer,
            )
        except (BotoCoreError, ClientError, Boto3Error, OSError) as exc:
            # The message names the bucket and key, never the credentials.
            raise CloudrecError.unavailable(
                f"upload of {key} to bucket {target.bucket} at {ep.url} failed: "
                f"{type(exc).__name__}: {_safe(exc)}",
                reason=_error_kind(exc),
            ) from exc
        return self.url(target, key)

    def url(self, target: StorageTarget, key: str) -> str:
        """Where ``key`` is (or will be) in the bucket."""
        ep = resolve_endpoint(target, self._override)
        base = ep.url.rstrip("/")
        if ep.path_style:
            return f"{base}/{target.bucket}/{key}"
        scheme, _, host = base.partition("://")
        return f"{scheme}://{target.bucket}.{host}/{key}"


def _safe(exc: Exception) -> str:
    text = str(exc)
    return text[:300]
