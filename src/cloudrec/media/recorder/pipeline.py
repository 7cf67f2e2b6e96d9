"""A task's media, one pipeline per recording mode, driven by the per-task worker.

The worker (:mod:`cloudrec.media.recorder.worker`) owns the task: its lease, its loop over the
task's row and room, its state, its end.  What the recording does with the room's streams is
its mode's :class:`Pipeline`: :class:`~cloudrec.media.recorder.singles.SinglePipeline` (a
recorder or snapshotter per stream session, remuxed) or
:class:`~cloudrec.media.recorder.mixpipe.MixPipeline` (one mixer composing them all).  Both
pull their streams with :func:`pull_url` and write under :func:`out_dir`.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

from cloudrec.config import Settings
from cloudrec.core.control import TaskControl
from cloudrec.core.errors import CloudrecError
from cloudrec.core.paths import check_parts, is_inside
from cloudrec.core.rooms import EMBEDDED, LiveStream
from cloudrec.core.tasks import Task, TrackType
from cloudrec.core.tokens import make_publish_token

# Ask the embedded ingest for a backlog so that the first file can start at the keyframe
# nearest the moment the recording was asked for, even if the worker starts late.
BACKLOG_MS = 8000
# Less free than this (256 KiB) on the spool's disk is a full disk.
DISK_FULL_BYTES = 256 << 10


def pull_url(stream: LiveStream, settings: Settings, backlog: bool, now: float) -> str:
    """Where a recorder pulls ``stream``: from the embedded ingest with the backlog asked for
    (``backlog``) and signed with the internal pull credential where there is one.

    The credential is checked at every (re)open of the pull, so it outlives the longest task;
    and it is the same for a whole window, so that the URL of a stream stays the same from one
    look at the room to the next (the mixer knows its inputs by URL)."""
    if stream.source != EMBEDDED:
        return stream.pull_url
    args = {"backlog_ms": str(BACKLOG_MS)} if backlog else {}
    if settings.pull_secret:
        window = max(settings.max_task_duration_s, 3600)
        expires = (int(now) // window + 2) * window  # at least a whole window ahead
        args["pull"] = make_publish_token(
            settings.pull_secret, stream.app_id, stream.room_id, stream.stream_id, expires
        )
    return f"{stream.pull_url}?{urlencode(args)}" if args else stream.pull_url


def out_dir(settings: Settings, task: Task) -> Path:
    """The task's spool directory (``spool_dir/app_id/task_id``) joined with its output
    prefix: refused unless it resolves inside the spool directory (issue 11; a symlink
    counts)."""
    app, task_id = check_parts((str(task.app_id), task.task_id), "task")
    home = settings.spool_dir / app / task_id
    out = home.joinpath(*task.spec.output_prefix)
    if not is_inside(str(home.resolve()), str(out.resolve())):
        raise CloudrecError.invalid_argument(f"{out} is outside the task's spool {home}")
    return out


def type_code(track: TrackType) -> str:
    """A file name's track code: ``A`` audio, ``V`` video, ``VA`` both."""
    return {TrackType.AUDIO: "A", TrackType.VIDEO: "V", TrackType.AUDIO_VIDEO: "VA"}[track]


def spool_free(settings: Settings) -> int:
    """Free bytes on the spool's disk (the data dir's before the spool exists)."""
    spool = settings.spool_dir
    try:
        return shutil.disk_usage(spool if spool.exists() else settings.data_dir).free
    except OSError:
        return DISK_FULL_BYTES  # cannot tell: not full on that account


def disk_full(error: str | None) -> bool:
    """Whether a recorder's or mixer's error is the spool disk being full (ENOSPC)."""
    if not error:
        return False
    return f"[Errno {errno.ENOSPC}]" in error or os.strerror(errno.ENOSPC) in error


class Pipeline:
    """One mode's recording of a task: the worker's loop hands it the room at every pass
    (:meth:`saw` when the room was read again, then :meth:`tick`), pauses and resumes it, and
    closes it at the end (:meth:`close`).  ``paused`` is the worker's: a pipeline starts what
    it starts paused while it is set."""

    def __init__(self, control: TaskControl, settings: Settings) -> None:
        self.control = control
        self.settings = settings
        self.paused = False

    def out_dir(self, task: Task) -> Path:
        return out_dir(self.settings, task)

    def pull_url(self, stream: LiveStream, backlog: bool) -> str:
        return pull_url(stream, self.settings, backlog, time.time())

    def saw(self, room: list[LiveStream]) -> None:
        """The room as read again (the worker reads it only when it may have moved)."""

    def tick(self, task: Task, room: list[LiveStream], now: float) -> list[LiveStream]:
        """One pass: start, stop and update what records the wanted streams of ``room``;
        returns the wanted streams that are live."""
        raise NotImplementedError

    def threads(self) -> list[threading.Thread]:
        """Every recorder thread started so far (running or not)."""
        raise NotImplementedError

    def stop(self, at: float) -> None:
        """Stop every recorder thread at ``at`` without waiting (the task is lost)."""
        raise NotImplementedError

    def set_paused(self, paused: bool, now: float) -> None:
        raise NotImplementedError

    def busy(self) -> bool:
        """Something records or is still writing (the room is not idle)."""
        raise NotImplementedError

    def wrote_media(self) -> bool:
        """Media has reached a file (the recording has started)."""
        raise NotImplementedError

    def errors(self) -> list[str | None]:
        """The recorder threads' errors so far (the worker looks for a full disk in them)."""
        raise NotImplementedError

    def stream_ids(self) -> set[str]:
        """The ids of every stream recorded so far."""
        raise NotImplementedError

    def gave_up(self) -> bool:
        """The recording cannot go on though its streams are live (a recorder that failed
        again and again)."""
        return False

    def close(self, stop_at: float) -> tuple[list[str], list[str]]:
        """Stop everything at ``stop_at`` and wait until each has written up to it and closed
        its files: what is still open after the wait, and the errors."""
        raise NotImplementedError

    def closed(self, errors: list[str]) -> list[str]:
        """The errors of the recording once closed (``errors``, from :meth:`close`): after
        :meth:`gave_up`, why first, and the files that failed marked incomplete."""
        return errors
