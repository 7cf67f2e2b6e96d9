"""An API process's executor: serve is asked over a socket pair, each answer matched to its
request by number; no answer in time leaves the start undecided (the lease decides)."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from cloudrec import api_processes
from cloudrec.api_processes import ServeExecutor, answer_starts
from cloudrec.core.recording import StartUndecidedError


def test_serve_starts_the_worker_and_its_handle_comes_back():
    ours, theirs = socket.socketpair()
    started: list[tuple[str, int]] = []

    def start(task_id: str, attempt: int) -> str:
        started.append((task_id, attempt))
        return f"host:1:{task_id}:{attempt}"

    loop = asyncio.new_event_loop()
    serving = threading.Thread(
        target=loop.run_until_complete, args=(answer_starts(ours, start),), daemon=True
    )
    serving.start()
    executor = ServeExecutor(theirs)
    assert executor.start("-t1", 2) == "host:1:-t1:2"  # a task id may start with a dash
    assert executor.start("t2") == "host:1:t2:1"
    assert started == [("-t1", 2), ("t2", 1)]
    theirs.close()
    serving.join(5)
    assert not serving.is_alive()  # serve's side ends (and closes) when the API process goes
    loop.close()


def test_a_late_answer_is_skipped_and_no_answer_is_undecided(monkeypatch):
    monkeypatch.setattr(api_processes, "START_TIMEOUT_S", 0.3)
    ours, theirs = socket.socketpair()
    executor = ServeExecutor(theirs)
    with pytest.raises(StartUndecidedError):
        executor.start("t1")  # serve is slow: nothing came within the timeout
    assert ours.recv(100) == b"start 1 1 t1\n"
    ours.sendall(b"ok 1 host:1:t1:1\n")  # the late answer to the first request
    threading.Timer(0.05, lambda: ours.sendall(b"ok 2 host:1:t2:1\n")).start()
    assert executor.start("t2") == "host:1:t2:1"
    ours.sendall(b"error 3 RuntimeError\n")
    with pytest.raises(RuntimeError, match="did not start the worker"):
        executor.start("t3")
    ours.close()
    with pytest.raises(RuntimeError, match="could not be asked"):
        executor.start("t4")  # serve gone: nothing was asked, so nothing started
