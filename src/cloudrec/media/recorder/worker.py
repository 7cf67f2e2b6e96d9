"""The per-task worker (``cloudrec run-task TASK_ID``): reconcile one task with its row.

Every ``RECONCILE_S`` the worker looks at its task's watch (one small read: the task's version,
bumped by every change it must see, and its room's live set), reads the task and the room
directory again when that moved, starts a :class:`StreamRecorder` for each wanted stream
session that is live and not yet recorded, and stops when asked, when the room has been empty
for the idle timeout, or when the maximum recording time is reached.  A stream that leaves and
comes back is a new session and so a new file.

Screenshots (``FileFormat.JPG``, no video or audio file): a :class:`StreamSnapshotter` per
stream session instead of a recorder, or, for a mix, the mixer's composed pictures every
``snapshot_interval_s``; a mix also takes one per TakeSnapshot request (the task's
``snapshot_requests`` counter).  Each JPG is a file of the task, delivered on its own.

A sound wave (``spec.sound_wave``) is a file of the task like the recordings: a single
stream's recorder measures its own sound; for a mix, the mixer hands each input's sound per
output frame to :meth:`TaskWorker._measure`.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import av
import numpy as np

from cloudrec.config import Settings
from cloudrec.core.control import HEARTBEAT_S, LeaseLostError, TaskControl
from cloudrec.core.errors import CloudrecError
from cloudrec.core.mixing import MixSpec, assign_views
from cloudrec.core.paths import check_parts, is_inside
from cloudrec.core.rooms import EMBEDDED, LiveStream
from cloudrec.core.tasks import (
    END_DISK_FULL,
    END_IDLE,
    END_MAX_DURATION,
    END_RECORDER_FAILED,
    END_STOPPED,
    Desired,
    FileFormat,
    FileStatus,
    Media,
    RecordedFile,
    RecordingSpec,
    RecordMode,
    SoundWaveKey,
    Task,
    TaskState,
    TrackType,
    file_stamp,
)
from cloudrec.core.tokens import make_publish_token
from cloudrec.media.compositor.overlay import decode_image
from cloudrec.media.recorder.concat import Part, compatible, concatenate
from cloudrec.media.recorder.mixencode import MixOutput
from cloudrec.media.recorder.mixer import Mixer, SnapshotTaken
from cloudrec.media.recorder.remux import RecorderPlan, StreamRecorder, probe_file
from cloudrec.media.recorder.sei import begin_timestamp
from cloudrec.media.recorder.snapshots import (
    SnapshotPlan,
    StreamSnapshotter,
    jpg_file,
    write_jpeg,
)
from cloudrec.media.recorder.soundwave import SoundWave
from cloudrec.outbound import OutboundPolicy, fetch

log = logging.getLogger("cloudrec.worker")

RECONCILE_S = 0.25
# After a stop, how long the recorders may take to write up to the stop and close their files
# (a publisher that stalls holds a read up to the recorder's read timeout), and the mixer to
# encode up to the stop when it runs slower than real time.  A file still open after that is
# left to the reconciler, which finalises it once this worker has exited.
STOP_WAIT_S = 30.0
MIX_STOP_WAIT_S = 120.0
# Less free than this (256 KiB) on the spool's disk is a full disk.  Its free space is looked
# at every DISK_CHECK_S while more than DISK_NEAR_BYTES (64 MiB) is free, every tick below
# that (a recorder's ENOSPC is seen at once either way).
DISK_FULL_BYTES = 256 << 10
DISK_CHECK_S = 2.0
DISK_NEAR_BYTES = 64 << 20
# Recorders started again for one stream session that ended with an error while still live.
RECORDER_RESTARTS = 3
# Reads of the task in a row that may fail (the database locked or restarting) before the
# worker gives up; the heartbeat keeps the lease meanwhile, or loses it and the worker stops.
POLL_FAILURES = 60
# Ask the embedded ingest for a backlog so that the first file can start at the keyframe
# nearest the moment the recording was asked for, even if the worker starts late.
BACKLOG_MS = 8000


@dataclass
class _MixWave:
    wave: SoundWave
    file_id: int
    beside: int  # the file id of the recording it is named after


@dataclass
class _Session:
    recorder: StreamRecorder | StreamSnapshotter
    stream: LiveStream
    reported: bool = field(default=False)
    restarts: int = 0  # recorders started again after one ended with an error, live

    def failed_live(self, live: bool) -> bool:
        """The recorder gave up with an error while its stream session is still live (not
        for a full disk: that ends the task)."""
        r = self.recorder
        return (
            live
            and isinstance(r, StreamRecorder)
            and not r.is_alive()
            and r.ended_by == "error"
            and not disk_full(r.error)
        )

    def restartable(self, live: bool) -> bool:
        """Such a recorder gets a new one, a few times."""
        return self.failed_live(live) and self.restarts < RECORDER_RESTARTS

    def gave_up(self, live: bool) -> bool:
        """Failed again with its restarts spent: the recording of that stream cannot go on
        (the task ends, saying so)."""
        return self.failed_live(live) and self.restarts >= RECORDER_RESTARTS


def _stamp(unix_ms: int) -> str:
    return file_stamp(datetime.fromtimestamp(unix_ms / 1000, UTC))


# Formats whose sessions can be joined into one file (HLS names its segments by its
# playlist; mp3/ogg are re-encoded: each session stays a file of its own).
JOINABLE = (FileFormat.MP4, FileFormat.FLV, FileFormat.AAC)


@dataclass
class _Held:
    file_id: int
    stream_id: str
    format: FileFormat
    track: TrackType
    path: Path
    begin_ms: int
    fields: dict[str, object]


def _ms_field(fields: dict[str, object], name: str) -> int:
    value = fields.get(name)
    return value if isinstance(value, int) else 0


def _type_code(track: TrackType) -> str:
    return {TrackType.AUDIO: "A", TrackType.VIDEO: "V", TrackType.AUDIO_VIDEO: "VA"}[track]


def _layout_key(stream: LiveStream, by_stream: bool) -> str:
    """The mixer key of a stream in a template or ZEGO layout: per stream (the key a view
    naming the stream has) or per user."""
    if by_stream:
        return f"{stream.room_id}/s:{stream.stream_id}"
    return f"{stream.room_id}/{stream.user_id}"


def large_region_key(mix: MixSpec, room_id: str, keys_by_stream: dict[str, str]) -> str | None:
    """The mixer key of the stream that ``mix.main_stream_id`` names, for the large region of
    a ZEGO layout, from ``keys_by_stream`` (stream id → mixer key, as ``_mix`` keys layout
    inputs, for every stream seen: one that left keeps its key, and so its region if FillBlank
    keeps it).  None when none is named (the first to join goes there); a stream never seen
    gets a key no input has (``room/s:stream``, the key of a view named by stream), so the
    region shows the background, as ZEGO says for MixMaxResolutionStreamId."""
    if mix.main_user_id is not None:
        return f"{room_id}/{mix.main_user_id}"  # the key of a user's stream (_layout_key)
    if mix.main_stream_id is None:
        return None
    return keys_by_stream.get(mix.main_stream_id, f"{room_id}/s:{mix.main_stream_id}")


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


class Heartbeat(threading.Thread):
    """Renews the worker's lease every ``HEARTBEAT_S`` on a thread of its own, so that a
    worker busy closing its files (or waiting for a slow database) keeps its task; sets
    ``lost`` once the task is no longer this attempt's.  A watchdog too: while the worker's
    loop has not ticked for ``STALL_S`` (120 s; and it is not closing its files), the lease is left
    to run out, so that a worker stuck for good is replaced rather than kept alive."""

    # Longer than anything the loop waits on by design: fetching a mix's pictures may take
    # the outbound total timeout (60 s) plus a read.
    STALL_S = 120.0

    def __init__(self, control: TaskControl) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.control = control
        self.lost = threading.Event()
        self._stop_event = threading.Event()
        self.ticked = time.monotonic()  # the worker's loop, each pass
        self.closing = False  # the worker is closing its files: no loop to tick

    def run(self) -> None:
        while not self._stop_event.wait(HEARTBEAT_S):
            if not self.closing and time.monotonic() - self.ticked > self.STALL_S:
                log.error("worker.stalled", extra={"fields": {"task_id": self.control.task_id}})
                continue
            try:
                self.control.renew()
            except LeaseLostError:
                self.lost.set()
                return
            except Exception:  # a slow or locked database: try again next beat
                log.exception("worker.heartbeat_failed")

    def stop(self) -> None:
        self._stop_event.set()


class TaskWorker:
    def __init__(self, control: TaskControl, settings: Settings) -> None:
        self.control = control
        self.settings = settings
        self.sessions: dict[tuple[str, str], _Session] = {}  # (stream id, started) -> session
        self.recording_started = False
        self.mixer: Mixer | None = None
        self.paused = False
        self.mixed_files: list[int] = []
        self.image_urls: set[str] = set()  # fetched (or tried) for the mix
        self.snapshots_asked = 0  # of the task's snapshot_requests, handed to the mixer
        # Unix s of the next screenshot of a screenshots-only mix; None until the inputs
        # have shown their pictures.
        self.next_mix_shot: float | None = None
        self.stream_keys: dict[str, str] = {}  # stream id -> mixer key, of every stream seen
        self.held: list[_Held] = []  # files of streams that may come back (spec.rejoin)
        self.missing_told: set[str] = set()  # RecordStreamList streams said to be missing
        # Mixed mode: each input's stream (by the mixer's input key), and the sound wave with
        # its file id once the mix's file is open.
        self.mix_streams: dict[str, LiveStream] = {}
        self.mix_wave: _MixWave | None = None
        self.terminated = threading.Event()  # SIGTERM: close the files, give the task up
        self.heartbeat = Heartbeat(control)
        self.written: dict[int, tuple[Path, FileFormat]] = {}  # file id -> path, format
        self.shot_error: str | None = None  # the last screenshot of the mix that failed
        self.live_sessions: set[tuple[str, str]] = set()  # (stream id, started), last poll
        # Sessions stopped because the task no longer wants their stream (its users changed):
        # recorded anew, in a new file, if it is wanted again.
        self.unwanted: set[tuple[str, str]] = set()
        # Live sessions the task did not want at some tick, and when (Unix s) each came to be
        # wanted after that: its file begins there, not in the backlog before it.
        self.seen_unwanted: set[tuple[str, str]] = set()
        self.wanted_at: dict[tuple[str, str], float] = {}
        self.session_files: dict[tuple[str, str], list[int]] = {}  # each session's file ids
        self.failed: _Session | None = None  # the session whose recorder gave up for good

    def spool(self, task: Task) -> Path:
        app, task_id = check_parts((str(task.app_id), task.task_id), "task")
        return self.settings.spool_dir / app / task_id

    def pull_url(self, stream: LiveStream, backlog: bool) -> str:
        return pull_url(stream, self.settings, backlog, time.time())

    def out_dir(self, task: Task) -> Path:
        """The task's spool directory joined with its output prefix: refused unless it
        resolves inside ``spool_dir/app_id/task_id`` (issue 11; a symlink counts)."""
        home = self.spool(task)
        out = home.joinpath(*task.spec.output_prefix)
        if not is_inside(str(home.resolve()), str(out.resolve())):
            raise CloudrecError.invalid_argument(f"{out} is outside the task's spool {home}")
        return out

    def run(self) -> TaskState | None:
        """Own the task for this attempt until the recording ends (the state it ended in),
        or until the task is lost or given up (None)."""
        task = self.control.claim()
        if task is None:
            log.info(
                "worker.superseded",
                extra={
                    "fields": {"task_id": self.control.task_id, "attempt": self.control.attempt}
                },
            )
            return None
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.terminated.set())
        self.heartbeat.start()
        try:
            return self._run(task)
        except LeaseLostError:
            log.warning("worker.lease_lost", extra={"fields": {"task_id": task.task_id}})
            self._abandon()
            return None
        finally:
            self.heartbeat.stop()

    def lease_lost(self) -> None:
        """The task is no longer this attempt's (told by a recorder host's service): the
        loop stops at its next pass, as when the heartbeat finds the lease lost."""
        self.heartbeat.lost.set()

    def stop_threads(self, wait_s: float) -> int:
        """Stop every recorder and the mixer now and wait up to ``wait_s`` for them; how many
        are still running (a recorder host calls this when a worker is over)."""
        self._abandon()
        deadline = time.monotonic() + wait_s
        threads: list[threading.Thread] = [s.recorder for s in self.sessions.values()]
        if self.mixer is not None:
            threads.append(self.mixer)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return sum(t.is_alive() for t in threads)

    def _abandon(self) -> None:
        """The task is another attempt's now: stop writing (the files stay as they are; the
        reconciler has finalised them)."""
        now = time.time()
        for s in self.sessions.values():
            s.recorder.stop(now)
        if self.mixer is not None:
            self.mixer.stop(now)

    def _run(self, task: Task) -> TaskState | None:
        spec = task.spec
        idle_timeout = spec.idle_timeout_s or self.settings.idle_timeout_s
        max_duration = spec.max_duration_s or self.settings.max_task_duration_s
        idle_since: float | None = None
        empty_notices = 0
        notice_s = self.settings.room_notice_s
        log.info("worker.started", extra={"fields": {"task_id": task.task_id}})
        reason = END_STOPPED
        if self.control.attempt > 1:
            self._take_over(task)
        poll_failures = 0
        room: list[LiveStream] | None = None  # as last read; read again when it may have moved
        disk_check_at = 0.0  # time.time() of the next look at the spool's free space
        while True:
            now = time.time()
            self.heartbeat.ticked = time.monotonic()
            if self.heartbeat.lost.is_set():
                raise LeaseLostError(f"task {task.task_id}: lease lost")
            try:
                if room is None or self.control.changed(spec.room_id):
                    task, room = self.control.poll(spec.room_id)
                    self.live_sessions = {(s.stream_id, s.started_at.isoformat()) for s in room}
                poll_failures = 0
            except CloudrecError:
                raise
            except Exception:  # a locked or restarting database: the recorders go on
                poll_failures += 1
                log.warning("worker.poll_failed", exc_info=True)
                if poll_failures > POLL_FAILURES:
                    raise
                time.sleep(1.0)
                continue
            if self.terminated.is_set() and task.desired is not Desired.STOPPED:
                self._give_up(now)
                return None
            if now >= disk_check_at:
                free = spool_free(self.settings)
                disk_check_at = now + (DISK_CHECK_S if free > DISK_NEAR_BYTES else 0.0)
                if free < DISK_FULL_BYTES:
                    reason, stop_at = END_DISK_FULL, now
                    break
            if self._disk_full():
                reason, stop_at = END_DISK_FULL, now
                break
            self.failed = next(
                (s for k, s in self.sessions.items() if s.gave_up(k in self.live_sessions)), None
            )
            if self.failed is not None:
                reason, stop_at = END_RECORDER_FAILED, now
                break
            if task.desired is Desired.STOPPED:
                stop_at = task.stop_requested_at.timestamp() if task.stop_requested_at else now
                break
            if (task.desired is Desired.PAUSED) != self.paused:
                self._set_paused(task.desired is Desired.PAUSED)
            if now - task.created_at.timestamp() >= max_duration:
                reason, stop_at = END_MAX_DURATION, task.created_at.timestamp() + max_duration
                break
            self._reap()
            # The task's spec as last read: its users may change while it records.
            live = [s for s in room if task.spec.wants(s.user_id, s.stream_id)]
            if spec.mode is RecordMode.MIXED:
                live = self._mix(task, room)
                self._mix_screenshots(task, now)
            else:
                self._drop_unwanted(task.spec, room, now)
                for stream in live:
                    key = (stream.stream_id, stream.started_at.isoformat())
                    old = self.sessions.get(key)
                    if old is not None and key in self.unwanted and not old.recorder.is_alive():
                        self.unwanted.discard(key)  # wanted again: a new file from now on
                        old = None
                    if old is not None and old.restartable(key in self.live_sessions):
                        self._start_recorder(task, stream, key)
                        self.sessions[key].restarts = old.restarts + 1
                        self.control.event(
                            "recorder_restarted", f"{stream.stream_id}: after {old.recorder.error}"
                        )
                    elif old is None:
                        if spec.screenshots:
                            self._start_snapshotter(task, stream, key)
                        else:
                            self._start_recorder(task, stream, key)
            self._mark_recording()
            busy = (
                any(s.recorder.is_alive() for s in self.sessions.values())
                or bool(live)
                or (self.mixer is not None and self.mixer.busy())
            )
            if busy:
                idle_since, empty_notices = None, 0
            else:
                idle_since = idle_since or now
                if now - idle_since >= idle_timeout:
                    reason, stop_at = END_IDLE, now
                    break
                if now - idle_since >= notice_s * (empty_notices + 1):
                    empty_notices += 1
                    self.control.notify("room_empty", f"no stream for {now - idle_since:.0f} s")
            self._missing_streams(task, room, now, notice_s)
            time.sleep(RECONCILE_S)
        return self._finish(reason, stop_at)

    def _missing_streams(
        self, task: Task, room: list[LiveStream], now: float, notice_s: float
    ) -> None:
        """A RecordStreamList stream not live ``notice_s`` after the start: said once."""
        if now - task.created_at.timestamp() < notice_s:
            return
        live = {s.stream_id for s in room}
        seen = {stream_id for stream_id, _ in self.sessions}
        seen |= {s.stream_id for s in self.mix_streams.values()}
        for stream_id in task.spec.stream_ids:
            if stream_id not in live and stream_id not in seen | self.missing_told:
                self.missing_told.add(stream_id)
                self.control.notify("stream_missing", stream_id, {"stream_id": stream_id})

    def _start_recorder(self, task: Task, stream: LiveStream, key: tuple[str, str]) -> None:
        spec = task.spec
        base = f"{task.task_id}_{spec.room_id}_{stream.user_id}_{stream.stream_id}"
        prefix = "/".join(spec.output_prefix)

        paths: dict[int, Path] = {}
        opened: dict[int, tuple[FileFormat, TrackType, int]] = {}

        def name(fmt: FileFormat, track: TrackType, begin_ms: int) -> str:
            stamp = file_stamp(datetime.fromtimestamp(begin_ms / 1000, UTC))
            return f"{base}_{_type_code(track)}_{stamp}.{fmt.extension}"

        def on_open(
            fmt: FileFormat,
            path: Path,
            track: TrackType,
            begin_ms: int,
            size: tuple[int, int] | None,
        ) -> int:
            file_id = self.control.file_opened(
                RecordedFile(
                    task_id=task.task_id,
                    name=f"{prefix}/{path.name}" if prefix else path.name,
                    path=str(path),
                    format=fmt,
                    status=FileStatus.RECORDING,
                    stream_id=stream.stream_id,
                    user_id=stream.user_id,
                    track_type=track,
                    begin_ms=begin_ms,
                    width=size[0] if size else None,
                    height=size[1] if size else None,
                )
            )
            paths[file_id] = path
            opened[file_id] = (fmt, track, begin_ms)
            self.session_files.setdefault(key, []).append(file_id)
            self.written[file_id] = (path, fmt)
            return file_id

        def on_close(file_id: int, fields: dict[str, object]) -> None:
            path = paths.pop(file_id, None)
            session = self.sessions.get(key)
            if path is not None and session is not None and disk_full(session.recorder.error):
                # A write cut short by the full disk: back to what a player reads, before the
                # file is reported closed (and so before delivery can take it).
                fields = {**fields, **probe_file(path, opened[file_id][0]), "complete": False}
            if path is not None and path.suffix in (".mp4", ".flv", ".m3u8"):
                # ZEGO CustomBeginTimestamp: the publisher's time in the stream's SEI.
                fields = {**fields, "custom_begin_ms": begin_timestamp(path)}
            fmt, track, begin_ms = opened.pop(file_id)
            if path is not None and spec.rejoin and fmt in JOINABLE:
                # Finished when the task ends, with the stream's later sessions in it.
                self.held.append(
                    _Held(file_id, stream.stream_id, fmt, track, path, begin_ms, fields)
                )
                return
            self.control.file_closed(file_id, str(file_id), **fields)

        url = self.pull_url(stream, backlog=True)
        wave_key = spec.sound_wave
        who = stream.stream_id if wave_key is SoundWaveKey.STREAM else stream.user_id
        plan = RecorderPlan(
            url=url,
            media=spec.media_of(stream.stream_id),
            formats=spec.formats,
            directory=self.out_dir(task),
            name=name,
            start_at=self._start_at(task, stream),
            hls_segment_s=spec.hls_segment_s,
            sound_wave=None if wave_key is None else (wave_key.value, who),
            # A recorder retrying after an error asks first whether its session is still
            # live: never the stream's next session, which has a recorder of its own.
            still_live=lambda: key in self.live_sessions,
        )
        recorder = StreamRecorder(plan, on_open, on_close, name=f"rec-{stream.stream_id}")
        if self.paused:
            recorder.pause(time.time())
        recorder.start()
        self.sessions[key] = _Session(recorder, stream)
        self.control.event("stream_recording", f"{stream.user_id}/{stream.stream_id}")

    def _take_over(self, task: Task) -> None:
        """A later attempt: line the task's state up with what is asked (an earlier attempt
        may have died while a pause or resume was on its way), without the start callbacks
        the first attempt sent."""
        want_paused = task.desired is Desired.PAUSED
        self.paused = want_paused
        if want_paused and task.state is not TaskState.PAUSED:
            self.control.set_state(TaskState.PAUSED, "paused", callback="task_paused")
        elif not want_paused and task.state is TaskState.PAUSED:
            self.control.set_state(TaskState.RECORDING, "resumed", callback="task_resumed")

    def _start_at(self, task: Task, stream: LiveStream) -> float:
        """Where a stream's file begins: when the recording was asked for or the stream came,
        for a later attempt where the previous one was last known to record (its parts meet
        there, from the ingest's backlog), and for a stream the task came to want while it
        was live (its users changed) when the worker saw that."""
        moments = [task.created_at, stream.started_at]
        if task.resume_at is not None:
            moments.append(task.resume_at)
        begin = max(m.timestamp() for m in moments)
        return max(begin, self.wanted_at.get((stream.stream_id, stream.started_at.isoformat()), 0))

    def _start_snapshotter(self, task: Task, stream: LiveStream, key: tuple[str, str]) -> None:
        """Screenshots only (jpg): a JPG of the stream every ``snapshot_interval_s``, from the
        moment the recording was asked for (or the stream came)."""
        spec = task.spec
        base = f"{task.task_id}_{spec.room_id}_{stream.user_id}_{stream.stream_id}"

        def on_shot(path: Path, begin_ms: int, size: tuple[int, int], nbytes: int) -> int:
            file = jpg_file(task, path, stream.stream_id, stream.user_id, begin_ms, size, nbytes)
            return self.control.file_written(file)

        url = self.pull_url(stream, backlog=True)
        plan = SnapshotPlan(
            url=url,
            directory=self.out_dir(task),
            name=lambda begin_ms: f"{base}_V_{_stamp(begin_ms)}.jpg",
            start_at=self._start_at(task, stream),
            interval_s=spec.snapshot_interval_s,
        )
        shooter = StreamSnapshotter(plan, on_shot, name=f"shots-{stream.stream_id}")
        if self.paused:
            shooter.pause(time.time())
        shooter.start()
        self.sessions[key] = _Session(shooter, stream)
        self.control.event("stream_screenshots", f"{stream.user_id}/{stream.stream_id}")

    def _set_paused(self, paused: bool) -> None:
        """Pause or resume every recorder (and the mixer): one file each, the paused span
        left out."""
        self.paused = paused
        now = time.time()
        for session in self.sessions.values():
            if paused:
                session.recorder.pause(now)
            else:
                session.recorder.resume(now)
        if self.mixer is not None:
            self.mixer.pause() if paused else self.mixer.resume()
        if paused:
            self.control.set_state(TaskState.PAUSED, "paused", callback="task_paused")
        else:
            self.control.set_state(TaskState.RECORDING, "resumed", callback="task_resumed")

    def _mix(self, task: Task, room: list[LiveStream]) -> list[LiveStream]:
        """Mixed mode: keep the mixer's inputs and layout in step with the task; return the
        wanted streams that are live."""
        assert task.spec.mix is not None
        mix = MixSpec.from_json(task.spec.mix)
        main_key = None
        if mix.template_id is not None or mix.auto_layout is not None:
            wanted = [s for s in room if task.spec.wants(s.user_id, s.stream_id)]
            by_stream = mix.by_stream
            shown = {_layout_key(s, by_stream): s for s in wanted}
            self.stream_keys.update({s.stream_id: _layout_key(s, by_stream) for s in wanted})
            main_key = large_region_key(mix, task.spec.room_id, self.stream_keys)
        else:
            rooms = {i.room_id for i in mix.inputs} - {task.spec.room_id}
            others = [s for r in sorted(rooms) for s in self.control.room(task.app_id, r)]
            shown = assign_views(mix.inputs, [*room, *others])
            wanted = list(shown.values())
        urls = {key: self.pull_url(s, backlog=False) for key, s in shown.items()}
        media = {key: task.spec.media_of(s.stream_id) for key, s in shown.items()}
        if not mix.media.has_video:  # a sound-only mix: no picture to decode
            media = {k: Media.AUDIO if m.has_audio else m for k, m in media.items()}
        # Merged, not replaced: an input that left may still be in the mixer's next frame.
        self.mix_streams = {**self.mix_streams, **shown}
        if self.mixer is None:
            if not wanted and not mix.always:
                return wanted
            self.mixer = self._start_mixer(task, mix)
        elif mix.image_urls() - self.image_urls:
            self.mixer.add_images(self._fetch_images(mix))
        self.mixer.update(mix, urls, main_key, media)
        return wanted

    def _mix_screenshots(self, task: Task, now: float) -> None:
        """Hand the mixer one screenshot per TakeSnapshot request, and (screenshots-only
        mixes) one every ``snapshot_interval_s``, once the inputs have shown their pictures
        (requests wait until then: the API takes them only while the task mixes)."""
        if self.mixer is None:
            return
        if self.next_mix_shot is None:
            if not self.mixer.pictured():
                return
            self.next_mix_shot = now
        for _ in range(task.snapshot_requests - self.snapshots_asked):
            self.mixer.snapshot(self._mix_shot(task))
        self.snapshots_asked = max(self.snapshots_asked, task.snapshot_requests)
        if task.spec.screenshots and not self.paused and now >= self.next_mix_shot:
            self.mixer.snapshot(self._mix_shot(task))
            while self.next_mix_shot <= now:
                self.next_mix_shot += task.spec.snapshot_interval_s

    def _mix_shot(self, task: Task) -> SnapshotTaken:
        """Writes a composed picture as a JPG of the task (on the mixer's thread)."""
        spec = task.spec
        mix = MixSpec.from_json(spec.mix or {})
        mix_id = mix.output_id

        def taken(rgb: Any, when: datetime) -> None:
            name = f"{task.task_id}_{spec.room_id}_{mix_id}_V_{file_stamp(when)}.jpg"
            path = self.out_dir(task).joinpath(name)
            try:
                nbytes = write_jpeg(rgb, path)
            except (OSError, ValueError) as exc:
                self.shot_error = f"{type(exc).__name__}: {exc}"  # a full disk ends the task
                self.control.event("screenshot_failed", f"{name}: {exc}")
                return
            height, width = rgb.shape[:2]
            begin_ms = int(when.timestamp() * 1000)
            file = jpg_file(task, path, mix_id, mix_id, begin_ms, (width, height), nbytes)
            self.mixed_files.append(self.control.file_written(file))

        return taken

    def _start_mixer(self, task: Task, mix: MixSpec) -> Mixer:
        spec = task.spec
        prefix = "/".join(spec.output_prefix)
        tracks = {
            Media.AUDIO_VIDEO: [TrackType.AUDIO_VIDEO],
            Media.VIDEO: [TrackType.VIDEO],
            Media.AUDIO: [TrackType.AUDIO],
            Media.SEPARATE: [TrackType.VIDEO, TrackType.AUDIO],
        }[mix.media]
        stamp = file_stamp(datetime.now(UTC))
        mix_id = mix.output_id
        outputs = []
        for fmt in spec.formats:
            if fmt is FileFormat.JPG:
                continue  # screenshots are taken from the composed pictures, no file written
            for t in [TrackType.AUDIO] if fmt.audio_only else tracks:
                name = (
                    f"{task.task_id}_{spec.room_id}_{mix_id}_{_type_code(t)}_{stamp}"
                    f".{fmt.extension}"
                )
                path = self.out_dir(task).joinpath(name)
                outputs.append(MixOutput(path, fmt, t))

        # The sound wave is named after the first file with sound in it.
        wave_base = next((o for o in outputs if o.track is not TrackType.VIDEO), None)
        wave_key = spec.sound_wave

        def opened(path: Path, fmt: FileFormat, track: TrackType, begin_ms: int) -> int:
            file_id = self.control.file_opened(
                RecordedFile(
                    task_id=task.task_id,
                    name=f"{prefix}/{path.name}" if prefix else path.name,
                    path=str(path),
                    format=fmt,
                    status=FileStatus.RECORDING,
                    stream_id=mix_id,
                    user_id=mix_id,
                    track_type=track,
                    begin_ms=begin_ms,
                    width=mix.width if track is not TrackType.AUDIO else None,
                    height=mix.height if track is not TrackType.AUDIO else None,
                )
            )
            self.mixed_files.append(file_id)
            self.written[file_id] = (path, fmt)
            return file_id

        def on_open(out: MixOutput, begin_ms: int) -> int:
            file_id = opened(out.path, out.format, out.track, begin_ms)
            if wave_key is not None and out is wave_base:
                path = out.path.with_suffix(".sw")
                wave_id = opened(path, FileFormat.SOUND_WAVE, TrackType.AUDIO, begin_ms)
                self.mix_wave = _MixWave(SoundWave(path, wave_key.value), wave_id, file_id)
            return file_id

        def on_close(file_id: int, fields: dict[str, object]) -> None:
            written = self.written.get(file_id)
            if written is not None and self.mixer is not None and disk_full(self.mixer.error):
                # Cut short by the full disk: back to what a player reads before it is closed.
                fields = {**fields, **probe_file(*written), "complete": False}
            self.control.file_closed(file_id, str(file_id), **fields)
            w = self.mix_wave
            if w is not None and file_id == w.beside:
                w.wave.close()
                size = w.wave.path.stat().st_size
                duration_ms = w.wave.entries * 1000
                self.control.file_closed(
                    w.file_id, str(w.file_id), size=size, duration_ms=duration_ms
                )

        mixer = Mixer(
            replace(mix, hls_segment_s=spec.hls_segment_s),
            outputs,
            self._fetch_images(mix),
            on_open,
            on_close,
        )
        if wave_key is not None:
            mixer.audio_tap = self._measure
        mixer.start()
        self.control.event("mix_started", f"{mix.width}x{mix.height}@{mix.fps}")
        return mixer

    def _measure(self, at_s: float, sound: dict[str, np.ndarray]) -> None:
        """The mixer's tap (its thread): each input's sound in the frame starting ``at_s``
        seconds into the mix, into the sound wave by stream or user id."""
        w = self.mix_wave
        if w is None:
            return
        w.wave.advance(at_s)
        by_user = w.wave.key == SoundWaveKey.USER.value
        for key, pcm in sound.items():
            stream = self.mix_streams.get(key)
            who = key if stream is None else stream.user_id if by_user else stream.stream_id
            w.wave.add(at_s, who, pcm)

    def _fetch_images(self, mix: MixSpec) -> dict[str, Any]:
        """The background, watermark and fill pictures not fetched yet (a layout change may
        name new ones); one that fails is reported and skipped: the recording goes on
        without it."""
        policy = OutboundPolicy(allow_private=self.settings.allow_private_targets)
        images: dict[str, Any] = {}
        for url in sorted(mix.image_urls() - self.image_urls):
            self.image_urls.add(url)
            try:
                images[url] = decode_image(fetch(url, policy, max_bytes=8 * 1024 * 1024))
            except (CloudrecError, ValueError, OSError) as exc:
                message = exc.message if isinstance(exc, CloudrecError) else str(exc)
                self.control.image_failed(url, message, mix.image_kind(url))
        return images

    def _mark_recording(self) -> None:
        if self.recording_started:
            return
        mixing = self.mixer is not None and self.mixer.wrote_media.is_set()
        if mixing or any(s.recorder.wrote_media.is_set() for s in self.sessions.values()):
            self.recording_started = True
            if self.control.attempt > 1 and self.control.load().started_at is not None:
                self.control.event("recording_resumed", f"attempt {self.control.attempt}")
                return  # an earlier attempt said it started
            self.control.set_state(
                TaskState.RECORDING,
                "recording",
                callback="task_started",
                started_at=datetime.now(UTC),
            )

    def _drop_unwanted(self, spec: RecordingSpec, room: list[LiveStream], now: float) -> None:
        """Stop the recorders of streams the task no longer wants (its user list was changed
        while it records); they close their files at ``now``.  Note when a live stream the
        task did not want becomes wanted."""
        for s in room:
            key = (s.stream_id, s.started_at.isoformat())
            if not spec.wants(s.user_id, s.stream_id):
                self.seen_unwanted.add(key)
            elif key in self.seen_unwanted:
                self.seen_unwanted.discard(key)
                self.wanted_at[key] = now
        here = {(s.stream_id, s.started_at.isoformat()) for s in room}
        self.seen_unwanted &= here  # a session gone from the room never comes back
        for key in [k for k in self.wanted_at if k not in here]:
            del self.wanted_at[key]
        for key, session in self.sessions.items():
            stream = session.stream
            if key in self.unwanted or spec.wants(stream.user_id, stream.stream_id):
                continue
            if session.recorder.is_alive():
                session.recorder.stop(now)
                self.unwanted.add(key)
                self.control.event("stream_unwanted", f"{stream.user_id}/{stream.stream_id}")

    def _reap(self) -> None:
        for s in self.sessions.values():
            r = s.recorder
            if not r.is_alive() and not s.reported:
                s.reported = True
                detail = f"{s.stream.stream_id}: {r.ended_by}" + (
                    f" ({r.error})" if r.error else ""
                )
                if isinstance(r, StreamRecorder) and (
                    r.new_parts or r.timestamp_jumps or r.retries
                ):
                    detail += (
                        f"; {len(r.new_parts)} new part(s), {len(r.timestamp_jumps)} timestamp "
                        f"jump(s), {len(r.retries)} retry(ies)"
                    )
                self.control.event("stream_ended", detail)

    def _join_sessions(self) -> list[str]:
        """The files of each stream's sessions (spec.rejoin) as one file per stream and
        track: the later sessions appended to the first, the absences closed over or kept
        with silent sound.  Sessions that cannot share a file (a new picture size or codec)
        stay files of their own.  Returns errors."""
        rejoin = self.control.load().spec.rejoin
        groups: dict[tuple[str, FileFormat, TrackType], list[_Held]] = {}
        for h in self.held:
            groups.setdefault((h.stream_id, h.format, h.track), []).append(h)
        errors = []
        for (_, fmt, _), held in groups.items():
            held.sort(key=lambda h: h.begin_ms)
            parts = [
                Part(h.path, h.begin_ms / 1000, _ms_field(h.fields, "duration_ms") / 1000)
                for h in held
            ]
            if len(held) > 1 and compatible(parts):
                first = held[0]
                joined = first.path.with_name(first.path.stem + ".joined" + first.path.suffix)
                try:
                    seconds = concatenate(parts, fmt, joined, fill_gaps=rejoin == "fill")
                    os.replace(joined, first.path)
                except (av.FFmpegError, OSError, ValueError) as exc:
                    errors.append(f"joining {first.path.name}: {exc}")
                    joined.unlink(missing_ok=True)
                else:
                    fields = {
                        **first.fields,
                        "size": first.path.stat().st_size,
                        "duration_ms": round(seconds * 1000),
                    }
                    # The rows first: a worker killed in between leaves files no row names
                    # (spool clutter), never a row naming a file that is gone.
                    self.control.files_merged(
                        first.file_id, [h.file_id for h in held[1:]], **fields
                    )
                    for h in held[1:]:
                        h.path.unlink(missing_ok=True)
                    continue
            for h in held:
                self.control.file_closed(h.file_id, str(h.file_id), **h.fields)
        self.held = []
        return errors

    def _disk_full(self) -> bool:
        """A recorder, the mixer or a screenshot failed for want of space (the free space
        itself is looked at in the loop: some muxers, HLS, fail quietly on a full disk)."""
        errors = [s.recorder.error for s in self.sessions.values()]
        errors.append(self.shot_error)
        if self.mixer is not None:
            errors.append(self.mixer.error)
        return any(disk_full(e) for e in errors)

    def _close(self, stop_at: float) -> list[str]:
        """Stop every recorder (and the mixer) at ``stop_at`` and wait until each has written
        up to it and closed its files; returns their errors."""
        self.heartbeat.closing = True
        if self.mixer is not None:
            self.mixer.stop(stop_at)
            self.mixer.join(MIX_STOP_WAIT_S + max(0.0, stop_at - time.time()))
        for s in self.sessions.values():
            s.recorder.stop(stop_at)
        deadline = time.time() + STOP_WAIT_S + max(0.0, stop_at - time.time())
        for s in self.sessions.values():
            s.recorder.join(max(0.1, deadline - time.time()))
        still = [s.stream.stream_id for s in self.sessions.values() if s.recorder.is_alive()]
        if self.mixer is not None and self.mixer.is_alive():
            still.append("the mix")
        if still:
            self.control.event("files_left_open", ", ".join(still))
        errors = [s.recorder.error for s in self.sessions.values() if s.recorder.error]
        errors += self._join_sessions()
        if self.mixer is not None and self.mixer.error:
            errors.append(self.mixer.error)
        if self.mixer is not None:
            errors += self.mixer.side_errors
        self._reap()
        return errors

    def _give_up(self, now: float) -> None:
        """SIGTERM while the task should go on: close the files as parts of the recording and
        give the task up at once, so that the next attempt takes over from here."""
        log.info("worker.terminated", extra={"fields": {"task_id": self.control.task_id}})
        self._close(now)
        self.control.release("SIGTERM: files closed, the next attempt goes on")

    def _finish(self, reason: str, stop_at: float) -> TaskState:
        self.control.set_state(TaskState.STOPPING, "stopping", reason, end_reason=reason)
        errors = self._close(stop_at)
        if reason == END_DISK_FULL:
            errors.insert(0, "the spool disk is full: no more could be written")
        if self.failed is not None:
            failed, stream = self.failed, self.failed.stream
            why = (
                f"the recorder of stream {stream.stream_id} failed "
                f"{failed.restarts + 1} times while it was live: {failed.recorder.error}"
            )
            key = (stream.stream_id, stream.started_at.isoformat())
            self.control.files_incomplete(self.session_files.get(key, []), why)
            errors = [why, *(e for e in errors if e != failed.recorder.error)]
        return self.control.finish(reason, "; ".join(errors) or None)
