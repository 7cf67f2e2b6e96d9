"""Ownership on a real database (SQLite and PostgreSQL): leases and attempts fence every write
of a worker, the reconciler replaces a dead worker and never fails a task that finished, files
and callbacks are claimed rows, and concurrent starts of one app are serialised.

Workers are driven through their real control surface (``TaskControl``); the executor is a fake
that starts nothing and says what the test decides about each worker (issue 10, items 2, 4, 5,
13)."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from cloudrec.bootstrap import bootstrap
from cloudrec.config import load_settings
from cloudrec.core.control import LeaseLostError, TaskControl
from cloudrec.core.delivery import CallbackSender, DeliveryService
from cloudrec.core.errors import CloudrecError
from cloudrec.core.reconcile import Reconciler, RestartPolicy
from cloudrec.core.rooms import StreamMeta
from cloudrec.core.service import PublishTarget, RoomAddress
from cloudrec.core.tasks import (
    FileFormat,
    FileStatus,
    RecordedFile,
    RecordingSpec,
    StorageTarget,
    TaskState,
    TrackType,
)
from cloudrec.storage.backup import LocalBackupStore, LocalSpool
from tests.fakes import FakeClock, FakeExecutor

APP = 77
TARGET = StorageTarget("s3", "http://127.0.0.1:9", "recs", "ak", "sk")


class World:
    def __init__(self, database_url: str, data_dir: Path, **settings: object) -> None:
        self.clock = FakeClock()
        self.executor = FakeExecutor()
        s = load_settings({"data_dir": data_dir, "database_url": database_url, **settings}, env={})
        self.c = bootstrap(s, clock=self.clock, executor=self.executor)
        self.c.apps.create(APP)
        self.finalised: list[str] = []
        self.reconciler = Reconciler(
            self.c.uow,
            self.clock,
            self.executor,
            self._finalise,
            RestartPolicy(max_restarts=2),
            callbacks=self.c.callbacks,
        )
        target = PublishTarget(RoomAddress(APP, "r1"), "s1", "u1", None)
        self.c.rooms.published(target, StreamMeta(), "rtmp://127.0.0.1:1/x", "embedded", "")

    def _finalise(self, f: RecordedFile) -> dict[str, object]:
        self.finalised.append(f.name)
        return {"size": 1234, "duration_ms": 5000}

    def start(self, spec: RecordingSpec | None = None, **kw: object) -> str:
        spec = spec or RecordingSpec(room_id="r1")
        task = self.c.tasks.start(APP, spec, TARGET, **kw)  # type: ignore[arg-type]
        return task.task_id

    def task(self, task_id: str):  # type: ignore[no-untyped-def]
        return self.c.tasks.get(APP, task_id)

    def control(self, task_id: str, attempt: int = 1) -> TaskControl:
        return TaskControl(self.c.uow, self.clock, task_id, attempt, callbacks=self.c.callbacks)

    def open_file(self, control: TaskControl, name: str) -> int:
        return control.file_opened(
            RecordedFile(
                control.task_id,
                name,
                str(self.c.settings.data_dir / name),
                FileFormat.MP4,
                FileStatus.RECORDING,
                "s1",
                "u1",
                TrackType.AUDIO_VIDEO,
                0,
            )
        )

    def events(self, task_id: str) -> list[str]:
        return [kind for kind, _, _ in self.c.tasks.events(task_id)]


@pytest.fixture
def world(database_url, data_dir):
    w = World(database_url, data_dir)
    yield w
    w.c.engine.dispose()


def test_a_dead_worker_is_replaced_by_its_next_attempt_and_the_task_stays_recording(world):
    """Issue 10 #5: a worker that died (kill -9, OOM) ended its task although the room was
    live; now its files are kept and attempt 2 starts at once."""
    task_id = world.start()
    first = world.control(task_id)
    assert first.claim() is not None
    first.set_state(TaskState.RECORDING, "recording", started_at=world.clock())
    file_id = world.open_file(first, "part1.mp4")
    world.clock.advance(3)
    first.renew()
    world.executor.died(world.task(task_id).worker)

    world.reconciler.run_once()

    task = world.task(task_id)
    assert task.state is TaskState.RECORDING and task.attempt == 2
    assert world.executor.starts == [(task_id, 1), (task_id, 2)]
    assert task.resume_at == world.clock()  # the last heartbeat: where attempt 2's files begin
    [f] = world.c.tasks.files(task_id)
    assert (f.id, f.status, f.complete, f.size) == (file_id, FileStatus.RECORDED, False, 1234)
    assert "worker_died" in world.events(task_id) and "worker_restarted" in world.events(task_id)
    second = world.control(task_id, 2)
    assert second.claim() is not None


def test_the_old_attempt_can_write_nothing_once_replaced(world):
    """A frozen worker that wakes up after its replacement started must not overwrite it."""
    task_id = world.start()
    first = world.control(task_id)
    first.claim()
    file_id = world.open_file(first, "part1.mp4")
    world.executor.died(world.task(task_id).worker)
    world.reconciler.run_once()
    with pytest.raises(LeaseLostError):
        first.set_state(TaskState.PAUSED, "paused")
    with pytest.raises(LeaseLostError):
        first.file_closed(file_id, "part1.mp4", size=1, duration_ms=1)
    with pytest.raises(LeaseLostError):
        first.renew()
    task = world.task(task_id)
    assert task.state is TaskState.INITIALISING and task.attempt == 2
    [f] = world.c.tasks.files(task_id)
    assert f.size == 1234  # what the reconciler finalised, not the late write


def test_a_worker_cannot_overwrite_a_task_that_has_failed(world):
    """Issue 10 #4: ``set_state`` did not check the state it replaced (FAILED -> UPLOADING)."""
    task_id = world.start()
    control = world.control(task_id)
    control.claim()
    with world.c.uow() as uow:
        uow.tasks.update(task_id, state=TaskState.FAILED)
        uow.commit()
    with pytest.raises(LeaseLostError):
        control.finish("stopped by request", None)
    assert world.task(task_id).state is TaskState.FAILED


