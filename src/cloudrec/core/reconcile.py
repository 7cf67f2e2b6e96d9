"""The reconciler: the one owner that moves every unfinished task forward when its worker is
gone (docs/reliability.md).

Run about every second by the service (``cloudrec serve``; several may run on one database:
every change is a compare-and-set on the attempt and state it saw, so two reconcilers, or a
reconciler and a worker, never both win).  For each task not yet ended:

- its worker is gone (the executor saw it exit, or its lease ran out) while the task is
  recording: the dead attempt's files are finalised (trimmed to whole fragments, probed) and
  kept as parts of the recording, and the next attempt is started, its files beginning where
  the dead one stopped (from the ingest's backlog).  Deaths back off (1, 2, 4, … s) and the
  task ends FAILED after ``max_restarts`` of them;
- its worker is gone while the task was stopping: the files are finalised and the task ends
  as the worker would have ended it (uploading or completed);
- a worker whose lease ran out but which still runs (frozen) is killed first: it could not
  write anything anyway (its writes are fenced), but it would hold its files open;
- a task already uploading with files still marked recording (a worker that exited before its
  recorders closed them): those files are finalised, so that delivery can complete the task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from cloudrec.core.callbacks import Callbacks
from cloudrec.core.control import RELEASED, STARTING, end_recording
from cloudrec.core.ports import UnitOfWork
from cloudrec.core.recording import START_GRACE, Executor
from cloudrec.core.tasks import (
    END_STOPPED,
    END_WORKER_DIED,
    Desired,
    FileStatus,
    RecordedFile,
    Task,
    TaskState,
)

log = logging.getLogger("cloudrec.reconcile")
Clock = Callable[[], datetime]

_RECORDING = (TaskState.INITIALISING, TaskState.RECORDING, TaskState.PAUSED, TaskState.STOPPING)
# A worker that still runs is given this long past its lease before it is killed (a machine
# so loaded that a heartbeat is late is not a dead worker).
FROZEN_GRACE = timedelta(seconds=10)


class FileFinaliser(Protocol):
    """Reads what an abandoned file holds (size, duration) after its worker died, cutting it
    back to what a player can read."""

    def __call__(self, file: RecordedFile) -> dict[str, object]: ...


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5  # deaths in a row after which the task fails
    backoff_s: float = 1.0  # before the second restart; doubles after each, capped
    backoff_max_s: float = 30.0
    # An attempt that ran this long ran well: the deaths before it are forgotten.
    healthy: timedelta = timedelta(minutes=10)

    def delay(self, deaths: int) -> timedelta:
        """The wait before the next attempt after ``deaths`` deaths in a row (the first
        restart, and a worker that gave its task up, at once)."""
        if deaths <= 1:
            return timedelta(0)
        return timedelta(seconds=min(self.backoff_max_s, self.backoff_s * 2 ** (deaths - 2)))


class Reconciler:
    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        clock: Clock,
        executor: Executor,
        finalise: FileFinaliser,
        policy: RestartPolicy = RestartPolicy(),
        *,
        callbacks: Callbacks,
    ) -> None:
        self._uow = uow
        self._callbacks = callbacks
        self._clock = clock
        self._executor = executor
        self._finalise = finalise
        self.policy = policy

    def run_once(self) -> list[str]:
        """One pass over every task not ended; returns what it did, one line each."""
        self._executor.reap()
        with self._uow() as uow:
            active = [t.task_id for t in uow.tasks.active()]
        done = []
        for task_id in active:
            try:
                action = self._reconcile(task_id)
            except Exception:  # one task's trouble must not stop the others' reconciling
                log.exception("reconcile.error", extra={"fields": {"task_id": task_id}})
                continue
            if action:
                done.append(f"{task_id}: {action}")
        return done

    def _fresh(self, task_id: str) -> Task | None:
        with self._uow() as uow:
            return uow.tasks.get(task_id)

    def _reconcile(self, task_id: str) -> str | None:
        # Judged on the row as it is now, never on a snapshot taken before the work on other
        # tasks (probing long files takes a while): a live worker is never taken for dead.
        task = self._fresh(task_id)
        if task is None:
            return None
        now = self._clock()
        if task.state is TaskState.UPLOADING:
            return self._orphaned_files(task, now)
        if task.state not in _RECORDING:
            return None
        swept = self._sweep(task)
        if task.worker is None:
            return self._start_next(task, now) or swept
        gone = self._gone(task, now)
        if gone is None:
            return swept
        why, death = gone
        action = self._replace(task, now, why, death)
        after = self._fresh(task_id)
        if after is not None and after.worker is None and after.state in _RECORDING:
            started = self._start_next(after, self._clock())  # at once when no backoff is due
            action = f"{action}; {started}" if started else action
        return action

    def _gone(self, task: Task, now: datetime) -> tuple[str, bool] | None:
        """Why the task's worker is gone and whether it died (a worker that gave the task up
        did not), or None while it owns the task."""
        handle = task.worker or ""
        if handle == RELEASED:
            return "the worker gave the task up (SIGTERM), its files closed", False
        alive = None if handle == STARTING else self._executor.alive(handle)
        lease = task.lease_until or task.created_at
        if alive is False:
            return self._executor.exit_detail(handle), True
        if lease >= now:
            return None
        if alive is None:
            beat = (task.heartbeat_at or task.created_at).isoformat()
            return f"no heartbeat since {beat}", True
        if now - lease < FROZEN_GRACE:
            return None
        current = self._fresh(task.task_id)  # kill only on what the row says now
        if current is None or current.attempt != task.attempt or current.lease_until != lease:
            return None
        self._executor.kill(handle)
        return f"worker frozen: no heartbeat since {lease.isoformat()}, killed", True

    def _finalise_files(self, task_id: str, below_attempt: int) -> int:
        """Keep the files still marked recording of attempts before ``below_attempt``: probe
        them first (no transaction open: a probe reads the whole file), then mark each."""
        with self._uow() as uow:
            files = [
                f
                for f in uow.tasks.files(task_id)
                if f.status is FileStatus.RECORDING
                and f.id is not None
                and f.attempt < below_attempt
            ]
        probed = [(f, self._finalise(f)) for f in files]
        count = 0
        with self._uow() as uow:
            for f, fields in probed:
                assert f.id is not None
                if uow.tasks.update_file_if(
                    f.id,
                    (FileStatus.RECORDING,),
                    status=FileStatus.RECORDED,
                    complete=False,
                    **fields,
                ):
                    count += 1
            uow.commit()
        return count

    def _sweep(self, task: Task) -> str | None:
        """Files of earlier attempts still marked recording (a reconciler that died between
        starting the next attempt and keeping the dead one's files)."""
        if self._finalise_files(task.task_id, task.attempt):
            return "files of an earlier attempt kept"
        return None

    def _replace(self, task: Task, now: datetime, why: str, death: bool) -> str | None:
        """The worker of ``task.attempt`` is gone: take the task from it (the next attempt's
        number, in one compare-and-set), keep what it wrote, then end the task or leave it to
        :meth:`_start_next`."""
        n = task.attempt
        ran = now - (task.attempt_started_at or task.created_at)
        deaths = (1 if ran >= self.policy.healthy else task.deaths + 1) if death else task.deaths
        with self._uow() as uow:
            if not uow.tasks.update_if(
                task.task_id,
                attempt=n,
                states=_RECORDING,
                new_attempt=n + 1,
                worker=None,
                deaths=deaths,
                resume_at=task.heartbeat_at or task.created_at,
                lease_until=now + (self.policy.delay(deaths) if death else timedelta(0)),
            ):
                return None  # whoever moved the task on since we read it wins
            uow.tasks.add_event(
                task.task_id, "worker_died" if death else "worker_left", now, f"attempt {n}: {why}"
            )
            uow.commit()
        kept = self._finalise_files(task.task_id, n + 1)
        detail = f"attempt {n}: {why}; {kept} file(s) kept"
        log.warning(
            "task.worker_died" if death else "task.worker_left",
            extra={"fields": {"task_id": task.task_id, "attempt": n, "error": why}},
        )
        stopping = task.desired is Desired.STOPPED or task.state is TaskState.STOPPING
        if stopping or deaths > self.policy.max_restarts:
            with self._uow() as uow:
                current = uow.tasks.get(task.task_id)
                if current is None or not uow.tasks.update_if(
                    task.task_id, attempt=n + 1, states=_RECORDING, unstarted=True, worker=None
                ):
                    return None
                if stopping:
                    end_recording(
                        uow, self._callbacks, current, now, current.end_reason or END_STOPPED, None
                    )
                else:
                    self._fail(
                        uow, current, now, f"{detail}; {deaths} deaths in a row, no more restarts"
                    )
                uow.commit()
            return (
                "ended after its worker was lost" if stopping else "failed: restart limit reached"
            )
        return f"attempt {n} {'died' if death else 'left'} ({detail})"

    def _start_next(self, task: Task, now: datetime) -> str | None:
        """A task waiting for its next attempt's worker: start it once its backoff is over
        (one reconciler only: the claim is on the task having no worker)."""
        if task.desired is Desired.STOPPED or task.state is TaskState.STOPPING:
            with self._uow() as uow:  # stopped (or ending by itself) while it waited
                if not uow.tasks.update_if(
                    task.task_id,
                    attempt=task.attempt,
                    states=_RECORDING,
                    unstarted=True,
                    worker=None,
                ):
                    return None
                end_recording(uow, self._callbacks, task, now, task.end_reason or END_STOPPED, None)
                uow.commit()
            return "stopped while waiting for its next attempt"
        if task.lease_until is not None and task.lease_until > now:
            return None
        with self._uow() as uow:
            if not uow.tasks.update_if(
                task.task_id,
                attempt=task.attempt,
                states=_RECORDING,
                unstarted=True,
                worker=STARTING,
                lease_until=now + START_GRACE,
                attempt_started_at=now,
            ):
                return None
            uow.commit()
        handle = self._executor.start(task.task_id, task.attempt, task.units)
        with self._uow() as uow:
            uow.tasks.update_if(task.task_id, attempt=task.attempt, worker=handle)
            uow.tasks.add_event(
                task.task_id, "worker_restarted", self._clock(), f"attempt {task.attempt}"
            )
            uow.commit()
        log.warning(
            "task.worker_restarted",
            extra={"fields": {"task_id": task.task_id, "attempt": task.attempt, "worker": handle}},
        )
        return f"attempt {task.attempt} started ({handle})"

    def _fail(self, uow: UnitOfWork, task: Task, now: datetime, detail: str) -> None:
        uow.tasks.update(
            task.task_id,
            state=TaskState.FAILED,
            ended_at=now,
            end_reason=END_WORKER_DIED,
            error=detail,
        )
        uow.tasks.add_event(task.task_id, "failed", now, detail)
        failed = uow.tasks.get(task.task_id)
        if failed is not None:
            self._callbacks.enqueue(uow, now, failed, "task_failed", uow.tasks.files(task.task_id))
        log.error(
            "task.failed",
            extra={"fields": {"task_id": task.task_id, "reason": END_WORKER_DIED, "error": detail}},
        )

    def _orphaned_files(self, task: Task, now: datetime) -> str | None:
        """Files still marked recording under an uploading task, once its worker is gone."""
        with self._uow() as uow:
            files = uow.tasks.files(task.task_id)
        if not any(f.status is FileStatus.RECORDING for f in files):
            return None
        handle = task.worker or ""
        alive = None if handle in (STARTING, RELEASED) else self._executor.alive(handle)
        if alive or (alive is None and (task.lease_until or now) > now - timedelta(seconds=5)):
            return None
        kept = self._finalise_files(task.task_id, task.attempt + 1)
        with self._uow() as uow:
            uow.tasks.add_event(task.task_id, "files_finalised", now, f"{kept} file(s)")
            uow.commit()
        return f"{kept} orphaned file(s) finalised"
