"""The recording service: start, stop and watch tasks (API side), and one task's control
surface (worker side).  Each method is one unit of work; time comes from the injected clock.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

from cloudrec.core.control import STARTING
from cloudrec.core.cost import recording_units
from cloudrec.core.errors import CloudrecError
from cloudrec.core.mixing import MixSpec
from cloudrec.core.ports import UnitOfWork
from cloudrec.core.tasks import (
    Desired,
    RecordedFile,
    RecordingSpec,
    StorageTarget,
    Task,
    TaskState,
    new_task_id,
)

log = logging.getLogger("cloudrec.tasks")
Clock = Callable[[], datetime]

RESOURCE_TTL = timedelta(minutes=5)
_NOT_ENDED = (
    TaskState.INITIALISING,
    TaskState.RECORDING,
    TaskState.PAUSED,
    TaskState.STOPPING,
    TaskState.UPLOADING,
)


class Executor(Protocol):
    """Starts the worker of a task.  The worker gets everything else from the database."""

    def start(self, task_id: str, attempt: int, units: int = 1) -> str:
        """Start the worker of attempt ``attempt``, which costs ``units`` (core/cost.py);
        return a handle (``"local:PID"``)."""

    def room_for(self, units: int) -> str | None:
        """None when a worker of ``units`` fits now (or this executor does not count them);
        else why it does not (a start is then refused)."""

    def alive(self, handle: str) -> bool | None:
        """Whether the worker behind ``handle`` runs; None if this executor cannot tell."""

    def exit_detail(self, handle: str) -> str:
        """How the worker ended (``"killed by signal 9"``), for the task's events."""

    def kill(self, handle: str) -> None:
        """End a worker that has lost its task (frozen past its lease), if it is ours."""

    def reap(self) -> None:
        """Collect the exit status of every worker that has ended (no zombie is left)."""


# A new worker has this long to start (an interpreter and PyAV) and claim its lease.
START_GRACE = timedelta(seconds=20)


class StartUndecidedError(Exception):
    """The executor could not tell whether the worker started (its answer did not come): the
    task keeps its start grace, and the lease decides (a worker that did start claims it; one
    that did not is replaced by the next attempt when the grace runs out, never the same
    attempt twice)."""


