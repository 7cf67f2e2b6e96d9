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
from tests.fakes import FakeExecutor


class Serving(FakeExecutor):
    """serve's executor: a worker fits while its units are at most ``free``."""

    free = 10
    asked: list[tuple[str, int, int]]

    def start(self, task_id: str, attempt: int = 1, units: int = 1) -> str:
        self.asked.append((task_id, attempt, units))
        return f"host:1:{task_id}:{attempt}"

    def room_for(self, units: int) -> str | None:
        if self.free < 0:
            raise ConnectionError("the cluster is unreachable")
        return None if units <= self.free else f"{units} units do not fit in {self.free} free"


def test_serve_starts_the_worker_and_its_handle_comes_back():
    ours, theirs = socket.socketpair()
    serve = Serving()
    serve.asked = []
    loop = asyncio.new_event_loop()
    serving = threading.Thread(
        target=loop.run_until_complete, args=(answer_starts(ours, serve),), daemon=True
    )
    serving.start()
    executor = ServeExecutor(theirs)
    assert executor.start("-t1", 2) == "host:1:-t1:2"  # a task id may start with a dash
    assert executor.start("t2", units=46) == "host:1:t2:1"
    assert serve.asked == [("-t1", 2, 1), ("t2", 1, 46)]
    # The room for a start is serve's executor's to say (a cluster counts its nodes' units).
    assert executor.room_for(10) is None
    assert executor.room_for(11) == "11 units do not fit in 10 free"
    serve.free = -1  # serve's executor cannot tell (its cluster unreachable): the start is tried
    assert executor.room_for(1) is None
    assert executor.start("t3") == "host:1:t3:1"  # and the channel still answers
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
    assert ours.recv(100) == b"start 1 1 1 t1\n"
    ours.sendall(b"ok 1 host:1:t1:1\n")  # the late answer to the first request
    threading.Timer(0.05, lambda: ours.sendall(b"ok 2 host:1:t2:1\n")).start()
    assert executor.start("t2") == "host:1:t2:1"
    ours.sendall(b"error 3 RuntimeError\n")
    with pytest.raises(RuntimeError, match="did not start the worker"):
        executor.start("t3")
    ours.close()
    with pytest.raises(RuntimeError, match="could not be asked"):
        executor.start("t4")  # serve gone: nothing was asked, so nothing started
