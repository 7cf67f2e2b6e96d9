"""The Ray executor: each attempt of a recording a detached, named actor on a Ray cluster
(docs/cluster.md).

Handles are ``ray:TASK_ID:ATTEMPT``; the actor is named ``cloudrec:TASK_ID:ATTEMPT`` in the
``cloudrec`` namespace, so any service on the cluster finds it.  Placement is Ray's: each
recording asks for one unit of the custom resource ``cloudrec_recording`` (a node's capacity
is how many it declares; the head declares none) and no CPU, so it runs on any node with a
free unit.  Ray never restarts an actor: the reconciler's next attempt is a new one.

What ``alive`` says (the Executor port):
- True while the actor runs;
- False once its worker's run is over or Ray has declared the actor dead (its process died, or
  its node: Ray's health check, docs/cluster.md), so the reconciler replaces it at once;
- None for an actor another service started, and while Ray cannot reach an actor whose node
  may be dead but is not declared so yet: the lease tells (5 s).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from cloudrec.cluster.actor import RecordingActor
from cloudrec.config import Settings
from cloudrec.executor import KEEP_ENDED_S, settings_env

log = logging.getLogger("cloudrec.cluster")

NAMESPACE = "cloudrec"
RESOURCE = "cloudrec_recording"  # one unit per recording; a node's capacity
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


@dataclass
class _Run:
    actor: Any
    outcome: Any  # the ObjectRef of the actor's ``wait``
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

    def start(self, task_id: str, attempt: int = 1) -> str:
        self._connect()
        actor = _Actor.options(  # type: ignore[attr-defined]
            name=actor_name(task_id, attempt),
            namespace=NAMESPACE,
            lifetime="detached",
            num_cpus=0,
            resources={RESOURCE: 1},
            max_restarts=0,
            max_concurrency=4,
        ).remote(self._env, task_id, attempt)
        handle = f"ray:{task_id}:{attempt}"
        with self._lock:
            self._runs[handle] = _Run(actor, actor.wait.remote())
        return handle

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
            return True
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
            return True
        run.detail, run.ended_at = detail, time.monotonic()
        with contextlib.suppress(Exception):
            ray.kill(run.actor, no_restart=True)  # over: free its slot now
        return False

    def exit_detail(self, handle: str) -> str:
        run = self._run(handle)
        if run is None or run.detail is None:
            return "worker is gone"
        return run.detail

    def where(self, handle: str, timeout_s: float = 10.0) -> dict[str, Any] | None:
        """Where the actor behind ``handle`` runs (node id, host, pid), or None."""
        ids = parse_handle(handle)
        if ids is None:
            return None
        self._connect()
        try:
            actor = ray.get_actor(actor_name(*ids), namespace=NAMESPACE)
            where: dict[str, Any] = ray.get(actor.where.remote(), timeout=timeout_s)
        except (ValueError, RayActorError, GetTimeoutError):
            return None
        return where

    def kill(self, handle: str) -> None:
        """End an attempt that has lost its task (frozen past its lease): ask it to stop,
        then have Ray end it (its writes are fenced either way)."""
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