class TaskService:
    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        clock: Clock,
        executor: Executor,
        max_active_per_app: int = 200,
        resource_ttl: timedelta = RESOURCE_TTL,
        spool_free: Callable[[], int] | None = None,
        min_free_bytes: int = 0,
    ) -> None:
        self._resource_ttl = resource_ttl
        self._spool_free = spool_free
        self._min_free = min_free_bytes
        self._uow = uow
        self._clock = clock
        self._executor = executor
        self._max_active = max_active_per_app

    # -- resources (JoCloud resid) --------------------------------------------------------
    def apply_resource(self, app_id: int) -> str:
        resource_id = secrets.token_hex(30) + "-" + secrets.token_hex(8)
        now = self._clock()
        with self._uow() as uow:
            uow.tasks.add_resource(resource_id, app_id, now, now + self._resource_ttl)
            uow.commit()
        return resource_id

    def _claim_resource(self, uow: UnitOfWork, app_id: int, resource_id: str, task_id: str) -> None:
        found = uow.tasks.resource(resource_id)
        if found is None or found[0] != app_id:
            raise CloudrecError.not_found(
                f"resid {resource_id!r} is unknown", reason="resource_unknown"
            )
        _, expires_at, bound = found
        if bound is not None:
            task = uow.tasks.get(bound)
            if task is not None and not task.state.terminal:
                raise CloudrecError.conflict(
                    f"resid {resource_id!r} already started recording {bound}",
                    reason="resource_in_use",
                )
            raise CloudrecError.failed_precondition(
                f"resid {resource_id!r} was used by recording {bound}, which has ended; "
                "apply for a new one",
                reason="resource_used",
            )
        if expires_at < self._clock():
            raise CloudrecError.failed_precondition(
                f"resid {resource_id!r} expired at {expires_at.isoformat()}",
                reason="resource_expired",
            )
        if not uow.tasks.use_resource(resource_id, task_id):
            raise CloudrecError.conflict(
                f"resid {resource_id!r} is already in use", reason="resource_in_use"
            )

    # -- tasks --------------------------------------------------------------------------
    def start(
        self,
        app_id: int,
        spec: RecordingSpec,
        storage: StorageTarget | None,
        resource_id: str | None = None,
        task_id: str | None = None,
        require_live: bool = True,
        client_ref: str | None = None,
        same_ref_within: timedelta | None = None,
        request: str = "",
    ) -> Task:
        """Create a task and start its worker.  Refuses when no wanted stream is live.
        ``task_id``: the dialect's own id format (default: 35 hex characters).
        ``require_live=False`` starts it on an empty room (ZEGO waits for streams, up to the
        idle timeout).  ``client_ref``: the caller's own id for the task (ZEGO ClientTaskId):
        a task started with the same one within ``same_ref_within`` is returned instead of a
        new one.  The checks (the resource, the client reference, the app's limit) and the
        insert are one transaction serialised per app: concurrent starts cannot pass them
        together.  ``request``: the request as it was sent, secrets hidden (the detail of the
        task's ``created`` event)."""
        self._check_spool()
        units = self._check_room(app_id, spec)
        now = self._clock()
        task = Task(
            task_id=task_id or new_task_id(),
            app_id=app_id,
            spec=spec,
            state=TaskState.INITIALISING,
            desired=Desired.RUNNING,
            created_at=now,
            resource_id=resource_id or client_ref,
            attempt=1,
            lease_until=now + START_GRACE,
            units=units,
        )
        with self._uow() as uow:
            uow.tasks.lock_app(app_id)
            if client_ref is not None and same_ref_within is not None:
                earlier = uow.tasks.by_client_ref(app_id, client_ref, now - same_ref_within)
                if earlier is not None:
                    return earlier  # the same client id, the same task
            if resource_id is not None:
                self._claim_resource(uow, app_id, resource_id, task.task_id)
            live = [
                s
                for s in uow.rooms.live(app_id, spec.room_id)
                if spec.wants(s.user_id, s.stream_id)
            ]
            if not live and require_live:
                who = f"user {', '.join(spec.user_ids)}" if spec.user_ids else "any user"
                raise CloudrecError.failed_precondition(
                    f"room {spec.room_id!r} has no live stream of {who}",
                    reason="room_not_publishing",
                )
            if uow.tasks.count_active(app_id) >= self._max_active:
                raise CloudrecError.resource_exhausted(
                    f"app {app_id} already runs {self._max_active} recordings",
                    reason="too_many_tasks",
                )
            uow.tasks.add(task, storage)
            uow.tasks.update(task.task_id, worker=STARTING)
            uow.tasks.add_event(task.task_id, "created", now, request)
            uow.commit()
        try:
            handle = self._executor.start(task.task_id, task.attempt, task.units)
        except StartUndecidedError:
            log.warning("task.worker_start_undecided", extra={"fields": {"task_id": task.task_id}})
            return task
        except Exception:
            # The task is stored: the reconciler starts its worker at its next pass (not a
            # death), so the caller is told of a task that will record, not of a failure.
            log.exception("task.worker_start_failed", extra={"fields": {"task_id": task.task_id}})
            with self._uow() as uow:
                uow.tasks.update_if(
                    task.task_id, attempt=task.attempt, worker=None, lease_until=self._clock()
                )
                uow.commit()
            return task
        with self._uow() as uow:
            uow.tasks.update_if(task.task_id, attempt=task.attempt, worker=handle)
            uow.commit()
        log.info(
            "task.created",
            extra={
                "fields": {
                    "task_id": task.task_id,
                    "app_id": app_id,
                    "room_id": spec.room_id,
                    "mode": spec.mode.value,
                    "worker": handle,
                }
            },
        )
        return task

    def _check_room(self, app_id: int, spec: RecordingSpec) -> int:
        """The units a recording of ``spec`` costs now; refused (never queued) when no
        machine has room for it.  Asked before the start's transaction: the executor's
        answer may take a round trip, and it is advisory (two starts may both pass it)."""
        with self._uow() as uow:
            live = [
                s
                for s in uow.rooms.live(app_id, spec.room_id)
                if spec.wants(s.user_id, s.stream_id)
            ]
        units = recording_units(spec, len(live))
        full = self._executor.room_for(units)
        if full is not None:
            raise CloudrecError.unavailable(full, reason="no_room")
        return units

    def _check_spool(self) -> None:
        """Refuse a start while the spool's disk is nearly full: a recording that cannot be
        written is better refused than started."""
        if self._spool_free is None or self._min_free <= 0:
            return
        free = self._spool_free()
        if free < self._min_free:
            raise CloudrecError.unavailable(
                f"the spool disk has {free // 2**20} MiB free, less than the "
                f"{self._min_free // 2**20} MiB kept free (min_free_spool_mb)",
                reason="disk_full",
            )

    def get(self, app_id: int, task_id: str) -> Task:
        task = None
        if "\x00" not in task_id:  # no id holds NUL (nor can PostgreSQL's text: issue 11)
            with self._uow() as uow:
                task = uow.tasks.get(task_id)
        if task is None or task.app_id != app_id:
            raise CloudrecError.not_found(
                f"recording {task_id!r} does not exist", reason="task_unknown"
            )
        return task

    def files(self, task_id: str) -> list[RecordedFile]:
        with self._uow() as uow:
            return uow.tasks.files(task_id)

    def events(self, task_id: str) -> list[tuple[str, datetime, str]]:
        with self._uow() as uow:
            return uow.tasks.events(task_id)

    def stop(self, app_id: int, task_id: str) -> Task:
        task = self.get(app_id, task_id)
        if task.state.terminal or task.desired is Desired.STOPPED:
            raise CloudrecError.failed_precondition(
                f"recording {task_id!r} has already stopped", reason="task_ended"
            )
        now = self._clock()
        with self._uow() as uow:
            # Compare-and-set: a pause or resume racing this stop cannot undo it.
            if not uow.tasks.update_if(
                task_id,
                desired_in=(Desired.RUNNING, Desired.PAUSED),
                states=_NOT_ENDED,
                desired=Desired.STOPPED,
                stop_requested_at=now,
            ):
                raise CloudrecError.failed_precondition(
                    f"recording {task_id!r} has already stopped", reason="task_ended"
                )
            uow.tasks.add_event(task_id, "stop_requested", now)
            uow.commit()
        log.info("task.stop_requested", extra={"fields": {"task_id": task_id}})
        return self.get(app_id, task_id)

    def pause(self, app_id: int, task_id: str) -> Task:
        """Leave what follows out of the recording until :meth:`resume`."""
        return self._set_desired(app_id, task_id, Desired.PAUSED)

    def resume(self, app_id: int, task_id: str) -> Task:
        task = self.get(app_id, task_id)
        if task.desired is not Desired.PAUSED:
            raise CloudrecError.failed_precondition(
                f"recording {task_id!r} is not paused", reason="not_paused"
            )
        return self._set_desired(app_id, task_id, Desired.RUNNING)

    def _set_desired(self, app_id: int, task_id: str, desired: Desired) -> Task:
        task = self.get(app_id, task_id)
        if task.state.terminal or task.desired is Desired.STOPPED:
            raise CloudrecError.failed_precondition(
                f"recording {task_id!r} has already stopped", reason="task_ended"
            )
        if desired is Desired.PAUSED and task.desired is Desired.PAUSED:
            raise CloudrecError.invalid_argument(f"recording {task_id!r} is already paused")
        with self._uow() as uow:
            if not uow.tasks.update_if(
                task_id, desired_in=(task.desired,), states=_NOT_ENDED, desired=desired
            ):
                raise CloudrecError.failed_precondition(
                    f"recording {task_id!r} changed meanwhile (stopped, paused or resumed)",
                    reason="task_ended",
                )
            uow.tasks.add_event(task_id, f"{desired.value}_requested", self._clock())
            uow.commit()
        return self.get(app_id, task_id)

    def take_snapshot(self, app_id: int, task_id: str) -> Task:
        """Ask a mixed recording in progress for a screenshot of its next composed picture;
        its worker takes one per request (the task's version moves: read at its next tick)
        and files it as a JPG of the task."""
        task = self.get(app_id, task_id)
        over = (TaskState.STOPPING, TaskState.UPLOADING, TaskState.COMPLETED, TaskState.FAILED)
        if task.state in over or task.desired is Desired.STOPPED:
            raise CloudrecError.failed_precondition(
                f"recording {task_id!r} has already stopped", reason="task_ended"
            )
        if task.spec.mix is None:
            raise CloudrecError.invalid_argument(
                f"recording {task_id!r} records single streams: a screenshot is of a mix"
            )
        if not task.spec.media.has_video:
            raise CloudrecError.invalid_argument(
                f"recording {task_id!r} records sound only: it has no picture to take"
            )
        if task.desired is Desired.PAUSED or task.state is TaskState.PAUSED:
            raise CloudrecError.failed_precondition(
                f"recording {task_id!r} is paused: resume it first"
            )
        if task.state is not TaskState.RECORDING:
            raise CloudrecError.failed_precondition(
                f"recording {task_id!r} has not started mixing yet (no stream has arrived)"
            )
        with self._uow() as uow:
            uow.tasks.request_snapshot(task_id)
            uow.tasks.add_event(task_id, "snapshot_requested", self._clock())
            uow.commit()
        return self.get(app_id, task_id)

    def page(
        self,
        app_id: int,
        room_id: str | None,
        active: bool,
        since: datetime,
        until: datetime,
        offset: int,
        limit: int,
    ) -> tuple[int, list[Task]]:
        """Tasks created in [since, until), newest first: (total, one page).  ``active``:
        still recording; otherwise ended (uploading, completed or failed)."""
        with self._uow() as uow:
            return uow.tasks.page(app_id, room_id, active, since, until, offset, limit)

    def update_mix(
        self,
        app_id: int,
        task_id: str,
        mix: dict[str, object],
        keep_users: bool = False,
    ) -> Task:
        """A new layout for a running mixed recording: its worker uses it from the next
        frame on (the task's version moves: its worker reads the task at its next tick).
        The users recorded from then on: those the layout's views name (every user for a
        template layout), or with ``keep_users`` those the task records now.  Read and
        written in one transaction serialised per app: two updates at once cannot undo
        each other."""
        self.get(app_id, task_id)  # the app's own, or not found
        spec = MixSpec.from_json(mix)
        users = tuple(sorted({i.user_id for i in spec.inputs})) if spec.template_id is None else ()
        with self._uow() as uow:
            uow.tasks.lock_app(app_id)
            task = uow.tasks.get(task_id)
            assert task is not None
            new = replace(task.spec, mix=mix, user_ids=task.spec.user_ids if keep_users else users)
            uow.tasks.update(task_id, spec_json=json.dumps(new.to_json()))
            uow.tasks.add_event(task_id, "layout_updated", self._clock())
            uow.commit()
        return self.get(app_id, task_id)

    def update_users(self, app_id: int, task_id: str, user_ids: tuple[str, ...]) -> Task:
        """Record the streams of ``user_ids`` (empty: every user) from now on: the worker
        closes the files of users no longer wanted and opens files for new ones at its next
        tick (the task's version moves)."""
        task = self.get(app_id, task_id)
        if task.state.terminal or task.desired is Desired.STOPPED:
            raise CloudrecError.failed_precondition(
                f"recording {task_id!r} has already stopped", reason="task_ended"
            )
        with self._uow() as uow:  # the spec as it is now (a layout update may have moved it)
            uow.tasks.lock_app(app_id)
            current = uow.tasks.get(task_id)
            assert current is not None
            new = replace(current.spec, user_ids=user_ids)
            uow.tasks.update(task_id, spec_json=json.dumps(new.to_json()))
            uow.tasks.add_event(task_id, "users_updated", self._clock(), ",".join(user_ids))
            uow.commit()
        return self.get(app_id, task_id)
