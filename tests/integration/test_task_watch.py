"""The worker's cheap poll, on SQLite and PostgreSQL: every change a worker must see moves its
task's watch (its version and its room's live set), its own writes do not, and a worker that
sees nothing move reads no task row: one small statement per tick."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from cloudrec.core.control import LEASE_S, LeaseLostError, TaskControl
from cloudrec.core.rooms import StreamMeta
from cloudrec.core.service import PublishTarget, RoomAddress
from cloudrec.core.tasks import RecordingSpec, TaskState
from cloudrec.media.recorder.worker import TaskWorker
from tests.integration.test_ownership import APP, World


def test_every_change_a_worker_must_see_moves_its_watch_and_its_own_writes_do_not(
    database_url, data_dir
):
    world = World(database_url, data_dir)
    try:
        task_id = world.start()
        watch = world.c.watch
        seen = [watch.read(task_id, "r1")]

        def moved() -> bool:
            now = watch.read(task_id, "r1")
            changed = now != seen[-1]
            seen.append(now)
            return changed

        # The worker's own writes: its lease, its state, its files and events.
        control = world.control(task_id)
        assert control.claim() is not None
        control.renew()
        control.set_state(TaskState.RECORDING, "recording", started_at=datetime.now(UTC))
        world.open_file(control, "a.mp4")
        control.event("stream_recording", "u1/s1")
        assert not moved()
        # A stream of another room, or another app's stream in a room of that name.
        other = PublishTarget(RoomAddress(APP, "r9"), "s9", "u9", None)
        world.c.rooms.published(other, StreamMeta(), "rtmp://127.0.0.1:1/y", "embedded", "")
        assert not moved()

        # What the worker must see.
        world.c.tasks.pause(APP, task_id)
        assert moved()
        world.c.tasks.resume(APP, task_id)
        assert moved()
        with world.c.uow() as uow:  # a layout update writes the spec
            task = uow.tasks.get(task_id)
            assert task is not None
            new = replace(task.spec, user_ids=("u1", "u2"))
            uow.tasks.update(task_id, spec_json=json.dumps(new.to_json()))
            uow.commit()
        assert moved()
        with world.c.uow() as uow:  # TakeSnapshot
            uow.tasks.request_snapshot(task_id)
            uow.commit()
        assert moved()
        second = PublishTarget(RoomAddress(APP, "r1"), "s2", "u2", None)
        world.c.rooms.published(second, StreamMeta(), "rtmp://127.0.0.1:1/z", "embedded", "")
        assert moved()
        world.c.rooms.unpublished(second, "gone")
        assert moved()
        # The same stream back: a new session, and the set moved though its size did not.
        world.c.rooms.published(second, StreamMeta(), "rtmp://127.0.0.1:1/z", "embedded", "")
        assert moved()
        world.c.tasks.stop(APP, task_id)
        assert moved()
        assert watch.read("no-such-task", "r1") is None
    finally:
        world.c.engine.dispose()


def test_a_worker_that_sees_nothing_move_reads_no_task_row_and_still_sees_each_change(
    database_url, data_dir
):
    """Issue 13: every 0.25 s each worker read its whole task (two ORM queries, the spec
    parsed from JSON) and its room; about a fifth of a recorder host's activity."""
    world = World(database_url, data_dir)
    world.clock.now = datetime.now(UTC)  # the worker measures the task's age on the wall clock
    statements: list[str] = []
    lock = threading.Lock()

    def seen(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        with lock:
            statements.append(statement)

    try:
        # A room nobody publishes in: the worker ticks with no recorder to start.
        task_id = world.start(
            RecordingSpec(room_id="quiet", idle_timeout_s=600), require_live=False
        )
        control = TaskControl(
            world.c.uow, world.clock, task_id, 1, watch=world.c.watch, callbacks=world.c.callbacks
        )
        worker = TaskWorker(control, world.c.settings)
        result: list[object] = []
        thread = threading.Thread(target=lambda: result.append(worker.run()), daemon=True)
        event.listen(world.c.engine, "before_cursor_execute", seen)
        thread.start()
        # The window opens once the worker ticks on the watch (its first full read done),
        # however long a loaded machine takes to get there.
        deadline = time.monotonic() + 30
        while True:
            with lock:
                ticking = sum("t.version" in s for s in statements)
                if ticking >= 2:
                    start = len(statements)
                    break
            assert time.monotonic() < deadline, "the worker never ticked on the watch"
            time.sleep(0.05)
        time.sleep(2.0)
        event.remove(world.c.engine, "before_cursor_execute", seen)
        with lock:
            window = statements[start:]
        watches = [s for s in window if "t.version" in s]
        full_reads = [
            s for s in window if s not in watches and ("spec_json" in s or "stream_sessions" in s)
        ]
        assert full_reads == []
        assert len(watches) >= 2  # one per tick (0.25 s), fewer on a loaded machine
        # Apart from the watch, only the heartbeat's lease renewal (every second) ran.
        others = [s for s in window if s not in watches]
        assert all(s.lstrip().upper().startswith("UPDATE TASKS") for s in others), others

        # Each change is still seen at the next tick.
        world.c.tasks.pause(APP, task_id)
        deadline = time.monotonic() + 20
        while world.task(task_id).state is not TaskState.PAUSED:
            assert time.monotonic() < deadline, world.events(task_id)
            time.sleep(0.05)
        world.c.tasks.stop(APP, task_id)
        thread.join(30)
        assert not thread.is_alive()
        assert world.task(task_id).state in (TaskState.COMPLETED, TaskState.UPLOADING)
    finally:
        world.c.engine.dispose()


def test_the_heartbeats_bare_renewal_is_fenced_like_every_write(database_url, data_dir):
    """The heartbeat renews through the watch (one statement, no unit of work): it holds only
    while the attempt owns a task still recording, as the fenced renewal does."""
    world = World(database_url, data_dir)
    try:
        task_id = world.start()
        control = TaskControl(
            world.c.uow, world.clock, task_id, 1, watch=world.c.watch, callbacks=world.c.callbacks
        )
        assert control.claim() is not None
        world.clock.advance(3)
        control.renew()
        lease = world.task(task_id).lease_until
        assert lease is not None and lease == world.clock() + timedelta(seconds=LEASE_S)
        with world.c.uow() as uow:  # the reconciler gives the task to attempt 2
            assert uow.tasks.update_if(task_id, attempt=1, new_attempt=2)
            uow.commit()
        with pytest.raises(LeaseLostError):
            control.renew()
        second = TaskControl(
            world.c.uow, world.clock, task_id, 2, watch=world.c.watch, callbacks=world.c.callbacks
        )
        second.renew()
        second.finish("stopped by request", None)
        with pytest.raises(LeaseLostError):
            second.renew()  # an ended task has no lease to renew
    finally:
        world.c.engine.dispose()
