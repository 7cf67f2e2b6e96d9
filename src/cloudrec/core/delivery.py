"""Delivery: every finished file into the app's bucket, or into the backup store and re-uploaded
from there; and every event to the app's callback URL.  Nothing recorded is deleted before its
upload is confirmed, and every attempt is stored.

The service is driven by a loop the caller owns (``cloudrec serve`` runs it in threads): it
calls :meth:`DeliveryService.deliver_file` for each file from :meth:`files_due`,
:meth:`complete_tasks` and :meth:`send_due_callbacks`.  Sleeping between retries goes through the
injected ``sleep``; time through ``clock``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from cloudrec.core.callbacks import Callbacks
from cloudrec.core.errors import CloudrecError
from cloudrec.core.ports import RemoteFiles, UnitOfWork
from cloudrec.core.tasks import (
    Callback,
    CallbackAttempt,
    FileFormat,
    FileStatus,
    RecordedFile,
    StorageTarget,
    Task,
    TaskState,
    UploadAttempt,
)

log = logging.getLogger("cloudrec.delivery")
Clock = Callable[[], datetime]

# An uploader or callback sender holds its row this long, renewed while it works; a service
# that dies mid-upload lets go of its rows when their claims run out.
CLAIM = timedelta(seconds=30)


class ObjectStore(Protocol):
    """Puts a local file into an app's bucket.  Raises ``CloudrecError`` whose ``reason`` is
    the error kind (``server_error``, ``access_denied``, ``timeout``, ``unreachable``, ...).
    An HLS playlist goes with its segments unless ``segments`` is False (they are files of
    their own: RealtimeUploadFragment)."""

    def put(self, target: StorageTarget, key: str, path: str, segments: bool = True) -> str:
        """Upload; return the object's URL."""

    def url(self, target: StorageTarget, key: str) -> str:
        """Where ``key`` is (or will be) in the bucket."""


class BackupStore(Protocol):
    def keep(self, app_id: int, task_id: str, key: str, path: str, segments: bool = True) -> str:
        """Move the spool file into the backup store; return where it is now."""

    def where(self, app_id: int, task_id: str, key: str) -> str:
        """Where :meth:`keep` puts ``key`` (the same place every time)."""

    def discard(self, path: str) -> None: ...


