"""The local executor: one ``cloudrec run-task`` OS process per recording task.

A crash in native media code fails one attempt of one task, not the service.  The worker gets
the task from the database and every setting through its environment (``CLOUDREC_*``: the
settings the service itself runs with, a ``--config`` file's included).  Workers run in a
session of their own, so that they outlive a service that is killed; the service reaps those
it started, and adopts the others through their leases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cloudrec.config import ENV_PREFIX, Settings

KEEP_ENDED_S = 60.0


def worker_argv(task_id: str, attempt: int = 1) -> list[str]:
    """The worker's command line.  ``--`` ends the options: a ZEGO TaskId (URL-safe base64)
    may start with ``-``."""
    return [
        sys.executable,
        "-m",
        "cloudrec.cli",
        "run-task",
        "--attempt",
        str(attempt),
        "--",
        task_id,
    ]


# Secrets of the HTTP side that no recording worker needs (a worker's environment is readable
# by whatever runs as its user, and a Ray actor's is stored by the cluster).
API_ONLY = ("admin_token", "hook_secret")


def settings_env(settings: Settings, for_api: bool = False) -> dict[str, str]:
    """Every setting as its ``CLOUDREC_*`` variable (paths made absolute); for a worker,
    without :data:`API_ONLY`."""
    env = {}
    for f in dataclasses.fields(Settings):
        if f.name in API_ONLY and not for_api:
            continue
        value = getattr(settings, f.name)
        if isinstance(value, Path):
            value = value.resolve()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[ENV_PREFIX + f.name.upper()] = str(value)
    env[ENV_PREFIX + "DATABASE_URL"] = settings.database
    return env


def worker_env(settings: Settings) -> dict[str, str]:
    """A worker's environment: this process's, without its config file and the API-only
    secrets, and every setting (:func:`settings_env`)."""
    hidden = {"CLOUDREC_CONFIG", *(ENV_PREFIX + name.upper() for name in API_ONLY)}
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    env.update(settings_env(settings))
    return env


class LocalExecutor:
    def __init__(self, settings: Settings, log_dir: Path | None = None) -> None:
        self._settings = settings
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._ended: dict[int, float] = {}  # pid -> when reap first saw it ended (monotonic)
        self._lock = threading.Lock()
        self._log_dir = log_dir or settings.data_dir / "logs"

    def _env(self) -> dict[str, str]:
        return worker_env(self._settings)

    def start(self, task_id: str, attempt: int = 1, units: int = 1) -> str:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        with (self._log_dir / f"task-{task_id}.log").open("ab") as log:
            proc = subprocess.Popen(
                worker_argv(task_id, attempt),
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        with self._lock:
            self._procs[proc.pid] = proc
        return f"local:{proc.pid}"

    def _proc(self, handle: str) -> subprocess.Popen[bytes] | None:
        kind, _, pid = handle.partition(":")
        if kind != "local" or not pid.isdigit():
            return None
        with self._lock:
            return self._procs.get(int(pid))

    def room_for(self, units: int) -> str | None:
        return None  # one machine: the spool's free space and the app's limit decide

    def alive(self, handle: str) -> bool | None:
        proc = self._proc(handle)
        if proc is None:
            return None  # another process started it: its lease tells
        return proc.poll() is None

    def exit_detail(self, handle: str) -> str:
        proc = self._proc(handle)
        if proc is None or proc.returncode is None:
            return "worker is gone"
        code = proc.returncode
        if code < 0:
            return f"worker killed by signal {-code} ({signal.Signals(-code).name})"
        return f"worker exited with status {code}"

    def kill(self, handle: str) -> None:
        proc = self._proc(handle)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(5)

    def reap(self) -> None:
        """Collect every ended worker: ``poll`` waits for the child, so no zombie is left.
        An ended worker's status stays known for ``exit_detail`` for a minute."""
        now = time.monotonic()
        with self._lock:
            procs = list(self._procs.items())
        for pid, proc in procs:
            if proc.poll() is None:
                continue
            ended = self._ended.setdefault(pid, now)
            if now - ended > KEEP_ENDED_S:
                with self._lock:
                    self._procs.pop(pid, None)
                    self._ended.pop(pid, None)


def host_argv() -> list[str]:
    return [sys.executable, "-m", "cloudrec.cli", "recorder-host"]


@dataclass
class _Host:
    proc: subprocess.Popen[str]
    tasks: set[tuple[str, int]] = field(default_factory=set)  # the attempts it runs
    # Attempts that ended: how, and when (monotonic); kept KEEP_ENDED_S for exit_detail.
    done: dict[tuple[str, int], tuple[str, float]] = field(default_factory=dict)
    accepting: bool = True
    ended_at: float | None = None  # monotonic, when reap first saw the host gone


