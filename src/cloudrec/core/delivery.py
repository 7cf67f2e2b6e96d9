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
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from cloudrec.core.errors import CloudrecError
from cloudrec.core.ports import UnitOfWork
from cloudrec.core.tasks import (
    END_DISK_FULL,
    END_IDLE,
    END_MAX_DURATION,
    END_RECORDER_FAILED,
    END_WORKER_DIED,
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
    callback_attempts: int = 3  # the first try and ZEGO's 2 retries
    callback_backoff_s: float = 5.0  # ZEGO: 5 s apart; doubles after that
    callback_backoff_max_s: float = 300.0


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


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
    ) -> None:
        self._uow = uow
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
        file = claimed
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
                enqueue_callback(uow, now, task, "playlist_started", [], extra)
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
        enqueue_callback(uow, self._clock(), task, event, files)

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
        secret = app.callback_secret if app is not None else ""
        body = cb.body.encode()
        headers = {
            "Content-Type": "application/json",
            "X-Cloudrec-Message-Id": cb.message_id,
            "X-Cloudrec-Signature": "sha256=" + hmac_sha256(secret, body),
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


# JoCloud message types (the public document names the envelope, not the messages).
JOCLOUD_MSGTYPE = {
    "task_paused": 1,
    "task_resumed": 1,
    "task_started": 1,
    "task_stopped": 1,
    "task_failed": 1,
    "task_completed": 1,
    "file_uploaded": 2,
    "file_backed_up": 2,
    "file_upload_failed": 2,
}


def jocloud_body(
    task: Task, event: str, files: list[RecordedFile], now: datetime, message_id: str
) -> dict[str, Any]:
    """JoCloud's envelope ``{msgid, product, msgtype, notifytime, context{...}}``."""
    first = files[0] if files else None
    context: dict[str, Any] = {
        "msgname": event,
        "appid": task.app_id,
        "roomid": task.spec.room_id,
        "uid": sorted({f.user_id for f in files if f.user_id} or set(task.spec.user_ids)),
        "recordid": task.task_id,
        "filetype": first.format.value if first else "",
        "duration": first.duration_ms if first else 0,
        "fileaddress": (first.url or first.name) if first else "",
        "starttime": first.begin_ms if first else (_ms(task.started_at) if task.started_at else 0),
    }
    if task.end_reason and event.startswith("task_"):
        context["reason"] = task.end_reason
    return {
        "msgid": message_id,
        "product": "recordoss",
        "msgtype": JOCLOUD_MSGTYPE.get(event, 1),
        "notifytime": _ms(now),
        "context": context,
    }


# ZEGO v2 callback events (recording-status-callback.mdx) for cloudrec's events; quit_reason
# 3 idle, 4 maximum time, 6 the recording service went away.
ZEGO_EVENTS = {
    "task_stopped": 5,
    "task_failed": 2,
    "task_completed": 1,
    "task_paused": 201,
    "task_resumed": 202,
    "image_failed": 3,
    "room_empty": 4,
    "stream_missing": 6,
    "task_uploading": 7,
    "playlist_started": 102,
}
# A screenshot's upload is done (in the bucket, in the backup store, or given up on).
ZEGO_SCREENSHOT_EVENTS = ("file_uploaded", "file_backed_up", "file_upload_failed")
# 1004: "the storage space available to the recording service is insufficient".
# A recorder that kept failing: 1001, "unknown recording error".
ZEGO_QUIT = {
    END_IDLE: 3,
    END_MAX_DURATION: 4,
    END_WORKER_DIED: 6,
    END_DISK_FULL: 1004,
    END_RECORDER_FAILED: 1001,
}


def zego_body(
    task: Task,
    event: str,
    files: list[RecordedFile],
    now: datetime,
    callback_secret: str,
    sequence: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """ZEGO's callback for ``event``, signed; None when ZEGO has no such event.  ``extra`` is
    the event's own detail (event 3: ``image_type`` and ``image_url``)."""
    kind = ZEGO_EVENTS.get(event)
    shots = [f for f in files if f.format is FileFormat.JPG]
    if event in ZEGO_SCREENSHOT_EVENTS and shots:
        # video-screenshot.mdx: one event 1 per screenshot, when its upload is done.
        kind, files = 1, shots
    elif kind == 1:
        if task.spec.screenshots:
            return None  # every screenshot had its own event 1
        files = [f for f in files if f.format is not FileFormat.JPG]
    if kind is None:
        return None
    if kind == 5 and task.end_reason in ZEGO_QUIT:
        kind = 2  # stopped by itself: an abnormal end in ZEGO's words
    detail: dict[str, Any] = dict(extra or {})
    if kind == 2:
        detail = {"quit_reason": ZEGO_QUIT.get(task.end_reason or "", 1001)}
    elif kind == 1:
        # Segments and sound waves count for upload_status; file_info lists recordings.
        detail = {
            "upload_status": 1 if all(f.status is FileStatus.UPLOADED for f in files) else 2,
            "file_info": [
                {
                    "user_id": f.user_id or "",
                    "user_name": f.user_id or "",
                    "stream_id": f.stream_id or "",
                    "file_id": f.name.rsplit("/", 1)[-1],
                    "video_id": "",
                    "file_url": f.url or "",
                    "output_file_format": f.format.value,
                    "file_size": f.size,
                    "duration": f.duration_ms,
                    "resolution_width": f.width or 0,
                    "resolution_height": f.height or 0,
                    "media_track_type": int(f.track_type),
                    "begin_timestamp": f.begin_ms,
                    "custom_begin_timestamp": f.custom_begin_ms,
                    "status": f.status.zego_code,
                }
                for f in files
                # A segment is in its playlist; a sound wave lies beside its recording.
                if f.format not in (FileFormat.TS, FileFormat.SOUND_WAVE)
            ],
        }
    nonce = str(secrets.randbelow(10**9))
    timestamp = str(int(now.timestamp()))
    return {
        "app_id": task.app_id,
        "task_id": task.task_id,
        "room_id": task.spec.room_id,
        "event_type": kind,
        "message": task.end_reason or "",
        "nonce": nonce,
        "timestamp": timestamp,
        "signature": zego_callback_signature(callback_secret, timestamp, nonce),
        "sequence": sequence,
        "detail": detail,
    }


def enqueue_callback(
    uow: UnitOfWork,
    now: datetime,
    task: Task,
    event: str,
    files: list[RecordedFile],
    extra: dict[str, Any] | None = None,
) -> None:
    """Store a callback for ``event``, in the task's dialect, if the task has a callback URL
    and the dialect has such an event (never any secret in it)."""
    url = task.spec.callback_url
    if not url:
        return
    message_id = secrets.token_hex(16)
    body: dict[str, Any] | None
    if task.spec.dialect == "zego":
        app = uow.apps.get(task.app_id)
        sequence = len(uow.delivery.callbacks(task.task_id))
        secret = app.callback_secret if app else ""
        body = zego_body(task, event, files, now, secret, sequence, extra)
        if body is None:
            return
    elif event not in JOCLOUD_MSGTYPE:
        return
    else:
        body = jocloud_body(task, event, files, now, message_id)
    uow.delivery.add_callback(
        Callback(
            id=None,
            task_id=task.task_id,
            app_id=task.app_id,
            url=url,
            event=event,
            message_id=message_id,
            body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
            status="pending",
            attempts=0,
            next_at=now,
            created_at=now,
        )
    )


def zego_callback_signature(callback_secret: str, timestamp: str, nonce: str) -> str:
    """ZEGO's callback signature: sha1 of the sorted, concatenated [secret, timestamp, nonce]
    (see the spec's recording-status-callback page, "Source verification")."""
    joined = "".join(sorted([callback_secret, timestamp, nonce]))
    return hashlib.sha1(joined.encode(), usedforsecurity=False).hexdigest()