class CallbackSender(Protocol):
    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST; return the HTTP status.  Raises ``CloudrecError`` on no answer."""


@dataclass(frozen=True)
class Segment:
    path: str
    duration_s: float
    size: int


class Spool(Protocol):
    def remove(self, path: str, segments: bool = True) -> None: ...

    def exists(self, path: str) -> bool: ...

    def finished_segments(self, playlist: str, final: bool = False) -> list[Segment]:
        """The segments an HLS playlist lists so far (each one finished), in order; with
        ``final``, also those it does not list (a recording cut short)."""


@dataclass(frozen=True)
class DeliveryPolicy:
    upload_attempts: int = 3
    upload_backoff_s: float = 1.0  # doubles per attempt
    backup_retry_s: float = 30.0  # first re-upload from backup; doubles, capped at an hour
    backup_retention: timedelta = timedelta(days=3)
    kept_retention: timedelta = timedelta(days=7)  # files of recordings without storage
    callback_attempts: int = 3  # the first try and ZEGO's 2 retries
    callback_backoff_s: float = 5.0  # ZEGO: 5 s apart; doubles after that
    callback_backoff_max_s: float = 300.0


class DeliveryService:
    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        clock: Clock,
        store: ObjectStore,
        backup: BackupStore,
        sender: CallbackSender,
        spool: Spool,
        policy: DeliveryPolicy = DeliveryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        *,
        callbacks: Callbacks,
        remote: RemoteFiles | None = None,
    ) -> None:
        self._uow = uow
        self._remote = remote  # files other machines wrote (a cluster's fragment store)
        self._callbacks = callbacks
        self._clock = clock
        self._store = store
        self._backup = backup
        self._sender = sender
        self._spool = spool
        self.policy = policy
        self._sleep = sleep
        self._segments_lock = threading.Lock()
        self._held: set[int] = set()  # files this service has claimed and works on
        self._held_lock = threading.Lock()

    # -- files ------------------------------------------------------------------------
    def files_due(self) -> list[RecordedFile]:
        with self._uow() as uow:
            return uow.tasks.files_to_deliver(self._clock())

    def deliver_file(self, file: RecordedFile | int) -> FileStatus | None:
        """Upload one file (with retries); on failure keep it in the backup store.  The file
        is claimed first and re-read: a file someone else holds, or that has moved on since
        it was listed, is left alone (None, or its status)."""
        file_id = file if isinstance(file, int) else file.id
        assert file_id is not None
        now = self._clock()
        with self._uow() as uow:
            claimed = uow.tasks.claim_file(file_id, now, now + CLAIM)
            if claimed is None:
                return None
            uow.commit()
        with self._held_lock:
            self._held.add(file_id)
        try:
            return self._deliver_claimed(claimed, now)
        finally:
            with self._held_lock:
                self._held.discard(file_id)

    def _deliver_claimed(self, claimed: RecordedFile, now: datetime) -> FileStatus | None:
        file_id = claimed.id
        assert file_id is not None
        with self._uow() as uow:
            task = uow.tasks.get(claimed.task_id)
            target = uow.tasks.storage(claimed.task_id)
            due = claimed.status in (FileStatus.RECORDED, FileStatus.UPLOADING) or (
                claimed.status is FileStatus.BACKED_UP
                and any(t is None or t <= now for t in (claimed.retry_at, claimed.keep_until))
            )
            if task is None or target is None or not due:
                uow.tasks.update_file(file_id, claim_until=None)
                uow.commit()
                return claimed.status
            if claimed.status is FileStatus.RECORDED:
                uow.tasks.update_file(file_id, status=FileStatus.UPLOADING)
            uow.commit()
        file = self._local(claimed)
        assert file.id is not None
        if not self._spool.exists(file.backup_path or file.path):
            kept = self._backup.where(task.app_id, task.task_id, file.name)
            if not file.backup_path and self._spool.exists(kept):
                # Moved into the backup store by a service that died before it said so.
                return self._set(
                    task,
                    file,
                    FileStatus.BACKED_UP,
                    "file_backed_up",
                    backup_path=kept,
                    retry_at=now,
                    keep_until=now + self.policy.backup_retention,
                    detail="found in the backup store",
                )
            # Nothing left to upload (removed by hand, or a disk lost): say so once.
            return self._set(
                task,
                file,
                FileStatus.FAILED,
                "file_upload_failed",
                retry_at=None,
                detail=f"the file is gone from {'backup' if file.backup_path else 'the spool'}",
            )
        segments = not task.spec.realtime_segments
        if file.format is FileFormat.HLS and not segments:
            self._register_segments(task, file, final=True)  # the last ones, then the playlist
        source = file.backup_path or file.path
        attempts = 1 if file.status is FileStatus.BACKED_UP else self.policy.upload_attempts
        last: CloudrecError | None = None
        for n in range(attempts):
            if n:
                self._sleep(self.policy.upload_backoff_s * 2 ** (n - 1))
            started = time.monotonic()
            try:
                url = self._store.put(target, file.name, source, segments)
            except CloudrecError as exc:
                last = exc
                self._attempt(file.id, "bucket", False, started, exc)
                continue
            except Exception as exc:  # a bug must not strand the file: count it as a failure
                log.exception("upload.unexpected_error")
                last = CloudrecError.internal(f"{type(exc).__name__}: {exc}", reason="internal")
                self._attempt(file.id, "bucket", False, started, last)
                continue
            self._attempt(file.id, "bucket", True, started, None)
            status = self._set(
                task,
                file,
                FileStatus.UPLOADED,
                "file_uploaded",
                url=url,
                backup_path=None,
                retry_at=None,
            )
            # Only now that the row says so: a crash before this leaves spool clutter, never
            # an uploaded file that looks lost.
            self._spool.remove(source, segments)
            return status
        assert last is not None
        return self._after_failure(task, file, last)

    def _local(self, file: RecordedFile) -> RecordedFile:
        """The file as this service reads it: one another machine wrote is first brought
        here, and its row made to say so before what was shipped of it goes."""
        if file.backup_path or self._remote is None:
            return file
        local = self._remote.fetch(file)
        if local is None:
            return file
        assert file.id is not None
        if local != file.path:
            with self._uow() as uow:
                uow.tasks.update_file(file.id, path=local)
                uow.commit()
            file = replace(file, path=local)
        self._remote.fetched(file)
        return file

    def register_segments(self) -> int:
        """RealtimeUploadFragment: every finished segment of an HLS recording becomes a file of
        its own, uploaded at once; the playlist follows at the end.  Returns how many."""
        with self._uow() as uow:
            tasks = [t for t in uow.tasks.active() if t.spec.realtime_segments]
            playlists = [
                (t, f)
                for t in tasks
                for f in uow.tasks.files(t.task_id)
                if f.format is FileFormat.HLS
                and f.status in (FileStatus.RECORDING, FileStatus.RECORDED)
            ]
        return sum(self._register_segments(t, f) for t, f in playlists)

    def _register_segments(self, task: Task, playlist: RecordedFile, final: bool = False) -> int:
        with self._segments_lock:  # the delivery loop and an upload thread may both look
            return self._register_new_segments(task, playlist, final)

    def _register_new_segments(self, task: Task, playlist: RecordedFile, final: bool) -> int:
        finished = self._spool.finished_segments(playlist.path, final)
        if not finished:
            return 0
        folder = playlist.name.rsplit("/", 1)[0] + "/" if "/" in playlist.name else ""
        now = self._clock()
        with self._uow() as uow:
            known = {f.path for f in uow.tasks.files(task.task_id)}
            new = [s for s in finished if s.path not in known]
            for seg in new:
                name = seg.path.rsplit("/", 1)[-1]
                uow.tasks.add_file(
                    RecordedFile(
                        task_id=task.task_id,
                        name=folder + name,
                        path=seg.path,
                        format=FileFormat.TS,
                        status=FileStatus.RECORDED,
                        stream_id=playlist.stream_id,
                        user_id=playlist.user_id,
                        track_type=playlist.track_type,
                        begin_ms=playlist.begin_ms,
                        size=seg.size,
                        duration_ms=int(seg.duration_s * 1000),
                        complete=True,
                    )
                )
            stem = playlist.path.removesuffix(".m3u8") + "_"
            target = uow.tasks.storage(task.task_id)
            if new and target and not any(k.startswith(stem) for k in known):  # say where
                extra = {
                    "stream_id": playlist.stream_id or "",
                    "file_id": playlist.name.rsplit("/", 1)[-1],
                    "file_url": self._store.url(target, playlist.name),
                    "media_track_type": int(playlist.track_type),
                }
                self._callbacks.enqueue(uow, now, task, "playlist_started", [], extra)
            uow.commit()
        return len(new)

    def _after_failure(self, task: Task, file: RecordedFile, error: CloudrecError) -> FileStatus:
        now = self._clock()
        if file.status is FileStatus.BACKED_UP:
            if file.keep_until is not None and now >= file.keep_until:
                if file.backup_path:
                    self._backup.discard(file.backup_path)
                return self._set(
                    task,
                    file,
                    FileStatus.FAILED,
                    "file_upload_failed",
                    retry_at=None,
                    detail=error.message,
                )
            waited = (now - (file.retry_at or now)).total_seconds()
            delay = min(3600.0, max(self.policy.backup_retry_s, 2 * waited))
            return self._set(
                task, file, FileStatus.BACKED_UP, None, retry_at=now + timedelta(seconds=delay)
            )
        started = time.monotonic()
        try:
            kept = self._backup.keep(
                task.app_id, task.task_id, file.name, file.path, not task.spec.realtime_segments
            )
        except CloudrecError as exc:
            self._attempt(file.id or 0, "backup", False, started, exc)
            return self._set(
                task,
                file,
                FileStatus.RECORDED,
                None,
                detail=f"backup failed: {exc.message}",
                retry_at=now + timedelta(seconds=self.policy.backup_retry_s),
            )
        self._attempt(file.id or 0, "backup", True, started, None)
        return self._set(
            task,
            file,
            FileStatus.BACKED_UP,
            "file_backed_up",
            backup_path=kept,
            retry_at=now + timedelta(seconds=self.policy.backup_retry_s),
            keep_until=now + self.policy.backup_retention,
            detail=error.message,
        )

    def _attempt(
        self, file_id: int, target: str, ok: bool, started: float, error: CloudrecError | None
    ) -> None:
        attempt = UploadAttempt(
            file_id=file_id,
            target=target,
            at=self._clock(),
            ok=ok,
            error_kind=None if error is None else (error.reason or error.kind.value),
            error=None if error is None else error.message,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        with self._uow() as uow:
            uow.delivery.add_upload_attempt(attempt)
            uow.commit()

    def _set(
        self,
        task: Task,
        file: RecordedFile,
        status: FileStatus,
        event: str | None,
        detail: str = "",
        **fields: object,
    ) -> FileStatus:
        assert file.id is not None
        with self._uow() as uow:
            uow.tasks.update_file(file.id, status=status, claim_until=None, **fields)
            if event is not None:
                uow.tasks.add_event(
                    task.task_id,
                    event,
                    self._clock(),
                    f"{file.name}: {detail}" if detail else file.name,
                )
                updated = replace(file, status=status, url=fields.get("url", file.url))  # type: ignore[arg-type]
                self._enqueue(uow, task, event, [updated])
            uow.commit()
        log.info(
            "file.%s",
            status.value,
            extra={"fields": {"task_id": task.task_id, "file": file.name, "detail": detail}},
        )
        return status

    def expire_kept(self) -> int:
        """Remove the files of recordings without storage whose retention has ended (from
        the recording's end); each becomes ``expired``, with an event.  Returns how many."""
        now = self._clock()
        with self._uow() as uow:
            due = uow.tasks.kept_past(now - self.policy.kept_retention)
        for f in due:
            assert f.id is not None
            self._spool.remove(f.path, segments=f.format is FileFormat.HLS)
            with self._uow() as uow:
                uow.tasks.update_file_if(f.id, (FileStatus.RECORDED,), status=FileStatus.EXPIRED)
                uow.tasks.add_event(f.task_id, "file_expired", now, f.name)
                uow.commit()
        return len(due)

    def upload_attempts(self, file_id: int) -> list[UploadAttempt]:
        with self._uow() as uow:
            return uow.delivery.upload_attempts(file_id)

    def callbacks(self, task_id: str) -> list[tuple[Callback, list[CallbackAttempt]]]:
        with self._uow() as uow:
            return uow.delivery.callbacks(task_id)

    # -- tasks ------------------------------------------------------------------------
    def complete_tasks(self) -> list[str]:
        """Tasks whose worker is done and whose every file is delivered become completed."""
        done = []
        with self._uow() as uow:
            waiting = uow.tasks.in_state(TaskState.UPLOADING)
        for task in waiting:
            with self._uow() as uow:
                files = uow.tasks.files(task.task_id)
                if not all(f.status.delivered for f in files):
                    continue
                if not uow.tasks.update_if(
                    task.task_id, states=(TaskState.UPLOADING,), state=TaskState.COMPLETED
                ):
                    continue  # another service completed it
                uow.tasks.add_event(task.task_id, "completed", self._clock(), task.end_reason or "")
                self._enqueue(uow, task, "task_completed", files)
                uow.commit()
            done.append(task.task_id)
        return done

    # -- callbacks --------------------------------------------------------------------
    def _enqueue(self, uow: UnitOfWork, task: Task, event: str, files: list[RecordedFile]) -> None:
        self._callbacks.enqueue(uow, self._clock(), task, event, files)

    def callbacks_due(self) -> list[Callback]:
        with self._uow() as uow:
            return uow.delivery.due_callbacks(self._clock())

    def renew_claims(self) -> None:
        """Keep holding the files this service is uploading (the delivery loop, every tick):
        only those it has claimed, never one merely queued."""
        with self._held_lock:
            held = sorted(self._held)
        if not held:
            return
        with self._uow() as uow:
            uow.tasks.renew_file_claims(held, self._clock() + CLAIM)
            uow.commit()

    def send(self, cb: Callback) -> bool:
        """Deliver one callback (one attempt), once claimed; False if not delivered."""
        assert cb.id is not None
        now = self._clock()
        with self._uow() as uow:
            fresh = uow.delivery.claim_callback(cb.id, now, now + CLAIM)
            if fresh is None:
                return False  # another sender holds it, or it is no longer pending and due
            uow.commit()
            cb = fresh
            assert cb.id is not None
            app = uow.apps.get(cb.app_id)
            task = uow.tasks.get(cb.task_id)
        secret = app.callback_secret if app is not None else ""
        dialect = task.spec.dialect if task is not None else ""
        body, own = self._callbacks.sign(dialect, cb.body.encode(), secret, now)
        headers = {
            "Content-Type": "application/json",
            "X-Cloudrec-Message-Id": cb.message_id,
            "X-Cloudrec-Signature": "sha256=" + hmac_sha256(secret, body),
            **own,
        }
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            status = self._sender.post(cb.url, body, headers)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except CloudrecError as exc:
            error = exc.message
        now = self._clock()
        attempts = cb.attempts + 1
        with self._uow() as uow:
            uow.delivery.add_callback_attempt(
                CallbackAttempt(cb.id, now, status, error, int((time.monotonic() - started) * 1000))
            )
            if error is None:
                uow.delivery.update_callback(
                    cb.id, status="delivered", attempts=attempts, delivered_at=now, claim_until=None
                )
            elif attempts >= self.policy.callback_attempts:
                uow.delivery.update_callback(
                    cb.id, status="failed", attempts=attempts, claim_until=None
                )
            else:
                delay = min(
                    self.policy.callback_backoff_max_s,
                    self.policy.callback_backoff_s * 2 ** max(0, attempts - 1),
                )
                uow.delivery.update_callback(
                    cb.id,
                    attempts=attempts,
                    next_at=now + timedelta(seconds=delay),
                    claim_until=None,
                )
            uow.commit()
        log.info(
            "callback.%s",
            "delivered" if error is None else "attempt_failed",
            extra={
                "fields": {
                    "task_id": cb.task_id,
                    "callback_event": cb.event,
                    "message_id": cb.message_id,
                    "error": error,
                }
            },
        )
        return error is None


def hmac_sha256(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
