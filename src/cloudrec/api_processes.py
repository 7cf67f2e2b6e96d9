"""The HTTP API in processes of its own, so that the API and the embedded RTMP ingest cannot
starve each other (issue 13: one event loop carrying both answered an authenticated GET in
2.2 s at p99 with 10 streams live).

``cloudrec serve`` binds the HTTP socket itself, then starts ``api_processes`` children
(``cloudrec api-worker``) that inherit it and accept on it (the kernel spreads the connections
among them); the ingest, the reconciler and delivery stay in ``serve``.  A child that dies is
started again; children die with ``serve`` (``PR_SET_PDEATHSIG``), so a ``serve`` killed with
SIGKILL leaves no process holding the port.  The ingest's figures reach the children's
``/metrics`` through a small file in the data directory, rewritten every second.

Workers are started by ``serve`` alone, with its executor (its warm recorder hosts, its Ray
connection), never by an API process: each child has a private socket pair to ``serve``, and
its executor (:class:`ServeExecutor`) asks ``serve`` to start an attempt and gets the handle
back.  When ``serve`` cannot be asked, the start fails and the task waits for the reconciler's
next pass (``TaskService.start``), which starts it within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from cloudrec.config import Settings
from cloudrec.core.recording import Executor, StartUndecidedError

log = logging.getLogger("cloudrec.serve")

STATS_FILE = "ingest-stats.json"
STATS_FRESH_S = 10.0
RESPAWN_S = 1.0  # a child that keeps dying is started again at most this often


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """SIGTERM to this process when ``parent`` dies; exit at once if it already has (the
    child asks for it first thing: a ``preexec_fn`` would run between fork and exec in a
    process that has threads)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        raise SystemExit(f"api-worker: serve (pid {parent}) is gone")


class ApiProcesses:
    def __init__(self, settings: Settings, sock: socket.socket, count: int) -> None:
        from cloudrec.executor import settings_env

        self._sock = sock
        self._count = count
        self._env = {k: v for k, v in os.environ.items() if k != "CLOUDREC_CONFIG"}
        self._env.update(settings_env(settings, for_api=True))
        self._procs: list[subprocess.Popen[bytes]] = []
        self._started: dict[int, float] = {}
        self._channels: dict[int, socket.socket] = {}  # pid -> serve's end of its socket pair
        self._stopping = False
        self.on_channel: Callable[[socket.socket], None] = lambda _sock: None

    def start(self) -> None:
        self._sock.set_inheritable(True)
        for _ in range(self._count):
            self._procs.append(self._spawn())

    def _spawn(self) -> subprocess.Popen[bytes]:
        fd = self._sock.fileno()
        ours, theirs = socket.socketpair()
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "cloudrec.cli", "api-worker"),
                *("--fd", str(fd), "--parent", str(os.getpid())),
                *("--starts", str(theirs.fileno())),
            ],
            env=self._env,
            stdin=subprocess.DEVNULL,
            pass_fds=(fd, theirs.fileno()),
        )
        theirs.close()
        self._started[proc.pid] = time.monotonic()
        self._channels[proc.pid] = ours
        self.on_channel(ours)
        return proc

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def watch(self) -> None:
        """Start again every child that has ended (not while stopping)."""
        if self._stopping:
            return
        for i, proc in enumerate(self._procs):
            code = proc.poll()
            if code is None or time.monotonic() - self._started[proc.pid] < RESPAWN_S:
                continue
            log.error("api.process_died", extra={"fields": {"pid": proc.pid, "code": code}})
            del self._started[proc.pid]
            self._channels.pop(proc.pid, None)  # its answering task closes it at EOF
            self._procs[i] = self._spawn()

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stopping = True
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self._procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def write_ingest_stats(data_dir: Path, received_bytes: int, connections: int) -> None:
    """The ingest's figures for the API processes' ``/metrics`` (written whole, then renamed)."""
    path = data_dir / STATS_FILE
    part = path.with_name(path.name + ".part")
    part.write_text(
        json.dumps({"bytes": received_bytes, "connections": connections, "at": time.time()})
    )
    os.replace(part, path)


