"""The Ray executor: each attempt of a recording a detached, named actor on a Ray cluster
(docs/cluster.md).

Handles are ``ray:TASK_ID:ATTEMPT``; the actor is named ``cloudrec:TASK_ID:ATTEMPT`` in the
``cloudrec`` namespace, so any service on the cluster finds it.  Placement is Ray's: each
recording asks for its units (core/cost.py) of the custom resource ``cloudrec_recording`` (a
node's capacity is how many it declares; the head declares none) and no CPU, so it runs on a
node with that many free; a start no node has room for is refused (``room_for``).  Ray never
restarts an actor: the reconciler's next attempt is a new one.

What ``alive`` says (the Executor port):
- False once its worker's run is over or Ray has declared the actor dead (its process died, or
  its node: Ray's health check, docs/cluster.md), so the reconciler replaces it at once;
- None otherwise: a running actor may sit on a node that is frozen or cut off and not yet
  declared dead (Ray's view lags by its health check), so its lease tells (5 s) rather than
  the reconciler's grace for a late heartbeat on one loaded machine.  The replaced attempt is
  then ended by the start of its successor (every older attempt of a task is killed when a
  newer one starts); its writes were fenced from the moment its lease ran out.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from cloudrec.cluster.actor import RecordingActor
from cloudrec.cluster.node import RESOURCE, gcs_client, live_nodes
from cloudrec.config import Settings
from cloudrec.executor import KEEP_ENDED_S, settings_env

log = logging.getLogger("cloudrec.cluster")

NAMESPACE = "cloudrec"
_Actor = ray.remote(RecordingActor)


def actor_name(task_id: str, attempt: int) -> str:
    return f"cloudrec:{task_id}:{attempt}"


def parse_handle(handle: str) -> tuple[str, int] | None:
    kind, _, rest = handle.partition(":")
    task_id, _, attempt = rest.rpartition(":")
    if kind != "ray" or not task_id or not attempt.isdigit():
        return None
    return task_id, int(attempt)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    why = next((ln for ln in lines if ln.startswith("The actor died because")), None)
    return why or (lines[0] if lines else type(exc).__name__)


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse at once a ``HOST:PORT`` nothing listens on (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", a ray:// URL: Ray resolves it
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"cannot join the Ray cluster at {address}: {exc}") from exc


def free_units_by_node(gcs: Any) -> dict[str, float]:
    """The recording units free on each live node that takes recordings and is not draining
    (``cloudrec worker`` drains on SIGTERM), by node id."""
    return {n.node_id: n.free for n in live_nodes(gcs) if n.total > 0 and not n.draining}


@dataclass
class _Run:
    actor: Any
    outcome: Any  # the ObjectRef of the actor's ``wait``
    placed: Any  # the ObjectRef of its ``where``: the node it runs on, once it runs
    units: int = 1  # what it asked of its node
    detail: str | None = None  # how it ended, once known
    ended_at: float | None = None  # monotonic


class RayExecutor:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._env = settings_env(settings)
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._connect_lock = threading.Lock()

    def warm(self) -> None:
        """Connect to the cluster (the service does this before it serves)."""
        self._connect()

    def _connect(self) -> None:
        with self._connect_lock:
            if ray.is_initialized():
                return
            _reachable(self._settings.ray_address)
            try:
                ray.init(
                    address=self._settings.ray_address,
                    namespace=NAMESPACE,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
            except Exception as exc:
                raise ConnectionError(
                    f"cannot join the Ray cluster at {self._settings.ray_address}: {exc}"
                ) from exc
            log.info("cluster.connected", extra={"fields": {"address": self._settings.ray_address}})

    def start(self, task_id: str, attempt: int = 1, units: int = 1) -> str:
        self._connect()
        avoid = self._end_earlier(task_id, attempt)
        options: dict[str, Any] = {}
        if avoid and self._other_nodes(avoid):
            # Not where the lost attempt ran: a node frozen or cut off is declared dead only
            # after Ray's health check, and until then it would be given the next attempt too.
            options["label_selector"] = {"ray.io/node-id": f"!{avoid}"}
        actor: Any = _Actor.options(
            name=actor_name(task_id, attempt),
            namespace=NAMESPACE,
            lifetime="detached",
            num_cpus=0,
            resources={RESOURCE: units},
            max_restarts=0,
            max_concurrency=4,
            **options,
        ).remote(self._env, task_id, attempt)
        handle = f"ray:{task_id}:{attempt}"
        with self._lock:
            self._runs[handle] = _Run(actor, actor.wait.remote(), actor.where.remote(), units)
        log.info(
            "cluster.attempt_placed",
            extra={"fields": {"worker": handle, "avoiding": avoid or ""}},
        )
        return handle

    def room_for(self, units: int) -> str | None:
        """Whether a recording of ``units`` fits on one live node that is not draining, as
        Ray last reported what each node has free (a placement of the last moments may not
        be in it yet: two starts that close may both pass, docs/cluster.md)."""
        try:
            self._connect()
            free = free_units_by_node(gcs_client(ray.get_runtime_context().gcs_address))
        except Exception:  # cannot tell: the start is tried, and Ray keeps it pending
            log.warning("cluster.room_unknown", exc_info=True)
            return None
        best = max(free.values(), default=0.0)
        if best >= units:
            return None
        return (
            f"no node of the cluster has room for this recording: it needs {units} recording "
            f"unit(s), the most free on one node is {best:g} ({len(free)} node(s) take "
            "recordings; docs/cluster.md)"
        )

    @staticmethod
    def _other_nodes(node_id: str) -> bool:
        """Whether a live node other than ``node_id`` can take recordings."""
        return any(
            n.get("Alive") and n.get("NodeID") != node_id and n.get("Resources", {}).get(RESOURCE)
            for n in ray.nodes()  # type: ignore[no-untyped-call]
        )

    @staticmethod
    def _node(run: _Run) -> str | None:
        """The node the attempt ran on, if it got as far as running."""
        try:
            where: dict[str, Any] = ray.get(run.placed, timeout=0)
        except Exception:
            return None
        node: str | None = where.get("node_id")
        return node

    def _end_earlier(self, task_id: str, attempt: int) -> str | None:
        """Kill the actors of the task's earlier attempts that may still run (frozen, cut off,
        or started by another service): they have lost the task.  The node the last of them
        ran on, when it is known."""
        with self._lock:
            earlier = sorted(
                (ids[1], h, r)
                for h, r in self._runs.items()
                if (ids := parse_handle(h)) and ids[0] == task_id and ids[1] < attempt
            )
        for _, handle, run in earlier:
            if run.detail is None:
                with contextlib.suppress(Exception):
                    ray.kill(run.actor, no_restart=True)
                run.detail, run.ended_at = "actor killed: a newer attempt started", time.monotonic()
                log.info("cluster.attempt_ended", extra={"fields": {"worker": handle}})
        if attempt > 1 and f"ray:{task_id}:{attempt - 1}" not in self._runs:
            with contextlib.suppress(Exception):  # not found: it has ended
                ray.kill(
                    ray.get_actor(actor_name(task_id, attempt - 1), namespace=NAMESPACE),
                    no_restart=True,
                )
        return self._node(earlier[-1][2]) if earlier else None

    def _run(self, handle: str) -> _Run | None:
        with self._lock:
            return self._runs.get(handle)

    def alive(self, handle: str) -> bool | None:
        run = self._run(handle)
        if run is None:
            return None  # another service started it: its lease tells
        if run.detail is not None:
            return False
        ready, _ = ray.wait([run.outcome], timeout=0)
        if not ready:
            return None  # running, as far as Ray knows: the lease tells
        try:
            detail = str(ray.get(run.outcome, timeout=0))
        except ActorUnavailableError:
            # Unreachable, not declared dead (its node may be lost, or slow): ask again; the
            # answer comes when Ray decides, the lease meanwhile.
            run.outcome = run.actor.wait.remote()
            return None
        except RayActorError as exc:
            detail = f"actor died: {_first_line(exc)}"
        except GetTimeoutError:
            return None
        run.detail, run.ended_at = detail, time.monotonic()
        with contextlib.suppress(Exception):
            ray.kill(run.actor, no_restart=True)  # over: free its slot now
        return False

    def exit_detail(self, handle: str) -> str:
        run = self._run(handle)
        if run is None or run.detail is None:
            return "worker is gone"
        return run.detail

    def kill(self, handle: str) -> None:
        """End an attempt that has lost its task (frozen past its lease): Ray ends its
        process, at once or when its node wakes (its writes are fenced either way)."""
        ids = parse_handle(handle)
        if ids is None:
            return
        run = self._run(handle)
        try:
            self._connect()
            actor = run.actor if run else ray.get_actor(actor_name(*ids), namespace=NAMESPACE)
            ray.kill(actor, no_restart=True)
        except (ValueError, ConnectionError):
            return  # no such actor any more
        if run is not None and run.detail is None:
            run.detail, run.ended_at = "actor killed: lease lost", time.monotonic()

    def reap(self) -> None:
        """Forget attempts that ended more than a minute ago (Ray collects the processes)."""
        now = time.monotonic()
        with self._lock:
            for handle, run in list(self._runs.items()):
                if run.ended_at is not None and now - run.ended_at > KEEP_ENDED_S:
                    del self._runs[handle]
