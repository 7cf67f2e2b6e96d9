"""One S3-protocol client for every vendor the dialects name (boto3).

Each vendor's endpoint rules turn a request's ``endpoint``/``region`` into an endpoint URL, an
addressing style and a signing region.  An explicit scheme in the request's endpoint is kept
(``http://minio.lan:9000``: a self-hosted store on plain http); without one it is https.
``storage_endpoint_override`` (a deployment setting) sends every vendor to one endpoint,
path-style: on-premises S3 servers and the tests.

Every connection goes through the outbound policy at connect time (``storage.egress``): the
name really connected to, virtual-hosted ``{bucket}.{endpoint}`` included, is resolved, checked
and pinned.  The override is the operator's own setting, so its address is not checked.  Error
messages name the key, the bucket and the endpoint's host as the request gave them, and the
kind of failure; never an address, the server's own text, or the credentials.
botocore's default CRC32 checksum headers are turned off: several non-AWS vendors reject them.
Each object is uploaded with the Content-Type of its format (``core.tasks.content_type``).
"""

from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass, replace
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
from cloudrec.outbound import OutboundPolicy, Resolver
from cloudrec.storage.backup import hls_segments
from cloudrec.storage.egress import PinnedSession, egress_refusal, install, policy_guard

log = logging.getLogger("cloudrec.storage")

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


def resolve_endpoint(target: StorageTarget, override: str = "") -> Endpoint:
    """The endpoint URL, signing region and addressing style for a vendor's bucket.

    The scheme of an explicit ``scheme://`` endpoint is kept, for every vendor; https otherwise.
    """
    if override:
        return Endpoint(override.rstrip("/"), target.region or "us-east-1", path_style=True)
    scheme, sep, rest = target.endpoint.strip().rpartition("://")
    scheme = scheme.lower() if sep and scheme.lower() in ("http", "https") else "https"
    host = rest.strip("/")

    def _url(endpoint: str) -> str:  # with the request's scheme, or https
        return f"{scheme}://{endpoint}"

    vendor = target.vendor
    if vendor == "aliyun-oss":  # oss-cn-hangzhou.aliyuncs.com
        return Endpoint(
            _url(host), _region_from(host, r"oss-([a-z0-9-]+)\.", "cn-hangzhou"), path_style=False
        )
    if vendor == "tencent-cos":  # cos.ap-beijing-1.myqcloud.com
        return Endpoint(
            _url(host),
            _region_from(host, r"cos\.([a-z0-9-]+)\.", "ap-guangzhou"),
            path_style=False,
        )
    if vendor == "qiniu-kodo":  # s3-cn-south-1.qiniucs.com
        return Endpoint(
            _url(host), _region_from(host, r"s3-([a-z0-9-]+)\.", "cn-east-1"), path_style=False
        )
    if vendor == "aws-s3":
        region = target.region or "us-east-1"
        return Endpoint(_url(host or f"s3.{region}.amazonaws.com"), region, path_style=False)
    if vendor == "huawei-obs":  # obs.cn-north-4.myhuaweicloud.com
        region = target.region or _region_from(host, r"obs\.([a-z0-9-]+)\.", "cn-north-4")
        return Endpoint(_url(host or f"obs.{region}.myhuaweicloud.com"), region, False)
    if vendor == "gcs":
        return Endpoint(_url(host or "storage.googleapis.com"), target.region or "auto", False)
    if vendor == "cmcc-eos":
        return Endpoint(_url(host), target.region or "us-east-1", path_style=False)
    # "s3": any S3-protocol store at an endpoint the request gives; path-style unless told.
    return Endpoint(_url(host), target.region or "us-east-1", path_style=target.path_style)


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
    """``ObjectStore`` over boto3.  A client per upload, its connections checked by ``policy``.

    ``resolver`` (``socket.getaddrinfo``-shaped) replaces the system resolver, for tests.
    """

    def __init__(
        self,
        endpoint_override: str = "",
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 20.0,
        policy: OutboundPolicy | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self._override = endpoint_override
        self._timeouts = (connect_timeout_s, read_timeout_s)
        policy = policy or OutboundPolicy()
        # The override is the operator's own endpoint (a LAN store, the tests): trusted.
        self._policy = replace(policy, allow_private=True) if endpoint_override else policy
        self._resolver = resolver
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_CHUNK,
            use_threads=False,
        )

    def client(self, target: StorageTarget) -> tuple[Any, PinnedSession]:
        """A boto3 client for ``target`` and the session that makes its connections (close
        both when done)."""
        ep = resolve_endpoint(target, self._override)
        connect_timeout_s, read_timeout_s = self._timeouts
        config = Config(
            s3={"addressing_style": "path" if ep.path_style else "virtual"},
            retries={"max_attempts": 1, "mode": "standard"},  # the uploader retries itself
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            proxies={},  # never the environment's proxy: it would connect past the check
        )
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=ep.url,
            region_name=ep.region,
            config=config,
            aws_access_key_id=target.access_key,
            aws_secret_access_key=target.secret_key,
        )
        session = PinnedSession(
            policy_guard(self._policy, self._resolver),
            self._policy.ssl_context,
            timeout=self._timeouts,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        install(client, session)
        return client, session

    def put(self, target: StorageTarget, key: str, path: str, segments: bool = True) -> str:
        ep = resolve_endpoint(target, self._override)
        client, session = self.client(target)
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
        except (BotoCoreError, ClientError, Boto3Error, OSError, CloudrecError) as exc:
            raise _upload_error(exc, key, target.bucket, ep.url) from exc
        finally:
            client.close()
            session.close()
        return self.url(target, key)

    def url(self, target: StorageTarget, key: str) -> str:
        """Where ``key`` is (or will be) in the bucket."""
        ep = resolve_endpoint(target, self._override)
        base = ep.url.rstrip("/")
        if ep.path_style:
            return f"{base}/{target.bucket}/{key}"
        scheme, _, host = base.partition("://")
        return f"{scheme}://{target.bucket}.{host}/{key}"


def _upload_error(exc: BaseException, key: str, bucket: str, url: str) -> CloudrecError:
    """What the caller is told: the key, bucket and endpoint host as given, the kind of failure
    and at most the S3 error code.  The details (addresses, the server's text) are logged."""
    host = url.partition("://")[2].split("/", 1)[0]
    where = f"upload of {key} to bucket {bucket} at {host} failed"
    refusal = egress_refusal(exc)
    log.warning(
        "upload.failed",
        extra={"fields": {"key": key, "bucket": bucket, "host": host, "error": _safe(exc)}},
    )
    if refusal is not None and refusal.reason == "target_forbidden":
        return CloudrecError.invalid_argument(
            f"{where}: the storage endpoint is not a public address (storage on a private "
            "network needs allow_private_targets)",
            reason="target_forbidden",
        )
    if refusal is not None and refusal.reason == "target_redirect":
        return CloudrecError.unavailable(
            f"{where}: the storage answered with a redirect, which is not followed "
            "(is the bucket's region right?)",
            reason="target_redirect",
        )
    if refusal is not None:
        return CloudrecError.unavailable(f"{where}: the name does not resolve", "unreachable")
    kind = _error_kind(exc)
    code = _s3_code(exc)
    return CloudrecError.unavailable(f"{where}: {kind}" + (f" ({code})" if code else ""), kind)


def _s3_code(exc: BaseException) -> str:
    while isinstance(exc, Boto3Error) and exc.__context__ is not None:
        exc = exc.__context__
    if not isinstance(exc, ClientError):
        return ""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code if re.fullmatch(r"[A-Za-z][A-Za-z0-9.]{0,63}", code) else ""


def _safe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
