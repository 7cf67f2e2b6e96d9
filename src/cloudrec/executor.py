"""The local executor: one ``cloudrec run-task`` OS process per recording task.

A crash in native media code fails one task, not the service.  The worker gets everything it
needs from the database and the settings passed through its environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from cloudrec.config import Settings


def worker_argv(task_id: str) -> list[str]:
    """The worker's command line.  ``--`` ends the options: a ZEGO TaskId (URL-safe base64)
    may start with ``-``."""
    return [sys.executable, "-m", "cloudrec.cli", "run-task", "--", task_id]


class LocalExecutor:
    def __init__(self, settings: Settings, log_dir: Path | None = None) -> None:
        self._settings = settings
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._log_dir = log_dir or settings.data_dir / "logs"

    def _env(self) -> dict[str, str]:
        s = self._settings
        env = dict(os.environ)
        env.update(
            {
                "CLOUDREC_DATA_DIR": str(s.data_dir.resolve()),
                "CLOUDREC_DATABASE_URL": s.database,
                "CLOUDREC_RTMP_PORT": str(s.rtmp_port),
                "CLOUDREC_IDLE_TIMEOUT_S": str(s.idle_timeout_s),
                "CLOUDREC_MAX_TASK_DURATION_S": str(s.max_task_duration_s),
                "CLOUDREC_LOG_LEVEL": s.log_level,
                "CLOUDREC_LOG_FORMAT": s.log_format,
            }
        )
        if s.secret_key:
            env["CLOUDREC_SECRET_KEY"] = s.secret_key
        return env

    def start(self, task_id: str) -> str:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        with (self._log_dir / f"task-{task_id}.log").open("ab") as log:
            proc = subprocess.Popen(
                worker_argv(task_id),
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
            return None  # another process started it: heartbeats tell
        return proc.poll() is None

    def exit_detail(self, handle: str) -> str:
        proc = self._proc(handle)
        if proc is None or proc.returncode is None:
            return "worker is gone"
        code = proc.returncode
        if code < 0:
            return f"worker killed by signal {-code} ({signal.Signals(-code).name})"
        return f"worker exited with status {code}"

    def forget(self, handle: str) -> None:
        proc = self._proc(handle)
        if proc is not None and proc.poll() is not None:
            with self._lock:
                self._procs.pop(proc.pid, None)