def test_the_reconciler_never_fails_a_task_that_just_finished(world):
    """Issue 10 #4: the supervisor re-checked only for a terminal state, so a task that had
    just moved to UPLOADING could be marked FAILED."""
    task_id = world.start()
    control = world.control(task_id)
    control.claim()
    world.open_file(control, "a.mp4")
    stale = world.task(task_id)  # what the reconciler read, before the worker finished
    with world.c.uow() as uow:
        [f] = uow.tasks.files(task_id)
        uow.tasks.update_file(f.id, status=FileStatus.RECORDED)
        uow.commit()
    assert control.finish("stopped by request", None) is TaskState.UPLOADING
    world.executor.died(stale.worker)
    assert world.reconciler._replace(stale, world.clock(), "exited", True) is None
    world.reconciler.run_once()
    task = world.task(task_id)
    assert task.state is TaskState.UPLOADING and task.attempt == 1
    assert "failed" not in world.events(task_id)


def test_repeated_deaths_back_off_then_end_the_task(world):
    task_id = world.start()
    for attempt in (1, 2, 3):
        control = world.control(task_id, attempt)
        assert control.claim() is not None
        world.executor.died(world.task(task_id).worker)
        world.reconciler.run_once()
        if attempt == 2:  # the second restart waits 1 s
            assert world.task(task_id).worker is None
            world.clock.advance(1)
            world.reconciler.run_once()
    task = world.task(task_id)
    assert task.state is TaskState.FAILED and task.deaths == 3
    assert [a for _, a in world.executor.starts] == [1, 2, 3]
    assert "3 deaths in a row, no more restarts" in (task.error or "")


def test_a_worker_whose_lease_ran_out_is_replaced_and_a_frozen_one_killed(world):
    task_id = world.start()
    control = world.control(task_id)
    control.claim()
    handle = world.task(task_id).worker
    world.clock.advance(6)  # past the 5 s lease, the process still there: not yet
    world.reconciler.run_once()
    assert world.task(task_id).attempt == 1
    world.clock.advance(10)  # and past the grace: frozen
    world.reconciler.run_once()
    assert world.executor.killed == [handle]
    assert world.task(task_id).attempt == 2


def test_a_worker_lost_while_stopping_ends_its_task_as_the_worker_would(world):
    task_id = world.start()
    control = world.control(task_id)
    control.claim()
    world.open_file(control, "a.mp4")
    world.c.tasks.stop(APP, task_id)
    world.executor.died(world.task(task_id).worker)
    world.reconciler.run_once()
    task = world.task(task_id)
    assert task.state is TaskState.UPLOADING and world.executor.starts == [(task_id, 1)]
    assert [f.status for f in world.c.tasks.files(task_id)] == [FileStatus.RECORDED]


