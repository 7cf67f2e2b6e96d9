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


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as its ``CLOUDREC_*`` variable (paths made absolute)."""
    env = {}
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        if isinstance(value, Path):
            value = value.resolve()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[ENV_PREFIX + f.name.upper()] = str(value)
    env[ENV_PREFIX + "DATABASE_URL"] = settings.database
    return env


class LocalExecutor:
    def __init__(self, settings: Settings, log_dir: Path | None = None) -> None:
        self._settings = settings
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._ended: dict[int, float] = {}  # pid -> when reap first saw it ended (monotonic)
        self._lock = threading.Lock()
        self._log_dir = log_dir or settings.data_dir / "logs"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "CLOUDREC_CONFIG"}
        env.update(settings_env(self._settings))
        return env

    def start(self, task_id: str, attempt: int = 1) -> str:
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

    def forget(self, handle: str) -> None:
        proc = self._proc(handle)
        if proc is not None and proc.poll() is not None:
            with self._lock:
                self._procs.pop(proc.pid, None)
