"""The per-task worker (``cloudrec run-task TASK_ID``): reconcile one task with its row.

Every ``RECONCILE_S`` the worker looks at its task's watch (one small read: the task's version,
bumped by every change it must see, and its room's live set), reads the task and the room
directory again when that moved, and hands the room to its mode's pipeline
(:mod:`cloudrec.media.recorder.pipeline`: a recorder per stream session in
:mod:`~cloudrec.media.recorder.singles`, one mixer in :mod:`~cloudrec.media.recorder.mixpipe`).
It stops when asked, when the room has been empty for the idle timeout, when the maximum
recording time is reached, when the spool disk is full or when a recorder cannot go on; and it
gives the task up on SIGTERM or when its lease is lost.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import UTC, datetime

from cloudrec.config import Settings
from cloudrec.core.control import HEARTBEAT_S, LeaseLostError, TaskControl
from cloudrec.core.errors import CloudrecError
from cloudrec.core.rooms import LiveStream
from cloudrec.core.tasks import (
    END_DISK_FULL,
    END_IDLE,
    END_MAX_DURATION,
    END_RECORDER_FAILED,
    END_STOPPED,
    Desired,
    RecordMode,
    Task,
    TaskState,
)
from cloudrec.media.recorder.mixpipe import MixPipeline
from cloudrec.media.recorder.pipeline import DISK_FULL_BYTES, Pipeline, disk_full, spool_free
from cloudrec.media.recorder.singles import SinglePipeline

log = logging.getLogger("cloudrec.worker")

RECONCILE_S = 0.25
# The spool's free space (a full disk below DISK_FULL_BYTES) is looked at every DISK_CHECK_S
# while more than DISK_NEAR_BYTES (64 MiB) is free, every tick below that (a recorder's ENOSPC
# is seen at once either way).
DISK_CHECK_S = 2.0
DISK_NEAR_BYTES = 64 << 20
# Reads of the task in a row that may fail (the database locked or restarting) before the
# worker gives up; the heartbeat keeps the lease meanwhile, or loses it and the worker stops.
POLL_FAILURES = 60


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
        self.pipeline: Pipeline = SinglePipeline(control, settings)  # the mode's, once claimed
        self.recording_started = False
        self.missing_told: set[str] = set()  # RecordStreamList streams said to be missing
        self.terminated = threading.Event()  # SIGTERM: close the files, give the task up
        self.heartbeat = Heartbeat(control)

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
        if task.spec.mode is RecordMode.MIXED:
            self.pipeline = MixPipeline(self.control, self.settings)
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
        threads = self.pipeline.threads()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return sum(t.is_alive() for t in threads)

    def _abandon(self) -> None:
        """The task is another attempt's now: stop writing (the files stay as they are; the
        reconciler has finalised them)."""
        self.pipeline.stop(time.time())

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
                    self.pipeline.saw(room)
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
            if self.pipeline.gave_up():
                reason, stop_at = END_RECORDER_FAILED, now
                break
            if task.desired is Desired.STOPPED:
                stop_at = task.stop_requested_at.timestamp() if task.stop_requested_at else now
                break
            if (task.desired is Desired.PAUSED) != self.pipeline.paused:
                self._set_paused(task.desired is Desired.PAUSED)
            if now - task.created_at.timestamp() >= max_duration:
                reason, stop_at = END_MAX_DURATION, task.created_at.timestamp() + max_duration
                break
            live = self.pipeline.tick(task, room, now)
            self._mark_recording()
            if live or self.pipeline.busy():
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
        seen = self.pipeline.stream_ids()
        for stream_id in task.spec.stream_ids:
            if stream_id not in live and stream_id not in seen | self.missing_told:
                self.missing_told.add(stream_id)
                self.control.notify("stream_missing", stream_id, {"stream_id": stream_id})

    def _take_over(self, task: Task) -> None:
        """A later attempt: line the task's state up with what is asked (an earlier attempt
        may have died while a pause or resume was on its way), without the start callbacks
        the first attempt sent."""
        want_paused = task.desired is Desired.PAUSED
        self.pipeline.paused = want_paused
        if want_paused and task.state is not TaskState.PAUSED:
            self.control.set_state(TaskState.PAUSED, "paused", callback="task_paused")
        elif not want_paused and task.state is TaskState.PAUSED:
            self.control.set_state(TaskState.RECORDING, "resumed", callback="task_resumed")

    def _set_paused(self, paused: bool) -> None:
        """Pause or resume every recorder (and the mixer): one file each, the paused span
        left out."""
        self.pipeline.set_paused(paused, time.time())
        if paused:
            self.control.set_state(TaskState.PAUSED, "paused", callback="task_paused")
        else:
            self.control.set_state(TaskState.RECORDING, "resumed", callback="task_resumed")

    def _mark_recording(self) -> None:
        if self.recording_started:
            return
        if self.pipeline.wrote_media():
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

    def _disk_full(self) -> bool:
        """A recorder, the mixer or a screenshot failed for want of space (the free space
        itself is looked at in the loop: some muxers, HLS, fail quietly on a full disk)."""
        return any(disk_full(e) for e in self.pipeline.errors())

    def _close(self, stop_at: float) -> list[str]:
        """Stop every recorder (or the mixer) at ``stop_at`` and wait until each has written
        up to it and closed its files; returns their errors."""
        self.heartbeat.closing = True
        still, errors = self.pipeline.close(stop_at)
        if still:
            self.control.event("files_left_open", ", ".join(still))
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
        errors = self.pipeline.closed(errors)
        return self.control.finish(reason, "; ".join(errors) or None)
