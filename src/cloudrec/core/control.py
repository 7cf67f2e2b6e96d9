"""One task as its worker sees it: read the desired state, report what happens — every report
fenced by the worker's attempt.

A worker is started for one attempt of a task (the attempt number is its fencing token).  It
first claims the task's lease for that attempt (:meth:`TaskControl.claim`), then renews it
about every second (:meth:`TaskControl.renew`, from a thread of its own).  Every write it makes
begins with that renewal in the same transaction: once the task has a newer attempt, or has
ended, the renewal fails, nothing is written and :class:`LeaseLostError` is raised, so a worker that
was given up for dead (frozen, cut off) can never overwrite what its successor wrote.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta

from cloudrec.core.callbacks import Callbacks
from cloudrec.core.errors import CloudrecError
from cloudrec.core.ports import FileShipper, TaskWatch, UnitOfWork
from cloudrec.core.rooms import LiveStream
from cloudrec.core.tasks import (
    FileStatus,
    RecordedFile,
    StorageTarget,
    Task,
    TaskState,
)

log = logging.getLogger("cloudrec.tasks")

# Worker handles with a meaning of their own: a worker being started; a worker that gave its
# task up on purpose (SIGTERM, files closed): replaced at once, not counted a death.
STARTING = "starting"
RELEASED = "released"
Clock = Callable[[], datetime]

# A worker renews its lease every HEARTBEAT_S; a lease not renewed for LEASE_S is lost.
HEARTBEAT_S = 1.0
LEASE_S = 5.0
# A worker reads its whole task row when its watch moved, and at least this often.
REFRESH_S = 30.0


class LeaseLostError(Exception):
    """The worker no longer owns its task (a newer attempt does, or the task has ended)."""


def end_recording(
    uow: UnitOfWork,
    callbacks: Callbacks,
    task: Task,
    now: datetime,
    reason: str,
    error: str | None,
) -> TaskState:
    """The recording of ``task`` is over: UPLOADING while it has files to deliver to a bucket,
    else COMPLETED; the stop callback (and ZEGO's uploading one) queued.  The caller has
    fenced the transaction (a worker) or compared-and-set the state (the reconciler)."""
    files = uow.tasks.files(task.task_id)
    uploading = uow.tasks.storage(task.task_id) is not None and bool(files)
    state = TaskState.UPLOADING if uploading else TaskState.COMPLETED
    uow.tasks.update(
        task.task_id, state=state, ended_at=now, end_reason=reason, error=error, lease_until=now
    )
    uow.tasks.add_event(task.task_id, "stopped", now, reason)
    ended = replace(task, state=state, ended_at=now, end_reason=reason, error=error)
    callbacks.enqueue(uow, now, ended, "task_stopped", files)
    if uploading:
        callbacks.enqueue(uow, now, ended, "task_uploading", [])  # ZEGO event 7
    return state


class TaskControl:
    """One attempt of one task, as its worker sees it."""

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        clock: Clock,
        task_id: str,
        attempt: int = 1,
        lease: timedelta = timedelta(seconds=LEASE_S),
        watch: TaskWatch | None = None,
        *,
        callbacks: Callbacks,
        node: str = "",
        shipper: FileShipper | None = None,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._callbacks = callbacks
        self.task_id = task_id
        self.attempt = attempt
        self._lease = lease
        self._watch = watch
        self.node = node  # the machine this attempt runs on (``Settings.node_name``)
        # Files go off this machine as they are written (a cluster node); told of each file.
        self.shipper = shipper
        self._paths: dict[int, str] = {}  # the files this attempt opened, by id
        self._seen: tuple[int, ...] | None = None  # the watch's value at the last full read
        self._read_at = 0.0  # monotonic, the last full read

    @contextmanager
    def _fenced(self) -> Iterator[UnitOfWork]:
        """One transaction that holds only while this attempt owns the task; committed at
        the end of the block."""
        now = self._clock()
        with self._uow() as uow:
            if not uow.tasks.renew_lease(self.task_id, self.attempt, now, now + self._lease):
                raise LeaseLostError(f"task {self.task_id}: attempt {self.attempt} lost its lease")
            yield uow
            uow.commit()

    def claim(self) -> Task | None:
        """Take the lease for this attempt; the task, or None when this attempt does not own
        it (superseded, or the task has ended)."""
        try:
            with self._fenced() as uow:
                task = uow.tasks.get(self.task_id)
                if task is not None and self.node and task.node != self.node:
                    self._moved(uow, task)
                    task = replace(task, node=self.node)
                return task
        except LeaseLostError:
            return None

    def _moved(self, uow: UnitOfWork, task: Task) -> None:
        """This attempt runs on another machine than the task's last one: the task's
        ``node``, and a ``failover`` event and callback when an earlier attempt ran elsewhere."""
        uow.tasks.update(self.task_id, node=self.node)
        if task.attempt <= 1 or not task.node:
            return
        now = self._clock()
        detail = f"attempt {self.attempt}: from node {task.node} to node {self.node}"
        uow.tasks.add_event(self.task_id, "failover", now, detail)
        extra = {"attempt": self.attempt, "from_node": task.node, "to_node": self.node}
        self._callbacks.enqueue(uow, now, task, "task_failover", [], extra)
        log.info("task.failover", extra={"fields": {"task_id": self.task_id, **extra}})

    def renew(self) -> None:
        """Keep the lease (the worker's heartbeat); raises :class:`LeaseLostError`."""
        if self._watch is None:
            with self._fenced():
                pass
            return
        now = self._clock()
        if not self._watch.renew(self.task_id, self.attempt, now, now + self._lease):
            raise LeaseLostError(f"task {self.task_id}: attempt {self.attempt} lost its lease")

    def release(self, why: str) -> None:
        """Give the task up now, files closed, so that the next attempt starts at once (a
        worker told to terminate while its room is live)."""
        with self._fenced() as uow:
            uow.tasks.update(self.task_id, lease_until=self._clock(), worker=RELEASED)
            uow.tasks.add_event(self.task_id, "worker_released", self._clock(), why)

    def load(self) -> Task:
        with self._uow() as uow:
            task = uow.tasks.get(self.task_id)
        if task is None:
            raise CloudrecError.not_found(f"task {self.task_id} does not exist")
        return task

    def storage(self) -> StorageTarget | None:
        with self._uow() as uow:
            return uow.tasks.storage(self.task_id)

    def poll(self, room_id: str) -> tuple[Task, list[LiveStream]]:
        """The task as the API last left it and the room's live streams, read whole (when
        :meth:`changed` says so; the lease is renewed by the heartbeat, not here)."""
        # Watched first: a change that lands between the two reads moves the watch again.
        seen = self._watch.read(self.task_id, room_id) if self._watch is not None else None
        with self._uow() as uow:
            task = uow.tasks.get(self.task_id)
            if task is None:
                raise CloudrecError.not_found(f"task {self.task_id} does not exist")
            room = uow.rooms.live(task.app_id, room_id)
        self._seen, self._read_at = seen, time.monotonic()
        return task, room

    def changed(self, room_id: str) -> bool:
        """Whether the task or its room may have changed since the last :meth:`poll` (one
        small read; True without a watch, when the watch fails, and every ``REFRESH_S``)."""
        if self._watch is None or time.monotonic() - self._read_at >= REFRESH_S:
            return True
        try:
            return self._watch.read(self.task_id, room_id) != self._seen
        except Exception:  # a locked or restarting database: the full read says
            log.debug("task.watch_failed", exc_info=True)
            return True

    def room(self, app_id: int, room_id: str) -> list[LiveStream]:
        """Live streams of another room (cross-room mixing)."""
        with self._uow() as uow:
            return uow.rooms.live(app_id, room_id)

    def set_state(
        self,
        state: TaskState,
        event: str,
        detail: str = "",
        callback: str | None = None,
        **fields: object,
    ) -> None:
        """Report a new state; ``callback`` names the event to call the app back with."""
        with self._fenced() as uow:
            uow.tasks.update(self.task_id, state=state, **fields)  # fenced: ours to change
            uow.tasks.add_event(self.task_id, event, self._clock(), detail)
            task = uow.tasks.get(self.task_id)
            if callback is not None and task is not None:
                files = uow.tasks.files(task.task_id)
                self._callbacks.enqueue(uow, self._clock(), task, callback, files)
        log.info(
            "task.%s",
            event,
            extra={"fields": {"task_id": self.task_id, "state": state.value, "detail": detail}},
        )

    def finish(self, reason: str, error: str | None) -> TaskState:
        """The recording is over and every file of this attempt is closed."""
        with self._fenced() as uow:
            task = uow.tasks.get(self.task_id)
            assert task is not None
            state = end_recording(uow, self._callbacks, task, self._clock(), reason, error)
        log.info(
            "task.stopped",
            extra={"fields": {"task_id": self.task_id, "state": state.value, "detail": reason}},
        )
        return state

    def _ours(self, file: RecordedFile, status: FileStatus | None = None) -> RecordedFile:
        status = status or file.status
        return replace(file, status=status, attempt=self.attempt, node=self.node or None)

    def file_opened(self, file: RecordedFile) -> int:
        with self._fenced() as uow:
            file_id = uow.tasks.add_file(self._ours(file))
            uow.tasks.add_event(self.task_id, "file_opened", self._clock(), file.name)
        self._paths[file_id] = file.path
        if self.shipper is not None:
            self.shipper.opened(file_id, file.path, file.format.value)
        return file_id

    def file_written(self, file: RecordedFile) -> int:
        """A file written whole at once (a screenshot): recorded, so delivered from now on."""
        if self.shipper is None:
            with self._fenced() as uow:
                file_id = uow.tasks.add_file(self._ours(file, FileStatus.RECORDED))
                uow.tasks.add_event(self.task_id, "file_written", self._clock(), file.name)
            return file_id
        # Shipped before its row says it is recorded: delivery never finds half of it.
        with self._fenced() as uow:
            file_id = uow.tasks.add_file(self._ours(file, FileStatus.RECORDING))
        whole = self.shipper.finish(file_id, file.path)
        with self._fenced() as uow:
            uow.tasks.update_file(file_id, status=FileStatus.RECORDED)
            uow.tasks.add_event(self.task_id, "file_written", self._clock(), file.name)
        self._shipped(whole, file.path)
        return file_id

    def file_closed(self, file_id: int, name: str, **fields: object) -> None:
        path = self._finish(file_id)
        with self._fenced() as uow:
            uow.tasks.update_file_if(
                file_id, (FileStatus.RECORDING,), status=FileStatus.RECORDED, **fields
            )
            uow.tasks.add_event(self.task_id, "file_closed", self._clock(), name)
        self._shipped(*path)

    def _finish(self, file_id: int) -> tuple[bool, str | None]:
        """Before a file's row says it is recorded: its shipped copy made whole."""
        path = self._paths.pop(file_id, None)
        if self.shipper is None or path is None:
            return False, None
        return self.shipper.finish(file_id, path), path

    def _shipped(self, whole: bool, path: str | None) -> None:
        """A file whole in the fragment store and recorded: the service takes it from there,
        so this machine's copy goes (its disk does not fill with what it recorded)."""
        if whole and path is not None:
            try:
                os.unlink(path)
            except OSError:
                log.warning("file.unlink_failed", extra={"fields": {"path": path}}, exc_info=True)

    def files_incomplete(self, file_ids: list[int], why: str) -> None:
        """Files of a stream whose recording broke off (``complete: false``)."""
        with self._fenced() as uow:
            for file_id in file_ids:
                uow.tasks.update_file(file_id, complete=False)
            uow.tasks.add_event(self.task_id, "files_incomplete", self._clock(), why)

    def files_merged(self, into: int, merged: list[int], **fields: object) -> None:
        """Files of a stream that left and came back, now one file (``into``): the others'
        rows go, the one left is finished."""
        for file_id in merged:
            self._paths.pop(file_id, None)
        if self.shipper is not None:
            self.shipper.forget(merged)
        path = self._finish(into)
        with self._fenced() as uow:
            for file_id in merged:
                uow.tasks.remove_file(file_id)
            uow.tasks.update_file(into, status=FileStatus.RECORDED, **fields)
            detail = f"{len(merged) + 1} sessions into file {into}"
            uow.tasks.add_event(self.task_id, "files_merged", self._clock(), detail)
        self._shipped(*path)

    def event(self, kind: str, detail: str = "") -> None:
        with self._fenced() as uow:
            uow.tasks.add_event(self.task_id, kind, self._clock(), detail)

    def image_failed(self, url: str, message: str, image_type: int) -> None:
        """A picture of the mix could not be had (ZEGO event 3; ``image_type`` as ZEGO
        numbers them, 0 for others)."""
        extra = {"image_type": image_type, "image_url": url}
        self.notify("image_failed", f"{url}: {message}", extra)

    def notify(self, kind: str, detail: str = "", extra: dict[str, object] | None = None) -> None:
        """An event of the task, and a callback where the dialect has one for it (``extra``:
        the callback's own detail)."""
        now = self._clock()
        with self._fenced() as uow:
            uow.tasks.add_event(self.task_id, kind, now, detail)
            task = uow.tasks.get(self.task_id)
            if task is not None:
                self._callbacks.enqueue(uow, now, task, kind, [], dict(extra or {}))
