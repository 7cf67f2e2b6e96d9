"""A recorder host (``cloudrec recorder-host``): one warm process that runs many tasks' workers,
each in threads of its own (PyAV releases the GIL while it demuxes and muxes).

The interpreter, PyAV and the database engine are paid once per host instead of once per
recording, and a start needs no interpreter start-up: the service hands the task to a host
that is already running.  Isolation is kept by the ownership rules (docs/reliability.md): a
host that dies takes its tasks with it, and the reconciler starts each one's next attempt.

Protocol, one line each way (the service writes to the host's stdin, reads its stdout):

- ``run TASK_ID ATTEMPT``: start the worker of that attempt;
- ``abandon TASK_ID ATTEMPT``: that attempt has lost its task (its lease ran out): stop it;
- ``exit``: take no more tasks; exit once the running ones are over;
- the host answers ``done TASK_ID ATTEMPT DETAIL`` when a worker's run is over.

A host outlives the service that started it, like a worker process: when its stdin closes it
takes no more tasks and exits once its last one is over.  SIGTERM makes every worker close its
files and give its task up (the next attempt goes on elsewhere).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import IO, Protocol

from cloudrec.config import Settings, node_name
from cloudrec.core.callbacks import Callbacks
from cloudrec.core.control import TaskControl
from cloudrec.core.ports import TaskWatch, UnitOfWork
from cloudrec.core.service import Clock
from cloudrec.media.recorder.worker import TaskWorker

log = logging.getLogger("cloudrec.host")

# How long a finished worker's recorder threads may take to stop before it is reported done.
LEFTOVER_WAIT_S = 15.0


class HostedWorker(Protocol):
    """What a host needs of a worker (:class:`TaskWorker`)."""

    terminated: threading.Event

    def run(self) -> object: ...

    def lease_lost(self) -> None: ...

    def stop_threads(self, wait_s: float) -> int: ...


def task_worker(control: TaskControl, settings: Settings) -> HostedWorker:
    return TaskWorker(control, settings)


class RecorderHost:
    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        clock: Clock,
        settings: Settings,
        out: IO[str],
        make_worker: Callable[[TaskControl, Settings], HostedWorker] = task_worker,
        watch: TaskWatch | None = None,
        *,
        callbacks: Callbacks,
    ) -> None:
        self._make_worker = make_worker
        self._watch = watch
        self._uow = uow
        self._callbacks = callbacks
        self._clock = clock
        self._settings = settings
        self._out = out
        self._lock = threading.Lock()
        self.workers: dict[tuple[str, int], HostedWorker] = {}
        self._threads: list[threading.Thread] = []
        self.closing = threading.Event()  # no more tasks

    def _say(self, line: str) -> None:
        with self._lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the service is gone: the database tells the next one

    def run_task(self, task_id: str, attempt: int) -> None:
        control = TaskControl(
            self._uow,
            self._clock,
            task_id,
            attempt,
            watch=self._watch,
            callbacks=self._callbacks,
            node=node_name(self._settings),
        )
        worker = self._make_worker(control, self._settings)
        key = (task_id, attempt)
        with self._lock:
            if key in self.workers:
                raise RuntimeError(f"attempt {attempt} of task {task_id} already runs here")
            self.workers[key] = worker

        def run() -> None:
            detail = "ended"
            try:
                state = worker.run()
                detail = getattr(state, "value", "gave the task up")
            except BaseException as exc:  # one task's crash is that task's only
                log.exception("host.worker_crashed", extra={"fields": {"task_id": task_id}})
                detail = f"worker crashed: {type(exc).__name__}: {exc}"
            finally:
                # In a shared process a worker's threads outlive it unless stopped: stop its
                # recorders and wait for them before saying it is done (its files are then
                # closed, and the next attempt never records beside a leftover).
                left = worker.stop_threads(LEFTOVER_WAIT_S)
                if left:
                    detail += f"; {left} recorder thread(s) still running"
                with self._lock:
                    self.workers.pop(key, None)
                self._say(f"done {task_id} {attempt} {' '.join(detail.split())}")

        thread = threading.Thread(target=run, name=f"task-{task_id[:12]}")
        with self._lock:  # a long-lived host: ended threads are not kept
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def abandon(self, task_id: str, attempt: int) -> None:
        with self._lock:
            worker = self.workers.get((task_id, attempt))
        if worker is not None:
            worker.lease_lost()

    def terminate(self) -> None:
        """SIGTERM: every worker closes its files and gives its task up; no more tasks."""
        self.closing.set()
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            w.terminated.set()

    def _read(self, commands: IO[str]) -> None:
        try:
            for line in commands:
                parts = line.split()
                if not parts:
                    continue
                if parts[0] == "exit":
                    break
                if parts[0] in ("run", "abandon") and len(parts) == 3 and parts[2].isdigit():
                    self._command(parts[0], parts[1], int(parts[2]))
                    continue
                log.warning("host.bad_command", extra={"fields": {"line": line.strip()[:200]}})
        finally:
            self.closing.set()  # whatever ended the reading: take no more, exit when done

    def _command(self, verb: str, task_id: str, attempt: int) -> None:
        """One command; a task that cannot be started is answered ``done`` at once, so that
        the service replaces it instead of waiting for its lease to run out."""
        if verb == "abandon":
            self.abandon(task_id, attempt)
            return
        if self.closing.is_set():
            self._say(f"done {task_id} {attempt} refused: this host is closing")
            return
        try:
            self.run_task(task_id, attempt)
        except Exception as exc:
            log.exception("host.start_failed", extra={"fields": {"task_id": task_id}})
            self._say(f"done {task_id} {attempt} start failed: {type(exc).__name__}: {exc}")

    def serve(self, commands: IO[str]) -> int:
        """Take commands until ``exit``, the end of input or SIGTERM, then wait for every
        worker to be over."""
        reader = threading.Thread(target=self._read, args=(commands,), daemon=True)
        reader.start()
        while not self.closing.wait(0.5):
            pass
        while True:
            with self._lock:
                running = [t for t in self._threads if t.is_alive()]
            if not running:
                return 0
            running[0].join()


def main(
    uow: Callable[[], UnitOfWork],
    clock: Clock,
    settings: Settings,
    watch: TaskWatch,
    callbacks: Callbacks,
) -> int:
    host = RecorderHost(uow, clock, settings, sys.stdout, watch=watch, callbacks=callbacks)
    signal.signal(signal.SIGTERM, lambda *_: host.terminate())
    log.info("host.started")
    return host.serve(sys.stdin)
