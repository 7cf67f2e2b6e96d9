"""Agora's Notification Center (NCS) callbacks of Cloud Recording, for the tasks of this
dialect (issue 16): the envelope of ncs-request-header-body.mdx, the events of
ncs-event-types-cloud-recording.mdx that cloudrec has the meaning of, and the two signature
headers of ncs-signature-verification-python.mdx, keyed with the app's callback secret (the
project's NCS secret).  docs/agora.md, "Notifications", maps every event and says why the
others are never sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from cloudrec.api.agora.answers import LISTED, NOT_PLAYABLE, TRACK_TYPES
from cloudrec.core.callbacks import epoch_ms, nth_message_id
from cloudrec.core.ports import UnitOfWork
from cloudrec.core.tasks import (
    END_DISK_FULL,
    END_IDLE,
    END_RECORDER_FAILED,
    END_WORKER_DIED,
    FileStatus,
    RecordedFile,
    RecordMode,
    Task,
    TaskState,
)

PRODUCT_CLOUD_RECORDING = 3  # productId
# serviceType of the payload.
SERVICE_CLOUD_RECORDING = 0
SERVICE_RECORDER = 1
SERVICE_UPLOADER = 2
# eventType: (name, serviceType).
ERROR = 1
WARNING = 2
SESSION_EXIT = 11
SESSION_FAILOVER = 12
UPLOADED = 31
BACKUPED = 32
RECORDER_STARTED = 40
RECORDER_LEAVE = 41
EVENT_TYPES: dict[int, tuple[str, int]] = {
    ERROR: ("cloud_recording_error", SERVICE_CLOUD_RECORDING),
    WARNING: ("cloud_recording_warning", SERVICE_CLOUD_RECORDING),
    SESSION_EXIT: ("session_exit", SERVICE_CLOUD_RECORDING),
    SESSION_FAILOVER: ("session_failover", SERVICE_CLOUD_RECORDING),
    UPLOADED: ("uploaded", SERVICE_UPLOADER),
    BACKUPED: ("backuped", SERVICE_UPLOADER),
    RECORDER_STARTED: ("recorder_started", SERVICE_RECORDER),
    RECORDER_LEAVE: ("recorder_leave", SERVICE_RECORDER),
}
# cloud_recording_error / _warning: module 1 is the uploader.
MODULE_UPLOADER = 1
ERROR_UPLOAD_FAILED = 47  # "The recording file upload fails."
WARNING_TO_BACKUP = 32  # "re-uploads the slice file to Agora Cloud Backup" (ours: the backup store)
ERROR_LEVEL_MAJOR = 4
# recorder_leave's leaveCode: 4 LEAVE_CODE_NO_USERS when the channel stayed empty for
# maxIdleTime, 2 LEAVE_CODE_SIG for every other end (a stop, cloudrec's maximum time, a
# failure): the recorder was told to end, as Agora's is by a signal.
LEAVE_CODE_SIG = 2
LEAVE_CODE_NO_USERS = 4
# Ends after which session_exit says 1, "an abnormal exit".
ABNORMAL_ENDS = (END_WORKER_DIED, END_DISK_FULL, END_RECORDER_FAILED)
HEADER_SHA1 = "Agora-Signature"
HEADER_SHA256 = "Agora-Signature-V2"


def signatures(secret: str, body: bytes) -> dict[str, str]:
    """The two signature headers of a raw body: HMAC/SHA1 and HMAC/SHA256 keyed with the NCS
    secret, hex (ncs-signature-verification-python.mdx)."""
    key = secret.encode()
    return {
        HEADER_SHA1: hmac.new(key, body, hashlib.sha1).hexdigest(),
        HEADER_SHA256: hmac.new(key, body, hashlib.sha256).hexdigest(),
    }


def envelope(
    task: Task,
    event_type: int,
    details: dict[str, Any],
    notice_id: str,
    sequence: int,
    now: datetime,
) -> dict[str, Any]:
    """One notification: ``noticeId``, ``productId``, ``eventType``, ``notifyMs`` (``now``
    here; each attempt sends its own, :meth:`AgoraCallbacks.sign`), ``sid``, and ``payload``
    with the recording's ``cname``, recorder ``uid``, ``sid``, ``sequence`` (the task's
    notifications from 0), ``sendts`` (when the event happened, ms), ``serviceType`` and
    ``details`` (``msgName`` first)."""
    name, service = EVENT_TYPES[event_type]
    return {
        "noticeId": notice_id,
        "productId": PRODUCT_CLOUD_RECORDING,
        "eventType": event_type,
        "notifyMs": epoch_ms(now),
        "sid": task.task_id,
        "payload": {
            "cname": str(task.spec.extra.get("cname", task.spec.room_id)),
            "uid": str(task.spec.extra.get("uid", "")),
            "sid": task.task_id,
            "sequence": sequence,
            "sendts": epoch_ms(now),
            "serviceType": service,
            "details": {"msgName": name, **details},
        },
    }


def file_list(task: Task, files: list[RecordedFile]) -> list[dict[str, Any]]:
    """``uploaded``/``backuped``'s ``fileList``: every M3U8 and MP4 file, as ``query`` lists
    them but for ``sliceStartTime``, which this document gives in milliseconds."""
    mixed = task.spec.mode is RecordMode.MIXED
    listed = sorted((f for f in files if f.format in LISTED), key=lambda f: (f.begin_ms, f.name))
    return [
        {
            "fileName": f.name,
            "trackType": TRACK_TYPES[f.track_type],
            "uid": "0" if mixed else (f.user_id or "0"),
            "mixedAllUser": mixed,
            "isPlayable": f.status not in NOT_PLAYABLE,
            "sliceStartTime": f.begin_ms,
        }
        for f in listed
    ]


def _exit_status(task: Task, files: list[RecordedFile]) -> int:
    """0 "a normal exit ... after the recording ends and the recorded files are uploaded",
    1 otherwise."""
    delivered = all(f.status in (FileStatus.UPLOADED, FileStatus.BACKED_UP) for f in files)
    normal = task.state is not TaskState.FAILED and task.end_reason not in ABNORMAL_ENDS
    return 0 if delivered and normal else 1


def _upload_done(task: Task, files: list[RecordedFile]) -> tuple[int, dict[str, Any]] | None:
    """31 when every file is in the bucket, 32 when every file is delivered and some went to
    the backup store; None when a file was given up on (its event 1 said so)."""
    if all(f.status is FileStatus.UPLOADED for f in files):
        kind = UPLOADED
    elif all(f.status in (FileStatus.UPLOADED, FileStatus.BACKED_UP) for f in files):
        kind = BACKUPED
    else:
        return None
    return kind, {"status": 0, "fileList": file_list(task, files)}


def events(
    task: Task, event: str, files: list[RecordedFile], extra: dict[str, Any]
) -> list[tuple[int, dict[str, Any]]]:
    """The NCS events (type, details but ``msgName``) for one of cloudrec's events, in the
    order they are sent; none for an event this dialect has no words for."""
    if event == "task_started":
        return [(RECORDER_STARTED, {"status": 0})]
    if event == "task_stopped":
        code = LEAVE_CODE_NO_USERS if task.end_reason == END_IDLE else LEAVE_CODE_SIG
        out = [(RECORDER_LEAVE, {"leaveCode": code})]
        if task.state is TaskState.COMPLETED:  # nothing to upload: the service exits now
            out.append((SESSION_EXIT, {"exitStatus": _exit_status(task, files)}))
        return out
    if event == "task_completed":  # every file delivered (or given up on)
        done = _upload_done(task, files)
        exit_ = (SESSION_EXIT, {"exitStatus": _exit_status(task, files)})
        return [done, exit_] if done else [exit_]
    if event == "task_failed":  # its worker kept dying: the reconciler gave the task up
        return [(SESSION_EXIT, {"exitStatus": 1})]
    if event == "task_failover":
        # The service went on on another machine.  Agora's recorder rejoins with a random
        # UID; cloudrec's joins nothing, and keeps its own.
        return [(SESSION_FAILOVER, {"newUid": int(task.spec.extra.get("uid") or 0)})]
    if event == "file_backed_up":
        return [(WARNING, {"module": MODULE_UPLOADER, "warnCode": WARNING_TO_BACKUP})]
    if event == "file_upload_failed":
        names = ", ".join(f.name for f in files)
        details = {
            "module": MODULE_UPLOADER,
            "errorLevel": ERROR_LEVEL_MAJOR,
            "errorCode": ERROR_UPLOAD_FAILED,
            "stat": 1,
            "errorMsg": f"the upload of {names} failed: given up on",
        }
        return [(ERROR, details)]
    return []


class AgoraCallbacks:
    """A :class:`~cloudrec.core.callbacks.CallbackFormat`: the task's NCS notifications,
    numbered in its ``sequence`` (as the task's callbacks are stored: two processes storing
    one each at the same moment may give both the same number)."""

    def body(
        self,
        uow: UnitOfWork,
        task: Task,
        event: str,
        files: list[RecordedFile],
        now: datetime,
        message_id: str,
        extra: dict[str, Any],
    ) -> list[dict[str, Any]] | None:
        made = events(task, event, files, extra)
        if not made:
            return None
        first = uow.delivery.callback_count(task.task_id)
        return [
            envelope(task, kind, details, nth_message_id(message_id, n), first + n, now)
            for n, (kind, details) in enumerate(made)
        ]

    def sign(self, body: bytes, secret: str, now: datetime) -> tuple[bytes, dict[str, str]]:
        """``notifyMs`` is the attempt's time ("updated when NCS resends"); the signatures are
        over the exact bytes sent."""
        data = json.loads(body)
        data["notifyMs"] = epoch_ms(now)
        sent = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        return sent, signatures(secret, sent)
