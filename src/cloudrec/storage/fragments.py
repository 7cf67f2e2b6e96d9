"""The fragment store: an operator's S3-protocol bucket that recording nodes of a cluster ship
their files into while they record (``fragment_store``; docs/cluster.md, "Fragments"), so
that what a lost node recorded is not lost with its disk.

A file is shipped as the bytes appended since the last shipment, each an object
``{task}/{attempt}/{file id}/{offset:012d}``: offset order is file order, and the objects of one
file concatenated are the file as it was at its last shipment.  When the file is written
(closed) the objects whose bytes its muxer rewrote are put again and the rest appended, so the
store holds the file whole before its row says it is recorded; the node's copy then goes.
The service takes a file another node wrote from the store (:class:`NodeFiles`): a file
written whole, to deliver it; a lost attempt's file, as far as it was shipped (a node that
died never wrote the trailer its muxer would have rewritten).  It deletes the objects once
the file's row names its copy; an attempt that ends well deletes those of files it did not
finish.

The store is the operator's own setting, like ``storage_endpoint_override``: its address is
not checked by the outbound policy.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from cloudrec.core.tasks import FileFormat, RecordedFile

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

    def remove(self, task_id: str, attempt: int, file_id: int, offset: int) -> None:
        key = f"{self._file(task_id, attempt, file_id)}{offset:012d}"
        self._s3().delete_object(Bucket=self.bucket, Key=key)

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
    """An attempt's :class:`~cloudrec.core.ports.FileShipper`: ships its open files every
    :data:`SHIP_S` while it records, and each file whole when it is written (before its row
    says so).  ``lost`` says the attempt has lost its task: its shipments stop (what it writes
    after that is fenced anyway)."""

    def __init__(
        self,
        store: FragmentStore,
        task_id: str,
        attempt: int,
        lost: Callable[[], bool] = lambda: False,
    ) -> None:
        self._store = store
        self._task_id = task_id
        self._attempt = attempt
        self.lost = lost
        self._open: dict[int, str] = {}  # growing files shipped as they grow: id -> path
        # What is in the store of each file: (offset, length, digest) of every object.
        self._objects: dict[int, list[tuple[int, int, bytes]]] = {}
        self._finished: set[int] = set()  # whole in the store, for the service to take
        self._lock = threading.Lock()  # the loop and the worker's closes ship the same files
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ship", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(SHIP_S) and not self.lost():
            try:
                self.ship_once()
            except Exception:  # the store unreachable: try again next time
                log.warning("fragments.ship_failed", exc_info=True)

    def opened(self, file_id: int, path: str, fmt: str) -> None:
        if fmt in SHIPPED:
            with self._lock:
                self._open[file_id] = path

    def ship_once(self) -> int:
        """Ship what every open file gained since its last shipment; how many bytes."""
        sent = 0
        with self._lock:
            for file_id, path in list(self._open.items()):
                with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
                    sent += self._append(file_id, f)
        return sent

    def _append(self, file_id: int, f: BinaryIO) -> int:
        objects = self._objects.setdefault(file_id, [])
        done = objects[-1][0] + objects[-1][1] if objects else 0
        size, sent = os.fstat(f.fileno()).st_size, 0
        while done < size and not self.lost():
            f.seek(done)
            data = f.read(min(size - done, MAX_OBJECT))
            if not data:
                break
            self._store.put(self._task_id, self._attempt, file_id, done, data)
            objects.append((done, len(data), _digest(data)))
            done += len(data)
            sent += len(data)
        return sent

    def finish(self, file_id: int, path: str) -> bool:
        """Make the shipped copy of a written file whole: the objects whose bytes the muxer
        rewrote at its end (an FLV's duration, an MP3's header, files joined into one) are
        put again, the rest appended.  False when that failed or the attempt lost its task:
        the file stays on this disk, and the service reads what it can."""
        with self._lock:
            self._open.pop(file_id, None)
            try:
                with open(path, "rb") as f:
                    self._resync(file_id, f)
                    self._append(file_id, f)
            except Exception:
                log.warning(
                    "fragments.finish_failed", extra={"fields": {"path": path}}, exc_info=True
                )
                return False
            if self.lost():
                return False
            self._finished.add(file_id)
            return True

    def _resync(self, file_id: int, f: BinaryIO) -> None:
        size = os.fstat(f.fileno()).st_size
        kept: list[tuple[int, int, bytes]] = []
        for offset, length, digest in self._objects.get(file_id, []):
            if offset >= size:  # the file got shorter: the objects past its end go
                self._store.remove(self._task_id, self._attempt, file_id, offset)
                continue
            f.seek(offset)
            data = f.read(min(length, size - offset))
            if len(data) != length or _digest(data) != digest:
                self._store.put(self._task_id, self._attempt, file_id, offset, data)
            kept.append((offset, len(data), _digest(data)))
        self._objects[file_id] = kept

    def forget(self, file_ids: list[int]) -> None:
        with self._lock:
            for file_id in file_ids:
                self._open.pop(file_id, None)
                if self._objects.pop(file_id, None):
                    self._store.delete(self._task_id, self._attempt, file_id)

    def stop(self, ended_well: bool) -> None:
        """Stop shipping.  An attempt whose files were all closed (its run ended, its task not
        lost) drops what it shipped of files it did not finish (nobody will assemble them);
        the finished ones stay until the service has taken them."""
        self._stop.set()
        self._thread.join(SHIP_S + 30)
        if ended_well:
            with self._lock:
                left = [i for i in self._objects if i not in self._finished]
            try:
                self.forget(left)
            except Exception:
                log.warning("fragments.delete_failed", exc_info=True)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class NodeFiles:
    """The service's :class:`~cloudrec.core.ports.RemoteFiles`: a file written by another
    node (or not on this disk) is assembled from the fragment store into ``spool/assembled``;
    what was shipped of it goes once its row names the copy."""

    def __init__(self, store: FragmentStore, node: str, spool_dir: Path) -> None:
        self._store = store
        self._node = node
        self._dir = spool_dir / "assembled"

    def fetch(self, file: RecordedFile) -> str | None:
        path = Path(file.path)
        if path.is_relative_to(self._dir):
            return file.path  # taken already (by the reconciler, for a lost attempt)
        if file.id is None or file.format is FileFormat.HLS:
            return None  # never shipped: a playlist is rewritten
        if file.node in (None, self._node) and path.exists():
            return None  # this machine's own file: read where it is
        dest = self._dir / file.task_id / f"{file.id}-{path.name}"
        try:  # a store that fails costs this file only: it is read where its row says
            if not self._store.assemble(file.task_id, file.attempt, file.id, dest):
                return None
        except Exception:
            log.warning(
                "file.assemble_failed", extra={"fields": {"file": file.name}}, exc_info=True
            )
            return None
        log.info("file.assembled", extra={"fields": {"file": file.name, "node": file.node}})
        return str(dest)

    def fetched(self, file: RecordedFile) -> None:
        if file.id is not None:
            try:
                self._store.delete(file.task_id, file.attempt, file.id)
            except Exception:  # left in the store: clutter, never a lost file
                log.warning("fragments.delete_failed", exc_info=True)