class HostExecutor:
    """Recorder hosts: warm ``cloudrec recorder-host`` processes, each running up to
    ``per_host`` tasks (one spare host kept started, so that no start waits for an
    interpreter).  Handles are ``host:PID:TASK_ID:ATTEMPT``.  A host that dies ends every
    task it held; the reconciler replaces each (``alive`` says False at once)."""

    def __init__(
        self,
        settings: Settings,
        per_host: int = 16,
        log_dir: Path | None = None,
        argv: list[str] | None = None,
    ) -> None:
        self._settings = settings
        self._argv = argv or host_argv()
        self._per_host = max(1, per_host)
        self._hosts: dict[int, _Host] = {}
        self._lock = threading.Lock()
        self._log_dir = log_dir or settings.data_dir / "logs"

    def _spawn(self) -> _Host:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        env = worker_env(self._settings)
        log = (self._log_dir / "hosts.log").open("ab")
        proc = subprocess.Popen(
            self._argv,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        log.close()
        host = _Host(proc)
        threading.Thread(target=self._listen, args=(host,), daemon=True).start()
        self._hosts[proc.pid] = host
        return host

    def _listen(self, host: _Host) -> None:
        assert host.proc.stdout is not None
        for line in host.proc.stdout:
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[0] == "done" and parts[2].isdigit():
                key = (parts[1], int(parts[2]))
                detail = parts[3].strip() if len(parts) > 3 else ""
                with self._lock:
                    host.tasks.discard(key)
                    host.done[key] = (detail, time.monotonic())

    def warm(self) -> None:
        """Have a host with room ready before the first start."""
        with self._lock:
            self._spare()

    def _spare(self) -> _Host:
        """A running host with room (started if there is none); the lock is held."""
        for host in self._hosts.values():
            if host.accepting and host.proc.poll() is None and len(host.tasks) < self._per_host:
                return host
        return self._spawn()

    def start(self, task_id: str, attempt: int = 1, units: int = 1) -> str:
        with self._lock:
            for _ in range(3):
                host = self._spare()
                try:
                    assert host.proc.stdin is not None
                    host.proc.stdin.write(f"run {task_id} {attempt}\n")
                    host.proc.stdin.flush()
                except (BrokenPipeError, OSError):
                    host.accepting = False
                    continue
                host.tasks.add((task_id, attempt))
                handle = f"host:{host.proc.pid}:{task_id}:{attempt}"
                if len(host.tasks) >= self._per_host:
                    self._spare()  # the next start finds a warm host
                return handle
        raise RuntimeError("no recorder host could be started")

    def _find(self, handle: str) -> tuple[_Host, tuple[str, int]] | None:
        kind, _, rest = handle.partition(":")
        pid, _, key = rest.partition(":")
        task_id, _, attempt = key.rpartition(":")
        if kind != "host" or not pid.isdigit() or not attempt.isdigit():
            return None
        with self._lock:
            host = self._hosts.get(int(pid))
        return None if host is None else (host, (task_id, int(attempt)))

    def room_for(self, units: int) -> str | None:
        return None  # one machine: the spool's free space and the app's limit decide

    def alive(self, handle: str) -> bool | None:
        found = self._find(handle)
        if found is None:
            return None  # a host another service started: the lease tells
        host, key = found
        if host.proc.poll() is not None:
            return False
        with self._lock:  # started and not yet said done (nor abandoned)
            return key in host.tasks

    def exit_detail(self, handle: str) -> str:
        found = self._find(handle)
        if found is None:
            return "worker is gone"
        host, key = found
        code = host.proc.returncode
        if code is not None and code < 0:
            return f"recorder host killed by signal {-code} ({signal.Signals(-code).name})"
        if code is not None:
            return f"recorder host exited with status {code}"
        with self._lock:
            detail, _ = host.done.get(key, ("?", 0.0))
        return f"worker ended: {detail}"

    def kill(self, handle: str) -> None:
        """A task whose worker froze: tell its host to stop it (the host and its other
        tasks go on; the frozen thread can write nothing: its writes are fenced)."""
        found = self._find(handle)
        if found is None:
            return
        host, (task_id, attempt) = found
        with self._lock:
            host.tasks.discard((task_id, attempt))
            host.done[(task_id, attempt)] = ("abandoned: lease lost", time.monotonic())
            try:
                assert host.proc.stdin is not None
                host.proc.stdin.write(f"abandon {task_id} {attempt}\n")
                host.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass

    def reap(self) -> None:
        """Collect hosts that have ended; forget attempts that ended a minute ago; ask hosts
        left idle beyond one spare to exit."""
        now = time.monotonic()
        with self._lock:
            idle = 0
            for pid, host in list(self._hosts.items()):
                for key, (_, ended) in list(host.done.items()):
                    if now - ended > KEEP_ENDED_S:
                        del host.done[key]
                if host.proc.poll() is not None:
                    host.ended_at = host.ended_at or now
                    if now - host.ended_at > KEEP_ENDED_S:
                        del self._hosts[pid]
                        for pipe in (host.proc.stdin, host.proc.stdout):
                            with contextlib.suppress(OSError):
                                pipe and pipe.close()
                    continue
                if host.tasks or not host.accepting:
                    continue
                idle += 1
                if idle > 1:
                    host.accepting = False
                    with contextlib.suppress(BrokenPipeError, OSError):
                        assert host.proc.stdin is not None
                        host.proc.stdin.write("exit\n")
                        host.proc.stdin.flush()