def test_files_left_recording_under_an_uploading_task_are_finalised(world):
    """Issue 10 #1: a worker that reported UPLOADING and exited before its recorder threads
    closed their files left them RECORDING for good; nothing moved them."""
    task_id = world.start()
    control = world.control(task_id)
    control.claim()
    world.open_file(control, "a.mp4")
    assert control.finish("stopped by request", None) is TaskState.UPLOADING
    world.executor.died(world.task(task_id).worker)
    world.clock.advance(1)
    world.reconciler.run_once()
    assert [f.status for f in world.c.tasks.files(task_id)] == [FileStatus.RECORDED]
    assert world.finalised == ["a.mp4"]


class SlowStore:
    def __init__(self) -> None:
        self.puts: list[str] = []
        self.lock = threading.Lock()

    def put(self, target: StorageTarget, key: str, path: str, segments: bool = True) -> str:
        with self.lock:
            self.puts.append(path)
        time.sleep(0.3)
        return f"http://bucket/{key}"

    def url(self, target: StorageTarget, key: str) -> str:
        return f"http://bucket/{key}"


class NoCallbacks:
    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        return 200


def _delivery(
    world: World, store: SlowStore, sender: CallbackSender | None = None
) -> DeliveryService:
    return DeliveryService(
        world.c.uow,
        world.clock,
        store,
        LocalBackupStore(world.c.settings.backup_dir),
        sender or NoCallbacks(),
        LocalSpool(),
        callbacks=world.c.callbacks,
    )


def _recorded_file(world: World) -> tuple[str, int, Path]:
    task_id = world.start()
    control = world.control(task_id)
    control.claim()
    file_id = world.open_file(control, "a.mp4")
    path = world.c.settings.data_dir / "a.mp4"
    path.write_bytes(b"\0" * 1000)
    control.file_closed(file_id, "a.mp4", size=1000)
    return task_id, file_id, path


