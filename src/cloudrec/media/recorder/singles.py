"""Single-stream recording: a file (or a JPG every ``snapshot_interval_s``) per stream session.

A :class:`StreamRecorder` (remux, :mod:`cloudrec.media.recorder.remux`) or, for screenshots
only, a :class:`StreamSnapshotter` per wanted stream session that is live; a stream that leaves
and comes back is a new session and so a new file, unless the task joins its sessions
(``spec.rejoin``: the files are held and joined into one at the end).  A recorder that fails
while its stream is live is started again, up to ``RECORDER_RESTARTS`` times; then the task
ends.  A stream the task stops wanting (its users changed) has its file closed; wanted again,
it gets a new one from that moment.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cloudrec.config import Settings
from cloudrec.core.control import TaskControl
from cloudrec.core.rooms import LiveStream
from cloudrec.core.tasks import (
    FileFormat,
    FileStatus,
    RecordedFile,
    RecordingSpec,
    SoundWaveKey,
    Task,
    TrackType,
    file_stamp,
)
from cloudrec.media.recorder.pipeline import Pipeline, disk_full, type_code
from cloudrec.media.recorder.rejoin import JOINABLE, Held, join_sessions
from cloudrec.media.recorder.remux import RecorderPlan, StreamRecorder, probe_file
from cloudrec.media.recorder.sei import begin_timestamp
from cloudrec.media.recorder.snapshots import SnapshotPlan, StreamSnapshotter, jpg_file

# After a stop, how long the recorders may take to write up to the stop and close their files
# (a publisher that stalls holds a read up to the recorder's read timeout).  A file still open
# after that is left to the reconciler, which finalises it once the worker has exited.
STOP_WAIT_S = 30.0
# Recorders started again for one stream session that ended with an error while still live.
RECORDER_RESTARTS = 3

Key = tuple[str, str]  # a stream session: (stream id, started at, ISO)


def _key(stream: LiveStream) -> Key:
    return (stream.stream_id, stream.started_at.isoformat())


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


class SinglePipeline(Pipeline):
    """A recorder (or snapshotter) per wanted stream session."""

    def __init__(self, control: TaskControl, settings: Settings) -> None:
        super().__init__(control, settings)
        self.sessions: dict[Key, _Session] = {}
        self.held: list[Held] = []  # files of streams that may come back (spec.rejoin)
        self.live_sessions: set[Key] = set()  # as the room was last read
        # Sessions stopped because the task no longer wants their stream (its users changed):
        # recorded anew, in a new file, if it is wanted again.
        self.unwanted: set[Key] = set()
        # Live sessions the task did not want at some tick, and when (Unix s) each came to be
        # wanted after that: its file begins there, not in the backlog before it.
        self.seen_unwanted: set[Key] = set()
        self.wanted_at: dict[Key, float] = {}
        self.session_files: dict[Key, list[int]] = {}  # each session's file ids
        self.failed: _Session | None = None  # the session whose recorder gave up for good
        self.superseded: set[Key] = set()  # sessions whose stream is live again as a newer one
        self._names: set[str] = set()  # every file name given so far
        self._names_lock = threading.Lock()

    def saw(self, room: list[LiveStream]) -> None:
        self.live_sessions = {_key(s) for s in room}

    def tick(self, task: Task, room: list[LiveStream], now: float) -> list[LiveStream]:
        self._reap()
        # The task's spec as last read: its users may change while it records.
        live = [s for s in room if task.spec.wants(s.user_id, s.stream_id)]
        self._drop_unwanted(task.spec, room, now)
        self._drop_superseded(room)
        for stream in live:
            key = _key(stream)
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
                if task.spec.screenshots:
                    self._start_snapshotter(task, stream, key)
                else:
                    self._start_recorder(task, stream, key)
        return live

    def threads(self) -> list[threading.Thread]:
        return [s.recorder for s in self.sessions.values()]

    def stop(self, at: float) -> None:
        for s in self.sessions.values():
            s.recorder.stop(at)

    def set_paused(self, paused: bool, now: float) -> None:
        self.paused = paused
        for session in self.sessions.values():
            if paused:
                session.recorder.pause(now)
            else:
                session.recorder.resume(now)

    def busy(self) -> bool:
        return any(s.recorder.is_alive() for s in self.sessions.values())

    def wrote_media(self) -> bool:
        return any(s.recorder.wrote_media.is_set() for s in self.sessions.values())

    def errors(self) -> list[str | None]:
        return [s.recorder.error for s in self.sessions.values()]

    def stream_ids(self) -> set[str]:
        return {stream_id for stream_id, _ in self.sessions}

    def gave_up(self) -> bool:
        self.failed = next(
            (s for k, s in self.sessions.items() if s.gave_up(k in self.live_sessions)), None
        )
        return self.failed is not None

    def close(self, stop_at: float) -> tuple[list[str], list[str]]:
        for s in self.sessions.values():
            s.recorder.stop(stop_at)
        deadline = time.time() + STOP_WAIT_S + max(0.0, stop_at - time.time())
        for s in self.sessions.values():
            s.recorder.join(max(0.1, deadline - time.time()))
        still = [s.stream.stream_id for s in self.sessions.values() if s.recorder.is_alive()]
        errors = [s.recorder.error for s in self.sessions.values() if s.recorder.error]
        errors += join_sessions(self.control, self.held)
        self.held = []
        self._reap()
        return still, errors

    def closed(self, errors: list[str]) -> list[str]:
        if self.failed is None:
            return errors
        failed, stream = self.failed, self.failed.stream
        why = (
            f"the recorder of stream {stream.stream_id} failed "
            f"{failed.restarts + 1} times while it was live: {failed.recorder.error}"
        )
        self.control.files_incomplete(self.session_files.get(_key(stream), []), why)
        return [why, *(e for e in errors if e != failed.recorder.error)]

    def _start_recorder(self, task: Task, stream: LiveStream, key: Key) -> None:
        spec = task.spec
        base = f"{task.task_id}_{spec.room_id}_{stream.user_id}_{stream.stream_id}"
        prefix = "/".join(spec.output_prefix)

        paths: dict[int, Path] = {}
        opened: dict[int, tuple[FileFormat, TrackType, int]] = {}

        def name(fmt: FileFormat, track: TrackType, begin_ms: int) -> str:
            stamp = file_stamp(datetime.fromtimestamp(begin_ms / 1000, UTC))
            return self._unique(f"{base}_{type_code(track)}_{stamp}", f".{fmt.extension}")

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
                    Held(file_id, stream.stream_id, fmt, track, path, begin_ms, fields)
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

    def _unique(self, stem: str, suffix: str) -> str:
        """A file name no other file of this attempt has (on recorder threads).  Two sessions
        of one stream may begin at the same keyframe of the ingest's backlog (the old one's
        retry and the new one, around a restart of the ingest): their files must not be one
        path, written by two muxers and delivered once."""
        with self._names_lock:
            # "-n", not "_n": an HLS playlist's segments are "<stem>_<5 digits>.ts", found by
            # the glob "<stem>_*.ts", which must not take another playlist's.
            name, n = f"{stem}{suffix}", 1
            while name in self._names:
                name, n = f"{stem}-{n}{suffix}", n + 1
            self._names.add(name)
            return name

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

    def _start_snapshotter(self, task: Task, stream: LiveStream, key: Key) -> None:
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

    def _drop_superseded(self, room: list[LiveStream]) -> None:
        """A session whose stream is live again as a newer session ends its recorder where
        the newer one begins, whatever its pull still reads.  An ingest node that stalled past
        its lease (frozen, or cut off from the database while it served on) had its streams
        ended by another node; once it is back, its publishers' streams are new sessions with
        recorders of their own, and the old recorders, still reading (or reconnected), would
        record the same stream twice.  A session that only left the room keeps its recorder
        until its pull ends: nothing its publisher sent is cut."""
        newest: dict[str, datetime] = {}
        for s in room:
            newest[s.stream_id] = max(s.started_at, newest.get(s.stream_id, s.started_at))
        for key, session in self.sessions.items():
            if key in self.live_sessions or key in self.superseded:
                continue
            later = newest.get(session.stream.stream_id)
            if later is None or later <= session.stream.started_at:
                continue
            if session.recorder.is_alive():
                session.recorder.stop(later.timestamp())
            self.superseded.add(key)

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