class IngestStatsFile:
    """The ingest of another process, as :class:`~cloudrec.metrics.IngestCollector` reads it:
    nothing when the file is missing or stale (the ingest is gone)."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / STATS_FILE

    def stats(self) -> tuple[int, int] | None:
        try:
            data: dict[str, Any] = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return None
        if time.time() - float(data.get("at", 0)) > STATS_FRESH_S:
            return None
        return int(data["bytes"]), int(data["connections"])


START_TIMEOUT_S = 30.0


class ServeExecutor:
    """The Executor port in an API process: ``serve`` starts the worker, asked over the
    socket pair one request at a time (a start is a line to a warm host, or a spawn).  Each
    request carries a number and its answer the same: an answer that comes after its request
    gave up is skipped.  No answer in time: :class:`StartUndecidedError` (the lease decides)."""

    def __init__(self, channel: socket.socket) -> None:
        self._channel = channel
        self._lock = threading.Lock()
        self._buffer = b""
        self._sequence = 0

    def start(self, task_id: str, attempt: int = 1, units: int = 1) -> str:
        verb, rest = self._ask(f"start {{}} {attempt} {units} {task_id}")
        if verb != "ok" or not rest:
            raise RuntimeError(f"serve did not start the worker: {rest or verb}")
        return rest

    def room_for(self, units: int) -> str | None:
        try:
            verb, rest = self._ask(f"room {{}} {units}")
        except (RuntimeError, StartUndecidedError):
            return None  # serve cannot be asked: the start is tried (and the reconciler retries)
        return rest or "no room" if verb == "full" else None

    def _ask(self, request: str) -> tuple[str, str]:
        """Send ``request`` (its ``{}`` the request's number); the answer's verb and rest."""
        with self._lock:
            self._sequence += 1
            number = str(self._sequence)
            try:
                self._channel.settimeout(START_TIMEOUT_S)
                self._channel.sendall((request.format(number) + "\n").encode())
            except OSError as exc:  # not asked: nothing started
                raise RuntimeError(f"serve could not be asked to start the worker: {exc}") from exc
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                verb, answered, rest = self._answer(deadline)
                if answered == number:
                    return verb, rest

    def _answer(self, deadline: float) -> tuple[str, str, str]:
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                self._channel.settimeout(left)
                data = self._channel.recv(4096)
            except OSError as exc:  # TimeoutError among them
                raise StartUndecidedError(f"serve did not answer: {exc!r}") from exc
            if not data:
                raise StartUndecidedError("serve closed the channel")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        verb, _, rest = line.decode(errors="replace").strip().partition(" ")
        number, _, rest = rest.partition(" ")
        return verb, number, rest

    def alive(self, handle: str) -> bool | None:
        return None  # serve's reconciler judges workers, not the API

    def exit_detail(self, handle: str) -> str:
        return ""

    def kill(self, handle: str) -> None:
        pass

    def reap(self) -> None:
        pass


async def answer_starts(channel: socket.socket, executor: Executor) -> None:
    """``serve``'s end of one API process's socket pair: each ``start N ATTEMPT UNITS TASK``
    line is answered ``ok N HANDLE`` or ``error N WHY``, each ``room N UNITS`` line ``ok N``
    or ``full N WHY``, until the process goes (then the channel is closed here)."""
    channel.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=channel)
    try:
        while line := await reader.readline():
            verb, _, rest = line.decode(errors="replace").strip().partition(" ")
            number, _, rest = rest.partition(" ")
            args = rest.split(" ", 2)
            if not number.isdigit():
                writer.write(b"error 0 a bad request\n")
            elif verb == "room" and len(args) == 1 and args[0].isdigit():
                try:
                    full = await asyncio.to_thread(executor.room_for, int(args[0]))
                except Exception:  # cannot tell: the start is tried
                    log.exception("api.room_failed")
                    full = None
                writer.write((f"full {number} {full}" if full else f"ok {number}").encode())
                writer.write(b"\n")
            elif verb == "start" and len(args) == 3 and args[0].isdigit() and args[1].isdigit():
                attempt, units, task_id = int(args[0]), int(args[1]), args[2]
                try:
                    handle = await asyncio.to_thread(executor.start, task_id, attempt, units)
                    writer.write(f"ok {number} {handle}\n".encode())
                except Exception as exc:
                    log.exception("api.start_failed", extra={"fields": {"task_id": task_id}})
                    writer.write(f"error {number} {type(exc).__name__}\n".encode())
            else:
                writer.write(f"error {number} a bad request\n".encode())
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def run_api_worker(settings: Settings, fd: int, parent: int, starts: int) -> int:
    """``cloudrec api-worker``: the HTTP app on the inherited socket until SIGTERM/SIGINT."""
    die_with_parent(parent)
    from cloudrec.api.app import create_app
    from cloudrec.bootstrap import bootstrap

    sock = socket.socket(fileno=fd)
    executor = ServeExecutor(socket.socket(fileno=starts))
    # serve migrated before it started us; workers are started by serve (ServeExecutor).
    container = bootstrap(settings, migrate=False, executor=executor)
    app = create_app(container)
    app.state.metrics.watch_ingest(IngestStatsFile(settings.data_dir))
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        ssl_certfile=settings.tls_cert_file or None,
        ssl_keyfile=settings.tls_key_file or None,
    )
    try:
        asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    finally:
        container.engine.dispose()
    return 0
