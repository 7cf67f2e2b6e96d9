"""The fragment store: an operator's S3-protocol bucket that recording nodes of a cluster ship
their files into while they record (``fragment_store``; docs/cluster.md, "Fragments"), so
that what a lost node recorded is not lost with its disk.

A file is shipped as the bytes appended since the last shipment, each an object
``{task}/{attempt}/{file id}/{offset:012d}``: offset order is file order, and the objects of one
file concatenated are the file as it was at its last shipment.  Only the files' append-only
part is shipped: a node that dies never wrote the trailer its muxer would have rewritten.
The service assembles a lost attempt's file from them when the node's spool is gone, and
deletes them once the file is kept; an attempt that ends well deletes its own.

The store is the operator's own setting, like ``storage_endpoint_override``: its address is
not checked by the outbound policy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("cloudrec.fragments")

# The formats shipped: those written append-only (not HLS, whose playlist is rewritten, nor
# pictures).
SHIPPED = frozenset({"mp4", "flv", "aac", "mp3", "ogg"})
# A node ships its open files this often (issue 14: at most every 5 s).
SHIP_S = 2.0
# At most this many bytes in one object (a file that grew more is shipped in several).
MAX_OBJECT = 8 * 1024 * 1024


class FragmentStore:
    def __init__(self, url: str, access_key: str, secret_key: str) -> None:
        parts = urlsplit(url)
        bucket, _, prefix = parts.path.strip("/").partition("/")
        if parts.scheme not in ("http", "https") or not parts.netloc or not bucket:
            raise ValueError(
                f"fragment_store must be http(s)://HOST[:PORT]/BUCKET[/PREFIX]: {url!r}"
            )
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self._endpoint = f"{parts.scheme}://{parts.netloc}"
        self._keys = (access_key, secret_key)
        self._client: Any = None

    def _s3(self) -> Any:
        if self._client is None:
            import boto3  # imported when first needed: an attempt's start does not wait for it
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self._endpoint,
                aws_access_key_id=self._keys[0],
                aws_secret_access_key=self._keys[1],
                region_name="us-east-1",
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=30,
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        return self._client

    def _file(self, task_id: str, attempt: int, file_id: int) -> str:
        return f"{self.prefix}{task_id}/{attempt}/{file_id}/"

    def put(self, task_id: str, attempt: int, file_id: int, offset: int, data: bytes) -> None:
        key = f"{self._file(task_id, attempt, file_id)}{offset:012d}"
        self._s3().put_object(Bucket=self.bucket, Key=key, Body=data)

    def _keys_under(self, prefix: str) -> list[str]:
        keys: list[str] = []
        pages = self._s3().get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return sorted(keys)

    def assemble(self, task_id: str, attempt: int, file_id: int, dest: Path) -> int:
        """Write the file's shipped bytes to ``dest``, in order, up to the first gap (an
        object lost or never written); how many bytes.  0 when nothing was shipped."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with dest.open("wb") as out:
            for key in self._keys_under(self._file(task_id, attempt, file_id)):
                offset = int(key.rsplit("/", 1)[1])
                if offset != written:
                    log.warning("fragments.gap", extra={"fields": {"key": key, "at": written}})
                    break
                body = self._s3().get_object(Bucket=self.bucket, Key=key)["Body"].read()
                out.write(body)
                written += len(body)
        if not written:
            dest.unlink()
        return written

    def delete(self, task_id: str, attempt: int, file_id: int | None = None) -> None:
        """Drop the shipped objects of one file, or of every file of the attempt."""
        prefix = f"{self.prefix}{task_id}/{attempt}/"
        if file_id is not None:
            prefix = self._file(task_id, attempt, file_id)
        keys = self._keys_under(prefix)
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self._s3().delete_objects(Bucket=self.bucket, Delete={"Objects": batch})


class Shipper:
    """Ships an attempt's open files every :data:`SHIP_S` while it records: ``files`` gives
    the (file id, path) of each file being written; ``lost`` says the attempt has lost its
    task (its shipments stop: what it writes after that is fenced anyway)."""

    def __init__(
        self,
        store: FragmentStore,
        task_id: str,
        attempt: int,
        files: Callable[[], Iterable[tuple[int, str]]],
        lost: Callable[[], bool],
    ) -> None:
        self._store = store
        self._task_id = task_id
        self._attempt = attempt
        self._files = files
        self._lost = lost
        self._shipped: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ship", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(SHIP_S) and not self._lost():
            try:
                self.ship_once()
            except Exception:  # the store unreachable: try again next time
                log.warning("fragments.ship_failed", exc_info=True)

    def ship_once(self) -> int:
        """Ship what every file gained since its last shipment; how many bytes."""
        sent = 0
        for file_id, path in list(self._files()):
            done = self._shipped.get(file_id, 0)
            with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                while done < size and not self._lost():
                    f.seek(done)
                    data = f.read(min(size - done, MAX_OBJECT))
                    if not data:
                        break
                    self._store.put(self._task_id, self._attempt, file_id, done, data)
                    done += len(data)
                    sent += len(data)
            self._shipped[file_id] = done
        return sent

    def stop(self, ended_well: bool) -> None:
        """Stop shipping; an attempt whose files were all closed (its run ended, its task not
        lost) drops what it shipped: nobody will assemble it."""
        self._stop.set()
        self._thread.join(SHIP_S + 30)
        if ended_well:
            try:
                self._store.delete(self._task_id, self._attempt)
            except Exception:
                log.warning("fragments.delete_failed", exc_info=True)
