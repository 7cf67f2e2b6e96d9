"""One attempt of one recording as a Ray actor: the same worker as ``cloudrec run-task``
(:class:`cloudrec.media.recorder.worker.TaskWorker` with its :class:`TaskControl`), in a Ray
worker process on some node.

The actor is detached (it outlives the service that started it, as a ``run-task`` process
does) and named by task and attempt.  Ray never restarts it (``max_restarts=0``): a lost
attempt is replaced by the reconciler's next attempt, a new actor, so the attempt number stays
the worker's fencing token.  The worker reads its task from the shared database and renews its
lease there; Ray only places and runs it.  When the worker's run is over the actor ends itself.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

import ray

from cloudrec.cluster.node import ENV_DRAIN_FILE, ENV_NODE_NAME, ENV_SPOOL, LABEL
from cloudrec.logs import setup_logging

# A finished actor stays this long so that the service's ``wait`` call gets the outcome, then
# ends itself (the service also kills it once it has read the outcome).
LINGER_S = 10.0
# An attempt that lost its task (superseded, its lease gone) or gave it up ends sooner.
LOST_LINGER_S = 1.0
# After asking Ray to end it, how long the actor waits before it ends its process itself.
EXIT_WAIT_S = 3.0
# How long a finished worker's recorder threads may take to stop (as a recorder host's).
LEFTOVER_WAIT_S = 15.0


# Settings that belong to the node, not to the service that started the attempt: the node's
# own environment gives them (``cloudrec worker`` sets them for its Ray processes).
NODE_LOCAL = (ENV_NODE_NAME, ENV_SPOOL)
# How often an attempt looks for its node's drain file.
DRAIN_POLL_S = 0.5


def node_env(env: dict[str, str]) -> dict[str, str]:
    """The service's settings ``env`` with this node's own :data:`NODE_LOCAL` ones (its name
    from its environment, else from its ``cloudrec-node`` label)."""
    ours = {k: os.environ[k] for k in NODE_LOCAL if k in os.environ}
    if ENV_NODE_NAME not in ours:
        with contextlib.suppress(Exception):  # not in a Ray worker
            label = ray.get_runtime_context().get_node_labels().get(LABEL)
            if isinstance(label, str) and label:
                ours[ENV_NODE_NAME] = label
    return {k: v for k, v in env.items() if k not in NODE_LOCAL} | ours


class RecordingActor:
    """Runs the worker of ``attempt`` on a thread of its own from the moment it is created;
    its methods answer while it records (a threaded actor)."""

    def __init__(self, env: dict[str, str], task_id: str, attempt: int) -> None:
        self._done = threading.Event()
        self._detail = "running"
        self._worker: Any = None
        self._thread = threading.Thread(
            target=self._run, args=(env, task_id, attempt), name=f"task-{task_id[:12]}"
        )
        self._thread.start()

    def _run(self, env: dict[str, str], task_id: str, attempt: int) -> None:
        detail = "ended"
        shipper: Any = None
        state: Any = None
        linger_s = LOST_LINGER_S  # nobody waits for the outcome of an attempt that lost its task
        try:
            # What the worker needs and no more (not the API, the uploader or the callback
            # sender that ``bootstrap`` builds too): a failover waits for these imports.
            from cloudrec.callbacks.formats import callback_formats
            from cloudrec.config import fragment_store, load_settings, node_name
            from cloudrec.core.control import TaskControl
            from cloudrec.db.engine import make_engine
            from cloudrec.db.repositories import uow_factory
            from cloudrec.db.tasks import SqlTaskWatch
            from cloudrec.media.recorder.worker import TaskWorker
            from cloudrec.secretbox import FernetSecretBox, load_key
            from cloudrec.storage.fragments import Shipper

            settings = load_settings(env=node_env(env))
            setup_logging(settings.log_level, settings.log_format)
            box = FernetSecretBox(load_key(settings.secret_key, settings.data_dir))
            engine = make_engine(settings.database)
            uow = uow_factory(engine, box)
            store = fragment_store(settings)
            if store is not None:  # what this node records is off it within SHIP_S
                shipper = Shipper(store, task_id, attempt)
            control = TaskControl(
                uow,
                lambda: datetime.now(UTC),
                task_id,
                attempt,
                watch=SqlTaskWatch(engine),  # the cheaper poll, as in a recorder host
                callbacks=callback_formats(),
                node=node_name(settings),
                shipper=shipper,
            )
            self._worker = worker = TaskWorker(control, settings)
            threading.Thread(target=self._drained, name="drain-watch", daemon=True).start()
            if shipper is not None:
                shipper.lost = worker.heartbeat.lost.is_set  # its shipments end with the task
                shipper.start()
            state = self._worker.run()
            if state is not None:
                linger_s = LINGER_S
            detail = f"worker ended: {state.value if state is not None else 'gave the task up'}"
        except BaseException as exc:  # the outcome is this attempt's only
            detail = f"worker crashed: {type(exc).__name__}: {exc}"
        finally:
            if shipper is not None:  # its files closed (ended, or given up)
                lost = self._worker.heartbeat.lost.is_set() or detail.startswith("worker crashed")
                shipper.stop(ended_well=not lost)
            if self._worker is not None:
                left = self._worker.stop_threads(LEFTOVER_WAIT_S)
                if left:
                    detail += f"; {left} recorder thread(s) still running"
            self._detail = " ".join(detail.split())
            self._done.set()
            threading.Thread(target=self._end, args=(linger_s,), daemon=True).start()

    def _drained(self) -> None:
        """When this node drains (``cloudrec worker`` got SIGTERM), close the files and give
        the task up, as a ``run-task`` worker does on SIGTERM: the next attempt goes on on
        another node at once."""
        drain_file = os.environ.get(ENV_DRAIN_FILE)
        if not drain_file:
            return
        while not self._done.wait(DRAIN_POLL_S):
            if os.path.exists(drain_file):
                self._worker.terminated.set()
                return

    def _end(self, linger_s: float) -> None:
        time.sleep(linger_s)
        with contextlib.suppress(Exception):
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
        # Still here: the cluster has already declared this actor dead (its node was frozen or
        # cut off and has woken), so nobody will end this process but itself.
        time.sleep(EXIT_WAIT_S)
        os._exit(0)

    def wait(self) -> str:
        """Block until the worker's run is over; how it ended."""
        self._done.wait()
        return self._detail

    def where(self) -> dict[str, Any]:
        """Where this attempt runs: the Ray node id, the host name and the process id."""
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
