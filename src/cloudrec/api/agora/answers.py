"""What ``query`` and ``stop`` say of a task: ``serverResponse`` (query.mdx, stop.mdx).

``status`` (query.mdx): 1 "initialization complete" while the task waits for its first media,
5 "in progress" while it records (or is paused), 6 "stop requested" from the stop until its
files are closed, 7 "all components stopped" while they are uploaded.  An exited task (8, 20)
is never answered: it is 404, as Agora's is.
"""

from __future__ import annotations

from typing import Any

from cloudrec.core.tasks import (
    Desired,
    FileFormat,
    FileStatus,
    RecordedFile,
    RecordMode,
    Task,
    TaskState,
    TrackType,
)

TRACK_TYPES = {
    TrackType.AUDIO: "audio",
    TrackType.VIDEO: "video",
    TrackType.AUDIO_VIDEO: "audio_and_video",
}
LISTED = (FileFormat.HLS, FileFormat.MP4)  # "Name of the M3U8 or MP4 file"
NOT_PLAYABLE = (FileStatus.RECORDING, FileStatus.FAILED, FileStatus.EXPIRED)


def status(task: Task) -> int:
    if task.state is TaskState.UPLOADING:
        return 7
    if task.desired is Desired.STOPPED or task.state is TaskState.STOPPING:
        return 6
    if task.state is TaskState.INITIALISING:
        return 1
    return 5


def _entry(f: RecordedFile, mixed: bool) -> dict[str, Any]:
    return {
        "fileName": f.name,
        "trackType": TRACK_TYPES[f.track_type],
        "uid": "0" if mixed else (f.user_id or "0"),
        "mixedAllUser": mixed,
        "isPlayable": f.status not in NOT_PLAYABLE,
        "sliceStartTime": f.begin_ms // 1000,
    }


def file_list(task: Task, files: list[RecordedFile]) -> dict[str, Any]:
    """``fileListMode`` and ``fileList``; none for a screenshots-only task.  ``"string"`` (the
    M3U8's name) for a mix of HLS only, ``"json"`` otherwise (an individual recording has a
    file per user and track: a string cannot name them)."""
    if task.spec.screenshots:
        return {}
    mixed = task.spec.mode is RecordMode.MIXED
    listed = sorted((f for f in files if f.format in LISTED), key=lambda f: (f.begin_ms, f.name))
    if mixed and task.spec.formats == (FileFormat.HLS,):
        return {"fileListMode": "string", "fileList": listed[0].name if listed else ""}
    return {"fileListMode": "json", "fileList": [_entry(f, mixed) for f in listed]}


def query_response(task: Task, files: list[RecordedFile]) -> dict[str, Any]:
    answer: dict[str, Any] = {"status": status(task), **file_list(task, files)}
    if task.spec.mode is RecordMode.SINGLE:
        # "Recording start time, Unix timestamp in milliseconds. Only returned in individual
        # recording mode."  0 until the first media is written.
        started = task.started_at
        answer["sliceStartTime"] = int(started.timestamp() * 1000) if started else 0
    return answer


def uploading_status(task: Task, files: list[RecordedFile]) -> str:
    """ "uploaded" once every file is in the app's bucket, "backuped" once every file is
    delivered and some went to the backup store instead, "unknown" before."""
    if not task.state.terminal or not all(f.status.delivered for f in files):
        return "unknown"
    if all(f.status is FileStatus.UPLOADED for f in files):
        return "uploaded"
    if all(f.status in (FileStatus.UPLOADED, FileStatus.BACKED_UP) for f in files):
        return "backuped"
    return "unknown"


def stop_response(task: Task, files: list[RecordedFile]) -> dict[str, Any]:
    return {"uploadingStatus": uploading_status(task, files), **file_list(task, files)}