def test_two_uploaders_given_the_same_file_upload_it_once(world):
    """Issue 10 #2: the delivery query also returned UPLOADING rows, so an upload finishing
    between the query and the submit was submitted again, trusted its stale status, found the
    spool copy gone, wrote RECORDED and looped every 0.5 s."""
    _, file_id, path = _recorded_file(world)
    store = SlowStore()
    delivery = _delivery(world, store)
    [listed] = delivery.files_due()
    threads = [threading.Thread(target=delivery.deliver_file, args=(listed,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    delivery.deliver_file(listed)  # the stale row once more, after the upload
    assert store.puts == [str(path)]
    f = world.c.tasks.files(listed.task_id)[0]
    assert f.status is FileStatus.UPLOADED
    assert [a.ok for a in delivery.upload_attempts(file_id)] == [True]
    assert delivery.files_due() == []


def test_a_recorded_file_whose_copy_is_gone_fails_once_instead_of_looping(world):
    task_id, _, path = _recorded_file(world)
    path.unlink()
    store = SlowStore()
    delivery = _delivery(world, store)
    for _ in range(3):
        for f in delivery.files_due():
            delivery.deliver_file(f)
    [f] = world.c.tasks.files(task_id)
    assert f.status is FileStatus.FAILED and store.puts == []
    assert world.events(task_id).count("file_upload_failed") == 1
    assert delivery.files_due() == []


def test_a_callback_is_sent_by_one_sender_only(world):
    sent: list[str] = []

    class Counting:
        def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
            sent.append(headers["X-Cloudrec-Message-Id"])
            time.sleep(0.2)
            return 200

    task_id = world.start(RecordingSpec(room_id="r1", callback_url="http://127.0.0.1:9/cb"))
    world.control(task_id).set_state(TaskState.RECORDING, "recording", callback="task_started")
    delivery = _delivery(world, SlowStore(), Counting())
    [cb] = delivery.callbacks_due()
    threads = [threading.Thread(target=delivery.send, args=(cb,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sent == [cb.message_id]
    assert delivery.callbacks_due() == []
    [(row, attempts)] = delivery.callbacks(task_id)
    assert row.status == "delivered" and len(attempts) == 1


def _concurrently(n: int, call) -> tuple[list[object], list[BaseException]]:  # type: ignore[no-untyped-def]
    results: list[object] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run() -> None:
        barrier.wait()
        try:
            results.append(call())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_concurrent_starts_with_one_client_task_id_make_one_task(world):
    """Issue 10 #13: 12 concurrent StartRecord calls with one ClientTaskId made 12 tasks
    recording the same stream (a read, then an insert)."""
    results, errors = _concurrently(
        12,
        lambda: world.start(client_ref="client-1", same_ref_within=timedelta(minutes=10)),
    )
    assert errors == []
    assert len(set(results)) == 1
    assert len(world.executor.starts) == 1


def test_the_per_app_limit_holds_under_concurrent_starts(database_url, data_dir):
    world = World(database_url, data_dir, max_tasks_per_app=2)
    try:
        results, errors = _concurrently(8, world.start)
        assert len(results) == 2
        assert len(errors) == 6
        assert all(isinstance(e, CloudrecError) and e.reason == "too_many_tasks" for e in errors)
    finally:
        world.c.engine.dispose()


def test_a_resid_starts_one_recording_under_concurrent_starts(world):
    resid = world.c.tasks.apply_resource(APP)
    results, errors = _concurrently(6, lambda: world.start(resource_id=resid))
    assert len(results) == 1 and len(errors) == 5
    assert {getattr(e, "reason", None) for e in errors} == {"resource_in_use"}


def test_a_start_is_refused_while_the_spool_disk_is_nearly_full(database_url, data_dir):
    """Issue 10 #10: the service should refuse new starts while the spool is nearly full."""
    world = World(database_url, data_dir, min_free_spool_mb=10**9)  # more than any disk
    try:
        with pytest.raises(CloudrecError) as err:
            world.start()
        assert err.value.reason == "disk_full" and "min_free_spool_mb" in err.value.message
        assert world.executor.starts == []
    finally:
        world.c.engine.dispose()


def test_a_task_stopped_while_its_restart_backs_off_ends_without_a_new_worker(world):
    task_id = world.start()
    for attempt in (1, 2):
        world.control(task_id, attempt).claim()
        world.executor.died(world.task(task_id).worker)
        world.reconciler.run_once()
    assert world.task(task_id).worker is None  # waiting 1 s before attempt 3
    world.c.tasks.stop(APP, task_id)
    world.reconciler.run_once()
    task = world.task(task_id)
    assert task.state is TaskState.COMPLETED and task.end_reason == "stopped by request"
    assert [a for _, a in world.executor.starts] == [1, 2]


def test_a_slow_pass_over_one_task_never_takes_another_tasks_live_worker_for_dead(world):
    """Review: the reconciler judged every task on the lease it read at the start of its
    pass; a pass made slow by probing a dead attempt's long file killed live workers."""
    dead, live = world.start(), world.start()
    world.control(dead).claim()
    world.open_file(world.control(dead), "long.mp4")
    live_control = world.control(live)
    live_control.claim()

    def slow_probe(f: RecordedFile) -> dict[str, object]:
        world.clock.advance(20)  # a 20 s probe, while the live worker keeps renewing
        live_control.renew()
        return {"size": 1, "duration_ms": 1}

    world.reconciler._finalise = slow_probe  # type: ignore[method-assign]
    world.executor.died(world.task(dead).worker)
    world.reconciler.run_once()
    assert world.executor.killed == []
    assert world.task(live).attempt == 1 and world.task(dead).attempt == 2


def test_two_reconcilers_start_the_next_attempt_once(world):
    """Review: starting the next attempt was a compare-and-set on the attempt only, so two
    reconcilers could both start attempt N: two workers with one fencing token."""
    task_id = world.start()
    world.control(task_id).claim()
    world.executor.died(world.task(task_id).worker)
    with world.c.uow() as uow:  # what reconcilers see after a death: attempt 2, no worker
        uow.tasks.update(task_id, attempt=2, worker=None, lease_until=world.clock())
        uow.commit()
    stale = world.task(task_id)
    other = Reconciler(
        world.c.uow, world.clock, world.executor, world._finalise, callbacks=world.c.callbacks
    )
    assert world.reconciler._start_next(stale, world.clock()) is not None
    assert other._start_next(stale, world.clock()) is None  # the same stale row: it loses
    assert world.executor.starts.count((task_id, 2)) == 1


def test_a_worker_that_gave_its_task_up_is_replaced_at_once_and_not_counted_dead(world):
    """Review: a clean SIGTERM release counted as a death, so a few service restarts used up
    the restart budget; and deaths never reset after the task ran well."""
    task_id = world.start()
    control = world.control(task_id)
    control.claim()
    control.release("SIGTERM")
    world.reconciler.run_once()
    task = world.task(task_id)
    assert (task.attempt, task.deaths) == (2, 0)
    assert world.executor.starts == [(task_id, 1), (task_id, 2)]
    world.control(task_id, 2).claim()
    world.clock.advance(3600)  # attempt 2 runs well for an hour, then dies
    world.control(task_id, 2).renew()
    world.executor.died(world.task(task_id).worker)
    world.reconciler.run_once()
    assert world.task(task_id).deaths == 1


def test_a_pause_racing_a_stop_cannot_undo_it(world):
    """Review: pause, resume and stop read the task, then wrote ``desired`` without a
    condition: a pause that read the task before a stop overwrote it."""
    task_id = world.start()
    before = world.task(task_id)
    world.c.tasks.stop(APP, task_id)
    world.c.tasks.get = lambda app_id, tid: before  # type: ignore[method-assign]
    with pytest.raises(CloudrecError):
        world.c.tasks.pause(APP, task_id)
    with world.c.uow() as uow:
        assert uow.tasks.get(task_id).desired.value == "stopped"


def test_a_file_moved_to_backup_by_a_service_that_died_is_found_there(world):
    """Review: the backup store moved the file, then the row said so; a crash in between
    left the row without its backup path, and the file was reported lost."""
    task_id, file_id, path = _recorded_file(world)
    backup = LocalBackupStore(world.c.settings.backup_dir)
    backup.keep(APP, task_id, "a.mp4", str(path))  # the move, then the service died
    with world.c.uow() as uow:
        uow.tasks.update_file(file_id, status=FileStatus.UPLOADING)
        uow.commit()
    delivery = _delivery(world, SlowStore())
    assert delivery.deliver_file(file_id) is FileStatus.BACKED_UP
    [f] = world.c.tasks.files(task_id)
    assert f.backup_path == backup.where(APP, task_id, "a.mp4")


def test_claims_are_renewed_only_for_files_this_service_holds(world):
    """Review: the delivery loop renewed the claims of files merely queued, so an expired
    claim of a dead service was kept alive and the file was never delivered."""
    _, file_id, _ = _recorded_file(world)
    with world.c.uow() as uow:  # a claim left by a service that died
        uow.tasks.update_file(file_id, claim_until=world.clock())
        uow.commit()
    world.clock.advance(1)
    delivery = _delivery(world, SlowStore())
    delivery.renew_claims()
    assert delivery.deliver_file(file_id) is FileStatus.UPLOADED


def test_a_callback_retried_later_is_not_sent_again_by_a_sender_holding_the_old_row(world):
    """Review: the callback claim ignored ``next_at``, so a second sender holding the row
    listed before a failed attempt sent it again at once, counting from a stale count."""
    posts: list[int] = []

    class Failing:
        def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
            posts.append(1)
            return 500

    task_id = world.start(RecordingSpec(room_id="r1", callback_url="http://127.0.0.1:9/cb"))
    world.control(task_id).set_state(TaskState.RECORDING, "recording", callback="task_started")
    delivery = _delivery(world, SlowStore(), Failing())
    [cb] = delivery.callbacks_due()
    assert delivery.send(cb) is False
    assert delivery.send(cb) is False  # the stale row: not due for 5 s
    assert len(posts) == 1
    [(row, attempts)] = delivery.callbacks(task_id)
    assert row.attempts == 1 and len(attempts) == 1


def test_an_attempt_on_another_machine_records_its_node_and_a_failover_event_and_callback(world):
    """Issue 14: the task says where it runs (``node``), and a next attempt on another machine
    is told as a ``failover`` event and callback (from node, to node); a next attempt on the
    same machine is a restart, no failover."""
    spec = RecordingSpec(room_id="r1", callback_url="http://127.0.0.1:9/cb")
    task_id = world.start(spec)

    def attempt(n: int, node: str, dies: bool = True) -> None:
        control = TaskControl(
            world.c.uow, world.clock, task_id, n, callbacks=world.c.callbacks, node=node
        )
        assert control.claim() is not None
        if dies:
            world.executor.died(world.task(task_id).worker)
            world.reconciler.run_once()
            while world.task(task_id).worker is None:  # the next attempt's backoff
                world.clock.advance(1)
                world.reconciler.run_once()

    attempt(1, "node-a")
    assert world.task(task_id).node == "node-a" and "failover" not in world.events(task_id)
    attempt(2, "node-a")  # the worker died and came back on its machine
    assert world.task(task_id).node == "node-a" and "failover" not in world.events(task_id)
    attempt(3, "node-b", dies=False)
    task = world.task(task_id)
    assert (task.node, task.attempt) == ("node-b", 3)
    [detail] = [d for kind, _, d in world.c.tasks.events(task_id) if kind == "failover"]
    assert detail == "attempt 3: from node node-a to node node-b"
    [failover] = [
        json.loads(row.body)["context"]
        for row, _ in world.c.delivery.callbacks(task_id)
        if row.event == "task_failover"
    ]
    assert failover["msgname"] == "task_failover" and failover["recordid"] == task_id
    assert (failover["attempt"], failover["fromnode"], failover["tonode"]) == (
        3,
        "node-a",
        "node-b",
    )
