"""ZEGO's recording status callbacks (recording-status-callback.mdx), signed with the app's
callback secret."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from cloudrec.core.ports import UnitOfWork
from cloudrec.core.tasks import (
    END_DISK_FULL,
    END_IDLE,
    END_MAX_DURATION,
    END_RECORDER_FAILED,
    END_WORKER_DIED,
    FileFormat,
    FileStatus,
    RecordedFile,
    Task,
)

# ZEGO v2 callback events for cloudrec's events.
EVENTS = {
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
SCREENSHOT_EVENTS = ("file_uploaded", "file_backed_up", "file_upload_failed")
# quit_reason: 3 idle, 4 maximum time, 6 the recording service went away, 1004 "the storage
# space available to the recording service is insufficient", 1001 "unknown recording error"
# (a recorder that kept failing).
QUIT = {
    END_IDLE: 3,
    END_MAX_DURATION: 4,
    END_WORKER_DIED: 6,
    END_DISK_FULL: 1004,
    END_RECORDER_FAILED: 1001,
}
# A file's status as ZEGO numbers them (1 recording … 5 failed), in answers and callbacks.
FILE_STATUS = {
    FileStatus.RECORDING: 1,
    FileStatus.RECORDED: 2,
    FileStatus.UPLOADING: 2,
    FileStatus.UPLOADED: 3,
    FileStatus.BACKED_UP: 4,
    FileStatus.FAILED: 5,
    FileStatus.EXPIRED: 5,
}


def signature(callback_secret: str, timestamp: str, nonce: str) -> str:
    """ZEGO's callback signature: sha1 of the sorted, concatenated [secret, timestamp, nonce]
    (see the spec's recording-status-callback page, "Source verification")."""
    joined = "".join(sorted([callback_secret, timestamp, nonce]))
    return hashlib.sha1(joined.encode(), usedforsecurity=False).hexdigest()


def body(
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
    kind = EVENTS.get(event)
    shots = [f for f in files if f.format is FileFormat.JPG]
    if event in SCREENSHOT_EVENTS and shots:
        # video-screenshot.mdx: one event 1 per screenshot, when its upload is done.
        kind, files = 1, shots
    elif kind == 1:
        if task.spec.screenshots:
            return None  # every screenshot had its own event 1
        files = [f for f in files if f.format is not FileFormat.JPG]
    if kind is None:
        return None
    if kind == 5 and task.end_reason in QUIT:
        kind = 2  # stopped by itself: an abnormal end in ZEGO's words
    detail: dict[str, Any] = dict(extra or {})
    if kind == 2:
        detail = {"quit_reason": QUIT.get(task.end_reason or "", 1001)}
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
                    "status": FILE_STATUS[f.status],
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
        "signature": signature(callback_secret, timestamp, nonce),
        "sequence": sequence,
        "detail": detail,
    }


class ZegoCallbacks:
    """A :class:`~cloudrec.core.callbacks.CallbackFormat`: numbered in the task's sequence,
    signed with its app's callback secret."""

    def body(
        self,
        uow: UnitOfWork,
        task: Task,
        event: str,
        files: list[RecordedFile],
        now: datetime,
        message_id: str,
        extra: dict[str, Any],
    ) -> dict[str, Any] | None:
        app = uow.apps.get(task.app_id)
        sequence = uow.delivery.callback_count(task.task_id)
        secret = app.callback_secret if app else ""
        return body(task, event, files, now, secret, sequence, extra)

    def sign(self, body: bytes, secret: str, now: datetime) -> tuple[bytes, dict[str, str]]:
        """Sent as stored (a signature of the dialect's own, if any, is in the body)."""
        return body, {}
